#!/bin/sh
# No lost writes: the guest (Lab/guest/durability-init.sh) writes and flushes blocks one by one
# and says which have been flushed; the VMM is killed with SIGKILL while the guest is still
# writing, half-way through its flushed blocks; then every block the guest saw flushed must be
# in the image file, byte for byte. Tests/LabTests reads the markers; keep them in step.
#
# What this shows: lguest keeps no write in a buffer of its own; a flushed write has reached
# the host kernel (and fdatasync has been asked for) before the guest hears it is done. What it
# cannot show: a SIGKILL leaves the host's page cache alive, so a host power cut is not tested.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/durability.cpio.gz
DISK=$LAB_TMP/durable.img
KILL_AFTER=24

dd if=/dev/zero of="$DISK" bs=1048576 count=8 2>/dev/null

echo "LAB-BEGIN durability uptime=$(lab_uptime)"
"$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 1 --memory 256 --disk "$DISK" \
    --cmdline "console=ttyS0 quiet panic=0" </dev/null >"$LAB_TMP/durability.out" 2>"$LAB_TMP/durability.err" &
pid=$!
waited=0
until [ "$(grep -c '^LGUEST-FLUSHED' "$LAB_TMP/durability.out" 2>/dev/null)" -ge "$KILL_AFTER" ]; do
    if [ "$waited" -ge 600 ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.2
    waited=$((waited + 1))
done
kill -KILL "$pid" 2>/dev/null
wait "$pid"
status=$?
echo "LAB-RESULT durability exit=$status"
sed 's/^/LAB-STDERR-LINE durability /' "$LAB_TMP/durability.err" | tail -n 5

# Every block the guest reported, checked in the image after the kill.
flushed=0 verified=0 missing=''
for n in $(tr -d '\r' <"$LAB_TMP/durability.out" | sed -n 's/^LGUEST-FLUSHED \([0-9]*\)$/\1/p'); do
    flushed=$((flushed + 1))
    want=$(yes "lguest durable block $n" | head -c 4096 | sha256sum | cut -d' ' -f1)
    have=$(dd if="$DISK" bs=4096 skip="$n" count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
    if [ "$want" = "$have" ]; then verified=$((verified + 1)); else missing="$missing $n"; fi
done
echo "LAB-DURABILITY flushed=$flushed verified=$verified missing=${missing:-none} killed=$([ "$status" -eq 137 ] && echo yes || echo no)"
echo "LAB-END durability seconds=0"
