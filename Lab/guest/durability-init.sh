#!/bin/sh
# Guest (L3) /init for the no-lost-writes check. It writes 4 KiB blocks to /dev/vda, one at a
# time, each with O_DIRECT and then a flush (conv=fsync: the block layer sends virtio-blk's
# FLUSH, which lguest turns into fdatasync). Only after the flush has completed does it print
#   LGUEST-FLUSHED N
# for block N. It never stops: after the flushed blocks it keeps writing other blocks without
# flushing, so the host's SIGKILL lands while the disk is busy.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
load-modules
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done

# Block N's contents: its number, repeated; the host makes the same bytes to compare.
block() { yes "lguest durable block $1" | head -c 4096; }

n=1
while [ "$n" -le "${BLOCKS:-48}" ]; do
    block "$n" | dd of=/dev/vda bs=4096 seek="$n" count=1 oflag=direct conv=fsync 2>/dev/null &&
        echo "LGUEST-FLUSHED $n"
    n=$((n + 1))
done
echo "LGUEST-DURABILITY all-flushed"
while :; do
    head -c 65536 /dev/urandom | dd of=/dev/vda bs=65536 seek=64 count=1 2>/dev/null
done
