#!/bin/sh
# Guest (L3) /init for the rate-limiter scenario (Lab/scenarios/throttle.sh). Twice, it reads
# its disk (vda) past the page cache and downloads a file from the lab host over eth0 (the
# host-to-guest direction, which the interface's rx_rate_limiter holds), and says how long each
# took by its own clock:
#   LGUEST-THROTTLE phase=N block_bytes=B block_seconds=S block_requests=R net_bytes=B net_seconds=S
# Between the two phases it waits for the host to raise the limits through the API: the host
# makes /raised appear on its web server once both PATCHes answered. Then it powers off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
load-modules

now() { cut -d' ' -f1 /proc/uptime; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
HOST=http://192.0.2.1:8080
ip addr add 192.0.2.2/24 dev eth0 && ip link set eth0 up
ping -c 1 -W 5 192.0.2.1 >/dev/null 2>&1 || echo "LGUEST-THROTTLE-ERROR the lab host does not answer"

# measure PHASE SKIP-MIB: 32 MiB of vda after SKIP-MIB, then the host's 8 MB file. Each phase
# reads its own part of the disk, so nothing comes from a cache. An untimed read of 4 MiB first
# empties the disk's bucket (at most 4 MiB, and full when the limit is set), so that the timed
# read gets the rate and not the bucket's first fill.
measure() {
    dd if=/dev/vda of=/dev/null bs=1048576 count=4 skip="$2" iflag=direct 2>/dev/null
    reads0=$(awk '{ print $1 }' /sys/block/vda/stat)
    t0=$(now)
    # Straight to /dev/null: through a pipe, copying 32 MiB twice costs this emulated CPU more
    # than the disk does. Busybox's dd says only "N+P records in": N whole MiB, P partial.
    block_bytes=$(dd if=/dev/vda of=/dev/null bs=1048576 count=32 skip=$(($2 + 4)) iflag=direct 2>&1 |
        sed -n 's/^\([0-9]*\)+0 records in$/\1/p' | awk '{ print $1 * 1048576 }')
    t1=$(now)
    block_requests=$(($(awk '{ print $1 }' /sys/block/vda/stat) - reads0))
    # Into a file (the initramfs is in RAM), not a pipe, for the same reason.
    wget -q -O /big "$HOST/big"
    t2=$(now)
    net_bytes=$(wc -c </big)
    rm -f /big
    echo "LGUEST-THROTTLE phase=$1 block_bytes=${block_bytes:-0} block_seconds=$(seconds "$t0" "$t1") block_requests=$block_requests net_bytes=$net_bytes net_seconds=$(seconds "$t1" "$t2")"
}

measure 1 0
echo "LGUEST-THROTTLE-WAITING uptime=$(now)"
n=0
until wget -q -O /dev/null "$HOST/raised" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 240 ] || { echo "LGUEST-THROTTLE-ERROR the limits were never raised"; poweroff -f; }
    sleep 0.5
done
measure 2 36
poweroff -f
