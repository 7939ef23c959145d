#!/bin/sh
# `lab.sh shell`: boots the guest with Lab/guest/shell-init.sh in the foreground, the terminal
# being its console. SHELL_VMM=qemu boots it under QEMU microvm instead of the VMM.
INITRD=$LAB_FILES/shell.cpio.gz
MEMORY=${SHELL_MEMORY:-256}
CPUS=${SHELL_CPUS:-2}
CMDLINE="console=ttyS0 quiet"

if [ "${SHELL_VMM:-lguest}" = qemu ]; then
    QEMU=/lab/bin/qemu-system-x86_64
    [ -x "$QEMU" ] || QEMU=$(command -v qemu-system-x86_64)
    # signal=off: Ctrl-C goes to the guest, not to QEMU.
    exec "$QEMU" -M microvm,acpi=on -enable-kvm -cpu host -m "$MEMORY" -smp "$CPUS" \
        -nodefaults -no-user-config -display none -no-reboot \
        -chardev stdio,id=console,signal=off -serial chardev:console \
        -kernel "$GUEST_KERNEL" -initrd "$INITRD" -append "$CMDLINE"
fi
if [ "${SHELL_SYSTEM:-busybox}" = debian ]; then
    # The Debian system: its own kernel and initrd, its root the lab host's last disk.
    [ "$MEMORY" -ge 512 ] || MEMORY=512
    exec "$LGUEST" run --kernel "$LAB_FILES/debian-vmlinuz" --initrd "$LAB_FILES/debian-initrd.img" \
        --disk "$(ls /dev/vd? | tail -n 1)" --cmdline "root=/dev/vda rw console=ttyS0" \
        --memory "$MEMORY" --cpus "$CPUS"
fi
exec "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE" \
    --memory "$MEMORY" --cpus "$CPUS"
