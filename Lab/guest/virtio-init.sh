#!/bin/sh
# Guest (L3) /init for the virtio checks. The guest drives lguest's devices with its own stock
# drivers and reports what it saw, one LGUEST-VIRTIO line per check:
#   blk-pattern / blk-readback  sha256 of the 1 MiB pattern written to /dev/vda, and of what
#                               reading it back (after a sync and a cache drop) returned
#   ro=0|1 for vda and vdb      the kernel's read-only flag for each disk
#   ro-write=refused|written    whether a write to the read-only /dev/vdb went through
#   rng=<name> hwrng=<hex>      the active hwrng and 32 bytes read from /dev/hwrng
# and writes one line to /dev/hvc0 (virtio-console), which only the console can show.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
load-modules
# Let udev-less device nodes appear.
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vdb ] && [ -c /dev/hvc0 ] && break; sleep 0.2; done

# Only virtio-console carries this line: the serial console never sees the text. It goes first,
# while nothing is waiting to drain through the UART: both consoles print to lguest's standard
# output, and a serial line still being transmitted would be cut in two by it. (A write to hvc0
# returns only once lguest has used the buffer, so the lines after it cannot overtake it.)
echo "hvc0 says $(echo hello | tr a-z A-Z)" >/dev/hvc0

pattern() { yes "lguest block pattern 0123456789abcdef" | head -c 1048576; }

pattern >/tmp/pattern
echo "LGUEST-VIRTIO blk-pattern=$(sha256sum </tmp/pattern | cut -d' ' -f1)"
dd if=/tmp/pattern of=/dev/vda bs=65536 conv=fsync 2>/dev/null && sync
echo 3 >/proc/sys/vm/drop_caches
echo "LGUEST-VIRTIO blk-readback=$(dd if=/dev/vda bs=65536 count=16 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "LGUEST-VIRTIO vda-ro=$(cat /sys/block/vda/ro) vdb-ro=$(cat /sys/block/vdb/ro)"
if dd if=/tmp/pattern of=/dev/vdb bs=4096 count=1 conv=fsync 2>/dev/null; then
    echo "LGUEST-VIRTIO ro-write=written"
else
    echo "LGUEST-VIRTIO ro-write=refused"
fi

# The command line must be the user's (no virtio_mmio.device= added), and nothing on it unknown.
echo "LGUEST-VIRTIO unknown_parameters=$(dmesg | grep -c 'unknown parameter')"
echo "LGUEST-VIRTIO-CMDLINE $(cat /proc/cmdline)"
echo "LGUEST-VIRTIO rng=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null) hwrng=$(head -c 32 /dev/hwrng | od -An -tx1 | tr -d ' \n')"

sync
poweroff -f
sleep 2
