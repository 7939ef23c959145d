import Devices
import HostSystem

/// A listener bound by `PUT /vsock`, kept in `Resources` until the device takes it. Two are
/// the same resource when they listen at the same path.
struct BoundListener: Equatable, Sendable {
    let listener: UnixListener
    static func == (a: BoundListener, b: BoundListener) -> Bool { a.listener.path == b.listener.path }
}

extension Resources {
    /// `PUT /vsock`: binds and listens on `uds_path` at once, as Firecracker does, so that a path
    /// in use is refused here. A second PUT replaces the first, whose socket file goes away.
    public mutating func setVsock(_ settings: VsockSettings) throws(ApiFailure) {
        let configuration = VsockConfiguration(guestCID: UInt64(settings.guest_cid), udsPath: settings.uds_path)
        do throws(VsockError) { try configuration.validate() } catch { throw .fault("Cannot create the vsock device: \(error)") }
        let old = vsockListener
        if old?.listener.path == settings.uds_path {
            old?.listener.removeSocketFile()
            vsockListener = nil
        }
        let listener: UnixListener
        do throws(VsockError) { listener = try configuration.bind() } catch {
            throw .fault("Cannot create the vsock device: \(error)")
        }
        if let old, old.listener.path != settings.uds_path { old.listener.removeSocketFile() }
        vsock = settings
        vsockListener = BoundListener(listener: listener)
    }
}
