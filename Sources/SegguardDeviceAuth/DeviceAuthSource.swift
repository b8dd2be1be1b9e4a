// The one interface segguardd reads 802.1X state through, whichever way wpa_supplicant is run.

import SegguardPolicy

/// A source of per-interface 802.1X state: wpa_supplicant's control sockets
/// (`WPAControlSource`) or its D-Bus API (`WPADBusSource`, where NetworkManager runs it).
///
/// `start` runs the source on a thread of its own and calls `onChange` with the full map
/// (interface name → state) after every change, event-driven; an interface whose supplicant
/// goes away is removed from the map (no state is "not authenticated").
public protocol DeviceAuthSource: AnyObject, Sendable {
    func start(onChange: @escaping @Sendable ([String: DeviceAuthState]) -> Void)
    func stop()
}

extension WPAControlSource: DeviceAuthSource {}
