#!/bin/sh
# Boot checks: the guest kernel boots under the VMM in both command-line forms, from the kernel
# cache and as a bzImage, and the VMM
# ends as the guest asks (poweroff; reboots are reboot.sh's) or as it dies (panic). The guest's /init is
# Lab/guest/check-init.sh, built into $LAB_FILES/check.cpio.gz by `lab.sh run --guest-init`.
# Tests/LabTests reads the markers this prints; keep them in step.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/check.cpio.gz

# Through the kernel cache: this first boot expands the bzImage into it (--trace-boot says so).
lab_run modern "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 2 --memory 256 --trace-boot \
    --kernel-cache "$LAB_TMP/kernels" --cmdline "console=ttyS0 quiet panic=0 lguest.action=poweroff lguest.tag=modern"

# The bzImage as it is, expanding itself in the guest (as every other lab boot does).
lab_run bzimage "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 1 --memory 256 --trace-boot \
    --kernel-cache off --cmdline "console=ttyS0 quiet panic=0 lguest.action=poweroff lguest.tag=bzimage"

# lguest's classic form: one vCPU by default.
lab_run classic "$LGUEST" --initrd="$INITRD" 256 "$GUEST_KERNEL" \
    console=ttyS0 quiet lguest.action=poweroff lguest.tag=classic

# panic=0: the guest waits forever after its panic; the VMM must notice through pvpanic.
lab_run panic "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 1 --memory 256 \
    --cmdline "console=ttyS0 quiet lguest.action=panic lguest.tag=panic panic=0"
