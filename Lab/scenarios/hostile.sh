#!/bin/sh
# A hostile guest: Lab/guest/mmio-attack.c in the guest writes random values to the registers of
# two of lguest's virtio devices (the first disk and the rng), builds rings of random
# descriptors pointing anywhere and kicks, for LAB_HOSTILE_SECONDS (60); then the guest checks
# that the second disk, which it left alone, still works, and powers off. lguest must live
# through it and end with 0. The seed is printed (LAB-HOSTILE seed=...); LAB_HOSTILE_SEED replays
# it. Tests/LabTests/HostileLabTests.swift reads the markers.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/hostile.cpio.gz
ATTACKED=$LAB_TMP/attacked.img
CONTROL=$LAB_TMP/control.img
dd if=/dev/zero of="$ATTACKED" bs=1048576 count=16 2>/dev/null
dd if=/dev/zero of="$CONTROL" bs=1048576 count=8 2>/dev/null
SEED=${LAB_HOSTILE_SEED:-0x$(cut -c1-8 /proc/sys/kernel/random/uuid)}
echo "LAB-HOSTILE seed=$SEED"

# 4 MiB at 96 MiB kept from the kernel (memmap=): the attack's rings and the buffers devices write.
lab_run hostile "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 2 --memory 256 \
    --disk "$ATTACKED" --disk "$CONTROL" --rng \
    --cmdline "console=ttyS0 quiet panic=0 iomem=relaxed memmap=4M\$0x6000000 lguest.seed=$SEED lguest.attack-seconds=${LAB_HOSTILE_SECONDS:-60}"

echo "LAB-HOSTILE control-image=$(head -c 1048576 "$CONTROL" | sha256sum | cut -d' ' -f1) expected=$(yes "control disk pattern" | head -c 1048576 | sha256sum | cut -d' ' -f1)"
