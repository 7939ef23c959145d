#!/bin/sh
# Guest (L3) /init for the API scenario (Lab/scenarios/api.sh): the VM was configured entirely
# through Firecracker's API. It reports what it was given,
#   LGUEST-API cpus=N memtotal_kb=N vda_sectors=N vda_ro=0|1 mac=MAC rng=NAME net=ok|fail cmdline=...
# then prints a tick with its uptime five times a second, and powers off when Ctrl-Alt-Delete
# reaches it: the kernel hands that to init as SIGINT once /proc/sys/kernel/ctrl-alt-del is 0.
# Each tick also says what the data disk (vdb) holds, which the host swaps on the running VM.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
load-modules

echo 0 >/proc/sys/kernel/ctrl-alt-del
trap 'echo "LGUEST-API-CAD uptime=$(cut -d" " -f1 /proc/uptime)"; poweroff -f' INT

cpus=$(grep -c '^processor' /proc/cpuinfo)
memtotal_kb=$(sed -n 's/^MemTotal: *\([0-9]*\) kB$/\1/p' /proc/meminfo)
vda_sectors=$(cat /sys/block/vda/size 2>/dev/null || echo none)
vda_ro=$(cat /sys/block/vda/ro 2>/dev/null || echo none)
mac=$(cat /sys/class/net/eth0/address 2>/dev/null || echo none)
rng=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null || echo none)
net=fail
if ip addr add 192.0.2.2/24 dev eth0 && ip link set eth0 up && ping -c 2 -W 3 192.0.2.1 >/dev/null 2>&1; then net=ok; fi
echo "LGUEST-API cpus=$cpus memtotal_kb=$memtotal_kb vda_sectors=$vda_sectors vda_ro=$vda_ro mac=$mac rng=$rng net=$net cmdline=$(cat /proc/cmdline)"

n=0
while true; do
    n=$((n + 1))
    # The data disk's first bytes, read past the page cache, and its size: they change when
    # the host swaps the disk's image (PATCH /drives).
    data=$(dd if=/dev/vdb bs=512 count=1 iflag=direct 2>/dev/null | head -c 12)
    echo "LGUEST-API-TICK n=$n uptime=$(cut -d' ' -f1 /proc/uptime) vdb=$data vdb_sectors=$(cat /sys/block/vdb/size 2>/dev/null)"
    sleep 0.2
done
