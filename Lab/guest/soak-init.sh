#!/bin/sh
# Guest (L3) /init for the soak (Lab/scenarios/soak.sh): one of several VMs at once, each with
# its own disk, TAP and virtio-rng. For lguest.seconds= seconds it goes round: 256 KiB from
# /dev/urandom written to one of eight slots of its disk past the page cache and flushed, read
# back and compared; the lab host's blob fetched over its TAP and checked against the checksum
# the host published; 512 bytes read from /dev/hwrng (the virtio-rng device). Then it reports
#   LGUEST-SOAK-SLOT n=N slot=K md5=M       (what each slot of the disk should hold now)
#   LGUEST-SOAK n=N rounds=R block_errors=E net_errors=E rng_bytes=B rng=NAME
# and powers off. The host checks the slots in the image after lguest has gone.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
load-modules

n=0 seconds=180
for word in $(cat /proc/cmdline); do
    case $word in
    lguest.soak=*) n=${word#lguest.soak=} ;;
    lguest.seconds=*) seconds=${word#lguest.seconds=} ;;
    esac
done
now() { cut -d' ' -f1 /proc/uptime | cut -d. -f1; }
sum() { md5sum | cut -d' ' -f1; }
HOST=http://198.18.$n.1:8080
ip addr add "198.18.$n.2/24" dev eth0 && ip link set eth0 up
want=$(wget -q -O - "$HOST/blob.md5")
rng=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null || echo none)
echo "LGUEST-SOAK-START n=$n uptime=$(now) want=$want"

start=$(now) rounds=0 block_errors=0 net_errors=0 rng_bytes=0
while [ $(($(now) - start)) -lt "$seconds" ]; do
    slot=$((rounds % 8))
    head -c 262144 /dev/urandom >/tmp/block
    written=$(sum </tmp/block)
    dd if=/tmp/block of=/dev/vda bs=262144 seek="$slot" oflag=direct conv=fsync 2>/dev/null
    read=$(dd if=/dev/vda bs=262144 skip="$slot" count=1 iflag=direct 2>/dev/null | sum)
    if [ "$read" = "$written" ]; then echo "$written" >"/tmp/slot.$slot"; else block_errors=$((block_errors + 1)); echo "LGUEST-SOAK-MISMATCH n=$n round=$rounds slot=$slot"; fi
    got=$(wget -q -O - "$HOST/blob" | sum)
    [ -n "$want" ] && [ "$got" = "$want" ] || net_errors=$((net_errors + 1))
    rng_bytes=$((rng_bytes + $(head -c 512 /dev/hwrng | wc -c)))
    rounds=$((rounds + 1))
done
for slot in 0 1 2 3 4 5 6 7; do
    echo "LGUEST-SOAK-SLOT n=$n slot=$slot md5=$(cat /tmp/slot.$slot 2>/dev/null || echo none)"
done
echo "LGUEST-SOAK n=$n rounds=$rounds block_errors=$block_errors net_errors=$net_errors rng_bytes=$rng_bytes rng=$rng"
poweroff -f
