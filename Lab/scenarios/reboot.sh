#!/bin/sh
# Reboot checks: the guest restarts by every method Linux has on x86, and each one ends the VMM
# with status 0. The guest's /init is Lab/guest/check-init.sh with lguest.action=reboot
# (busybox `reboot -f`, the reboot(2) call `systemctl reboot` ends in). Tests/LabTests reads
# the markers; the kernel's own "reboot: Restarting system" line shows the guest asked.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/check.cpio.gz

reboot_run() {
    _method=$1
    _cpus=$2
    _option=
    [ "$_method" = default ] || _option=" reboot=$_method"
    lab_run "reboot-$_method" "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" \
        --cpus "$_cpus" --memory 256 \
        --cmdline "console=ttyS0 quiet panic=0 lguest.action=reboot lguest.tag=reboot-$_method$_option"
}

# No reboot=: what every user gets. On hardware-reduced ACPI without EFI, Linux ends up at the
# BIOS reset vector (Firmware/ResetVector.swift). Two CPUs, so the others must be stopped first.
reboot_run default 2
reboot_run k 1   # the keyboard controller's reset line
reboot_run a 1   # the FADT's reset register
reboot_run t 1   # a triple fault, after \_TTS(5) announced the shutdown
reboot_run e 1   # EFI, which is absent: the reset vector, as the default
reboot_run b 1   # the BIOS reset vector, directly
