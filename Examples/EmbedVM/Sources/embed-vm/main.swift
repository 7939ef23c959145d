import LguestKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Boots the kernel named on the command line with 128 MiB and one vCPU, prints what its
// serial console says with a prefix, and exits 0 if the guest powered off or rebooted, 1 if
// it failed. Ctrl-C stops it (the VM is stopped cleanly, its threads joined).

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    print("usage: embed-vm KERNEL [KERNEL COMMAND LINE]")
    exit(64)
}
var configuration = VMConfiguration(kernelPath: arguments[1],
                                    commandLine: arguments.count > 2 ? arguments[2] : "console=ttyS0 reboot=k panic=1",
                                    memoryMiB: 128, cpus: 1)
// The library does nothing to the process unless asked: no seccomp for this small program.
configuration.sandbox = false

// Called on a vCPU thread for each chunk the guest prints (a byte at a time, from a UART):
// whole lines are printed with a prefix.
let line = Mutex<[UInt8]>([])
let vm = VirtualMachine(configuration: configuration, console: ConsoleConnection(output: ConsoleHandler { bytes in
    line.withLock { pending in
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                print("guest| " + String(decoding: pending, as: UTF8.self))
                pending.removeAll()
            } else {
                pending.append(byte)
            }
        }
    }
}))
vm.observeState { state in print("embed-vm: the VM is now \(state)") }

do {
    try vm.start()
} catch {
    print("embed-vm: \(error)")
    exit(2)
}
let reason = await vm.exitStatus
vm.waitUntilStopped()
print("embed-vm: the guest stopped: \(reason)")
exit(reason.exitCode)
