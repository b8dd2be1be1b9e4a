// The agent's multi-call binary: segguardd, segguardctl and segguard-launch are one program,
// chosen by the name it is run as (the .deb installs segguardd and links the other two names to
// it), so the Swift runtime, Foundation and the libraries are carried once. In a development
// build segguardctl and segguard-launch are also executables of their own (same code).

import SegguarddCLI
import SegguardLaunchCLI
import SegguardctlCLI

#if canImport(Glibc)
import Glibc
#endif

/// The personality: the last component of argv[0].
let name = CommandLine.arguments.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "segguardd"
switch name {
case "segguardctl": segguardctlMain()
case "segguard-launch": segguardLaunchMain()
case "segguardd": segguarddMain()
default:
    let message = "\(name): this program runs as segguardd, segguardctl or segguard-launch (the name it is started by); '\(name)' is none of them\n"
    _ = message.withCString { write(2, $0, strlen($0)) }
    exit(2)
}
