// segguardctl as an executable of its own (development builds, tests); the .deb installs it as
// a name of the multi-call binary (Sources/segguardd/main.swift). The code is SegguardctlCLI.

import SegguardctlCLI

segguardctlMain()
