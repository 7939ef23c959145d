#!/bin/sh
# Virtio checks: the stock kernel drives lguest's block, rng and console devices with its own
# drivers (Lab/guest/virtio-init.sh reports from inside); afterwards the host side checks the
# disk images themselves. Tests/LabTests reads the markers; keep them in step.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/virtio.cpio.gz
DISK=$LAB_TMP/disk.img
READONLY=$LAB_TMP/readonly.img

dd if=/dev/zero of="$DISK" bs=1048576 count=8 2>/dev/null
yes "read-only disk, never written" | head -c 4194304 >"$READONLY"
readonly_before=$(sha256sum <"$READONLY" | cut -d' ' -f1)
# The same pattern the guest writes, made independently here.
echo "LAB-PATTERN sha=$(yes "lguest block pattern 0123456789abcdef" | head -c 1048576 | sha256sum | cut -d' ' -f1)"

lab_run virtio "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 2 --memory 256 \
    --disk "$DISK" --disk "$READONLY,readonly" --rng --console virtio \
    --cmdline "console=ttyS0 quiet panic=0"

echo "LAB-DISK image=$(head -c 1048576 "$DISK" | sha256sum | cut -d' ' -f1) size=$(wc -c <"$DISK")"
echo "LAB-DISK readonly-unchanged=$([ "$(sha256sum <"$READONLY" | cut -d' ' -f1)" = "$readonly_before" ] && echo yes || echo no)"
