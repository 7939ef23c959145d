import Devices

/// Everything needed to start a VM, as a value. The command-line tool builds one; the Launcher
/// turns it into a running machine. Nothing here has been checked against the host yet: that
/// happens in `Launcher.prepare`, which reports the first problem as a `LaunchError`.
public struct VMConfiguration: Sendable, Equatable {
    public var kernelPath: String
    public var initrdPath: String?
    public var commandLine: String
    public var memoryMiB: UInt64
    public var cpus: Int
    public var console: ConsoleKind
    /// Virtio block devices, in order: the first is the guest's `vda`.
    public var disks: [BlockConfiguration]
    /// Virtio network devices on TAP interfaces.
    public var networks: [NetConfiguration]
    /// A virtio entropy device.
    public var rng: Bool
    /// Host directories shared with the guest, one virtio-fs device each
    /// (`mount -t virtiofs TAG /mnt`).
    public var shares: [FsShareConfiguration] = []
    /// A virtio-vsock device: the guest's CID and the host side's Unix socket.
    public var vsock: VsockConfiguration?
    /// A virtio-balloon device: the memory the host wants back from the guest, and its options.
    public var balloon: BalloonConfiguration?
    /// Print a line on standard error at each step of the boot (configuration read, VM built,
    /// first KVM_RUN), timed from the process's start. Boot-timer marks are printed either way.
    public var traceBoot: Bool = false
    /// Also describe the virtio devices on the kernel command line (`virtio_mmio.device=`), for
    /// kernels built with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` but without ACPI. Off by default:
    /// the ACPI tables describe them, and a kernel without that option rejects the parameter.
    public var virtioOnCommandLine: Bool = false
    /// Once set up, run every thread under its seccomp filter, without capabilities
    /// (docs/Sandbox.md). Off only for debugging.
    public var sandbox: Bool
    /// Where uncompressed kernels are kept (`KernelCache`), if anywhere.
    public var kernelCache: KernelCacheChoice = .user

    public enum KernelCacheChoice: Sendable, Equatable {
        /// Boot every bzImage as it is: the guest expands it.
        case off
        /// `$XDG_CACHE_HOME/lguest/kernels` (or `~/.cache/lguest/kernels`); off with neither.
        case user
        /// The kernel's own directory.
        case besideKernel
        /// This directory.
        case directory(String)
    }

    public enum ConsoleKind: String, Sendable, Equatable, CaseIterable {
        /// The 16550 UART on COM1 (`console=ttyS0`).
        case serial
        /// virtio-console (`console=hvc0`).
        case virtio
    }

    public init(kernelPath: String, initrdPath: String? = nil, commandLine: String = "",
                memoryMiB: UInt64 = 256, cpus: Int = 1, console: ConsoleKind = .serial,
                disks: [BlockConfiguration] = [], networks: [NetConfiguration] = [], rng: Bool = false,
                sandbox: Bool = true) {
        self.kernelPath = kernelPath
        self.initrdPath = initrdPath
        self.commandLine = commandLine
        self.memoryMiB = memoryMiB
        self.cpus = cpus
        self.console = console
        self.disks = disks
        self.networks = networks
        self.rng = rng
        self.sandbox = sandbox
    }

    /// Limits the Launcher enforces.
    public static let minimumMemoryMiB: UInt64 = 32
    public static let maximumMemoryMiB: UInt64 = 1 << 20 // 1 TiB
    public static let maximumCPUs = 254 // xAPIC ids 0...253; the IOAPIC takes the next

    /// The checks that need nothing but the value itself: memory and vCPU counts in range, no
    /// NUL in the command line. `Machine.init` makes them first; the command-line tool's
    /// argument checks (and their fuzz harness) reach them without starting anything.
    public func validate() throws(LaunchError) {
        guard (VMConfiguration.minimumMemoryMiB...VMConfiguration.maximumMemoryMiB).contains(memoryMiB) else {
            throw .badOption("memory of \(memoryMiB) MiB is out of range: give \(VMConfiguration.minimumMemoryMiB) to \(VMConfiguration.maximumMemoryMiB) MiB")
        }
        guard (1...VMConfiguration.maximumCPUs).contains(cpus) else {
            throw .badOption("\(cpus) vCPUs is out of range: give 1 to \(VMConfiguration.maximumCPUs)")
        }
        guard !commandLine.utf8.contains(0) else {
            throw .badOption("the kernel command line contains a NUL byte")
        }
        var tags = Set<String>()
        for share in shares {
            do throws(FsError) { try share.validate() } catch { throw .share(error) }
            guard tags.insert(share.tag).inserted else { throw .share(.duplicateTag(share.tag)) }
        }
        do throws(VsockError) { try vsock?.validate() } catch { throw .vsock(error) }
        do throws(BalloonError) { try balloon?.validate(memoryMiB: memoryMiB) } catch { throw .balloon(error) }
    }
}
