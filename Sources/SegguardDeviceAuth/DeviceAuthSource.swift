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
    /// Asks the supplicant on `interface` for a fresh 802.1X authentication (EAPOL-Start), as
    /// the agent does when the interface's carrier comes back: a success from before the cable
    /// moved no longer counts, so without a new one the port would stay unauthorized. Returns
    /// at once; the outcome arrives through `onChange`. No supplicant on it: nothing happens.
    func reauthenticate(interface: String)
}

extension WPAControlSource: DeviceAuthSource {}
