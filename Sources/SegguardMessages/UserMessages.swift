// The words a thin-client user reads: one title and one body per UserNotice, in Japanese and
// English, in plain terms (what happened, what to do), never interface names or rule paths;
// the help desk from the policy on the last line. The technical reason stays with
// `segguardctl why-denied` and the logs.

import SegguardPolicy

/// The language of a user's messages.
public enum UserLanguage: String, Sendable, CaseIterable {
    case ja, en

    /// From the user's locale: LC_ALL, else LC_MESSAGES, else LANG ("ja_JP.UTF-8" → ja);
    /// English for anything else, "C" and "POSIX" included.
    public static func from(environment: [String: String]) -> UserLanguage {
        for key in ["LC_ALL", "LC_MESSAGES", "LANG"] {
            guard let value = environment[key], !value.isEmpty else { continue }
            return value.lowercased().hasPrefix("ja") ? .ja : .en
        }
        return .en
    }
}

/// A message as shown: a notification's summary and body.
public struct UserMessage: Sendable, Equatable {
    public var title: String
    public var body: String
}

/// The catalogue.
public enum UserMessages {
    /// Title and body of each notice; `{profile}`, `{seconds}` and `{tool}` are filled in.
    public static let catalogue: [UserLanguage: [UserNotice: (title: String, body: String)]] = [
        .ja: [
            .launchOffSegment: ("仮想デスクトップを開始できません",
                                "この端末は、いま庁舎のネットワークにつながっていません。庁舎内の無線LANまたは有線LANに接続してから、もう一度開始してください。"),
            .launchSecondUplink: ("仮想デスクトップを開始できません",
                                  "庁舎のネットワーク以外の接続（スマートフォンのテザリング、モバイルルーターなど）が同時につながっています。その接続を切ってから、もう一度開始してください。"),
            .launchNotAllowed: ("仮想デスクトップを開始できません",
                                "このアカウントでは「{profile}」を開始できません。必要な場合は担当にご相談ください。"),
            .launchBadProfile: ("仮想デスクトップを開始できません",
                                "「{profile}」の起動設定に誤りがあります。担当にご連絡ください。"),
            .launchTooManySessions: ("仮想デスクトップを開始できません",
                                     "すでに開いている仮想デスクトップがあります。そちらをお使いください。"),
            .launchUnavailable: ("仮想デスクトップを開始できません",
                                 "端末の安全確認ができないため、開始できませんでした。端末を再起動しても直らない場合は、担当にご連絡ください。"),
            .sessionEndingSoon: ("庁舎のネットワークから切断されました",
                                 "{seconds}秒以内に庁舎の無線LANまたは有線LANに戻らない場合、仮想デスクトップは終了します。作業中の内容を保存してください。"),
            .sessionKept: ("庁舎のネットワークに戻りました",
                           "仮想デスクトップはそのまま使えます。"),
            .sessionEnded: ("仮想デスクトップを終了しました",
                            "庁舎のネットワークに戻らなかったため、仮想デスクトップを終了しました。庁舎のネットワークに接続してから、もう一度開始してください。"),
            .toolBlocked: ("このプログラムは使えません",
                           "仮想デスクトップの画面を守るため、利用中はこのプログラム（{tool}）を使えません。スクリーンショットなどで画面を取り込むことはできません。"),
        ],
        .en: [
            .launchOffSegment: ("The virtual desktop was not started",
                                "This computer is not connected to the office network. Connect to the office Wi-Fi or a LAN cable at your desk, then start it again."),
            .launchSecondUplink: ("The virtual desktop was not started",
                                  "Another connection (phone tethering, a mobile router) is up besides the office network. Disconnect it, then start again."),
            .launchNotAllowed: ("The virtual desktop was not started",
                                "Your account may not start \"{profile}\". Ask your administrator if you need it."),
            .launchBadProfile: ("The virtual desktop was not started",
                                "The settings for \"{profile}\" are not right. Please tell your administrator."),
            .launchTooManySessions: ("The virtual desktop was not started",
                                     "A virtual desktop is already open. Please use that one."),
            .launchUnavailable: ("The virtual desktop was not started",
                                 "This computer's safety check is not available. If restarting the computer does not help, please tell your administrator."),
            .sessionEndingSoon: ("Disconnected from the office network",
                                 "Unless the office Wi-Fi or LAN is back within {seconds} seconds, the virtual desktop will close. Save your work now."),
            .sessionKept: ("Back on the office network",
                           "Your virtual desktop stays open; carry on."),
            .sessionEnded: ("The virtual desktop was closed",
                            "The office network did not come back, so the virtual desktop was closed. Connect to the office network and start it again."),
            .toolBlocked: ("This program cannot be used",
                           "To protect the virtual desktop's screen, this program ({tool}) cannot be used while it is open. Its screen cannot be captured."),
        ],
    ]

    /// The message for `notice` in `language`, placeholders filled from `values`, the help
    /// desk (or a general line) last.
    public static func render(_ notice: UserNotice, language: UserLanguage, values: [String: String] = [:], helpdesk: HelpDesk?) -> UserMessage {
        let entry = catalogue[language]?[notice] ?? catalogue[.en]![notice]!
        var body = entry.body
        for (key, value) in values { body = body.replacingAll("{\(key)}", with: value) }
        switch (language, helpdesk) {
        case (.ja, let h?): body += "\nお問い合わせ: \(h.name)（\(h.contact)）"
        case (.ja, nil): body += "\nお困りの場合は、情報システムの担当にお問い合わせください。"
        case (.en, let h?): body += "\nHelp: \(h.name) (\(h.contact))"
        case (.en, nil): body += "\nIf you need help, contact your IT help desk."
        }
        return UserMessage(title: entry.title, body: body)
    }
}

extension String {
    /// Every occurrence of `target` replaced (no Foundation).
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            out += rest[..<range.lowerBound]
            out += replacement
            rest = rest[range.upperBound...]
        }
        return out + rest
    }
}
