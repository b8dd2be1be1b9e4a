// The user's messages: every notice worded in every language (an untranslated notice fails
// here), no placeholder left unfilled, the help desk under each, the locale chosen as a
// desktop session sets it.

import SegguardMessages
import SegguardPolicy
import Testing

@Suite("User messages")
struct UserMessagesTests {
    @Test("every notice has a title and a body in every language; placeholders are only the known ones")
    func complete() {
        for language in UserLanguage.allCases {
            for notice in UserNotice.allCases {
                let entry = UserMessages.catalogue[language]?[notice]
                #expect(entry != nil, "\(notice.rawValue) has no \(language.rawValue) text")
                #expect(!(entry?.title.isEmpty ?? true) && !(entry?.body.isEmpty ?? true))
                let rendered = UserMessages.render(notice, language: language, values: ["profile": "mynumber", "seconds": "60", "tool": "scrot"], helpdesk: nil)
                #expect(!rendered.body.contains("{") && !rendered.body.contains("}"), "\(notice.rawValue)/\(language.rawValue): \(rendered.body)")
            }
        }
    }

    @Test("Japanese text is Japanese and says what to do, in plain words; the help desk line is last")
    func japanese() {
        let h = HelpDesk(name: "情報政策課 ヘルプデスク", contact: "内線 2345")
        let off = UserMessages.render(.launchOffSegment, language: .ja, helpdesk: h)
        #expect(off.title == "仮想デスクトップを開始できません")
        #expect(off.body.contains("庁舎内の無線LANまたは有線LANに接続してから"))
        #expect(off.body.hasSuffix("\nお問い合わせ: 情報政策課 ヘルプデスク（内線 2345）"))
        let grace = UserMessages.render(.sessionEndingSoon, language: .ja, values: ["seconds": "90"], helpdesk: h)
        #expect(grace.body.hasPrefix("90秒以内に"))
        // No interface names, rule paths or English in the Japanese words.
        for notice in UserNotice.allCases {
            let body = UserMessages.catalogue[.ja]![notice]!.body
            #expect(!body.contains("eth") && !body.contains("wlan") && !body.contains("uplinks") && !body.contains("segment"), "\(notice.rawValue): \(body)")
        }
        #expect(UserMessages.render(.toolBlocked, language: .en, values: ["tool": "scrot"], helpdesk: nil).body
            == "To protect the virtual desktop's screen, this program (scrot) cannot be used while it is open. Its screen cannot be captured.\nIf you need help, contact your IT help desk.")
    }

    @Test("the language follows LC_ALL, then LC_MESSAGES, then LANG; C and anything not Japanese is English")
    func language() {
        #expect(UserLanguage.from(environment: ["LANG": "ja_JP.UTF-8"]) == .ja)
        #expect(UserLanguage.from(environment: ["LANG": "ja_JP.UTF-8", "LC_ALL": "C"]) == .en)
        #expect(UserLanguage.from(environment: ["LANG": "C", "LC_MESSAGES": "ja_JP.UTF-8"]) == .ja)
        #expect(UserLanguage.from(environment: ["LANG": "en_US.UTF-8"]) == .en)
        #expect(UserLanguage.from(environment: [:]) == .en)
    }

    @Test("helpdesk: in the policy is read, and refused when it is not one short line")
    func helpdeskPolicy() throws {
        let base = "schema_version: 2\nname: t\nsites: [{name: hq, wired: [{interfaces: [eth0], identity: interface-only}]}]\nenforcement: {network_binding: off}\n"
        let p = try PolicyLoader.load(text: base + "helpdesk: {name: \"情報政策課 ヘルプデスク\", contact: \"内線 2345\"}\n", file: "p.yaml")
        #expect(p.helpdesk == HelpDesk(name: "情報政策課 ヘルプデスク", contact: "内線 2345"))
        #expect(throws: PolicyLoadError.self) { try PolicyLoader.load(text: base + "helpdesk: {name: x}\n", file: "p.yaml") }
        #expect(throws: PolicyLoadError.self) { try PolicyLoader.load(text: base + "helpdesk: {name: x, contact: \"\", phone: 1}\n", file: "p.yaml") }
        // Not one line, a right-to-left override, markup a notification server would read: refused.
        for bad in ["\"a\\u2028b\"", "\"a\\u202Eb\"", "\"<b>x</b>\"", "\"a & b\""] {
            #expect(throws: PolicyLoadError.self, "\(bad)") { try PolicyLoader.load(text: base + "helpdesk: {name: \(bad), contact: \"内線 1\"}\n", file: "p.yaml") }
        }
    }
}
