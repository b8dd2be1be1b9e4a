// sd_notify messages and journal fields, without systemd.

import Logging
import SegguardService
import Testing

@Suite("systemd integration")
struct ServiceTests {
    @Test("notify datagrams: one assignment per line; a status never spans lines")
    func messages() {
        #expect(ServiceNotifier.message(["READY=1", "STATUS=authorized-wired via eth0"]) == "READY=1\nSTATUS=authorized-wired via eth0")
        #expect(ServiceNotifier.statusAssignment("unauthorized:\nREADY=1") == "STATUS=unauthorized: READY=1", "a newline must not smuggle an assignment")
        #expect(ServiceNotifier.statusAssignment(String(repeating: "x", count: 1000)).count == "STATUS=".count + 400)
    }

    @Test("journal field names: upper case, A-Z0-9_ only, never a leading underscore or digit", arguments: [
        ("decision", "DECISION"), ("event_id", "EVENT_ID"), ("latency_ms", "LATENCY_MS"), ("_cursor", "SEGGUARD__CURSOR"),
        ("9lives", "SEGGUARD_9LIVES"), ("policy-hash", "POLICY_HASH"), ("über", "SEGGUARD__BER"),
    ])
    func fieldNames(key: String, field: String) {
        #expect(JournalLogHandlerFieldName.of(key) == field)
    }

    @Test("an entry carries MESSAGE, PRIORITY, identifier and one field per metadata key, sorted")
    func fields() {
        let f = JournalLogHandlerFieldName.fields(level: .warning, message: "segment decision changed",
                                                  metadata: ["reason": "eth0 has no carrier", "decision": "unauthorized", "interfaces": ""])
        #expect(f == [
            "MESSAGE=segment decision changed", "PRIORITY=4", "SYSLOG_IDENTIFIER=segguardd", "SEGGUARD_LOGGER=segguardd", "SEGGUARD_SOURCE=test",
            "DECISION=unauthorized", "INTERFACES=", "REASON=eth0 has no carrier",
        ])
    }
}
