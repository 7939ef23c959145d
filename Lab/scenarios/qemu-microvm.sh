#!/bin/sh
# The guest of the boot checks under QEMU's microvm machine, for comparison with the VMM:
# it needs no VMM of ours, so it also proves the lab itself. Run it with `lab.sh run --with-qemu
# --guest-init Lab/guest/check-init.sh` (or `lab.sh direct`). Emulated time in the lab: compare
# ratios between VMMs run in the same lab, not absolute numbers.
# shellcheck source=lib.sh
. "$LAB_LIB"
QEMU=$(lab_qemu) || { echo "LAB-ERROR no qemu-system-x86_64"; exit 1; }
INITRD=$LAB_FILES/check.cpio.gz

# ACPI on: the Debian kernel needs a MADT to see more than one CPU (it has no MP table
# parser), and finds pvpanic through ACPI. -nodefaults: no NIC and no option ROMs;
# -serial stdio: its console is our stdout.
lab_run qemu-microvm "$QEMU" -M microvm,acpi=on,pit=on,pic=on,rtc=on -enable-kvm -cpu host \
    -m 256 -smp 2 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$GUEST_KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 quiet panic=0 lguest.action=poweroff lguest.tag=qemu-microvm"
