#!/bin/sh
# Guest (L3) /init for the snapshot scenario (Lab/scenarios/snapshot.sh). A counter, in the
# background, counts five times a second and writes each number to its own sector of the disk
# (vda), flushed:
#   LGUEST-SNAP-TICK n=N uptime=SECONDS
# while the foreground answers the lines the host types on the console (each echoed as
# LGUEST-SNAP-GOT LINE):
#   FILL       fills and frees 128 MiB of tmpfs (memory the host then sees resident)
#   MEM        LGUEST-SNAP-MEM total_kb=N free_kb=N   (MemTotal shrinks while the balloon holds pages)
#   HOSTTIME T LGUEST-SNAP-CLOCK host=T guest=NOW diff_ms=N   (its own clock against the host's)
#   CHECK      LGUEST-SNAP-CHECK n=N records=N distinct=N last=N net=ok|fail
#              (the disk's records read back past the page cache, and a ping of the host)
#   POWEROFF   LGUEST-SNAP-BYE n=N, and powers off
# The same guest runs on in each restored VM and clone: it never learns it was restored.
# (The console is read without a timeout: busybox's `read -t` drops what it has read of a line
# when the time runs out.)
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o size=200m tmpfs /tmp
load-modules
stty -echo 2>/dev/null
ip link set eth0 up
ip addr add 192.0.2.2/24 dev eth0
net=fail
ping -c 1 -W 5 192.0.2.1 >/dev/null 2>&1 && net=ok
echo "LGUEST-SNAP-READY net=$net"

# /bin/date is coreutils' (--guest-tool date), named by path: busybox's own, which its shell
# prefers, has no nanoseconds.
ms() { /bin/date +%s%N | cut -c1-13; }
echo 0 >/tmp/n
(
    n=0
    while true; do
        n=$((n + 1))
        printf 'COUNT %08d\n' "$n" | dd of=/dev/vda bs=512 seek="$n" conv=sync,notrunc,fsync 2>/dev/null
        # The count, once its sector is on the disk.
        echo "$n" >/tmp/n.new && mv /tmp/n.new /tmp/n
        echo "LGUEST-SNAP-TICK n=$n uptime=$(cut -d' ' -f1 /proc/uptime)"
        sleep 0.2
    done
) &
counter=$!

while read -r line; do
    echo "LGUEST-SNAP-GOT $line"
    case $line in
    FILL*)
        dd if=/dev/zero of=/tmp/fill bs=1048576 count=128 2>/dev/null
        rm -f /tmp/fill
        echo "LGUEST-SNAP-FILLED"
        ;;
    MEM*)
        echo "LGUEST-SNAP-MEM total_kb=$(sed -n 's/^MemTotal: *\([0-9]*\) kB$/\1/p' /proc/meminfo) free_kb=$(sed -n 's/^MemFree: *\([0-9]*\) kB$/\1/p' /proc/meminfo)"
        ;;
    HOSTTIME*)
        host=${line#HOSTTIME }
        guest=$(ms)
        echo "LGUEST-SNAP-CLOCK host=$host guest=$guest diff_ms=$((guest - host))"
        ;;
    CHECK*)
        n=$(cat /tmp/n)
        records=$(dd if=/dev/vda bs=512 count=$((n + 1)) iflag=direct 2>/dev/null | tr -d '\000' | grep '^COUNT ')
        total=$(echo "$records" | grep -c '^COUNT ')
        distinct=$(echo "$records" | sort -u | grep -c '^COUNT ')
        last=$(echo "$records" | tail -n 1 | sed 's/^COUNT 0*//')
        ping -c 1 -W 5 192.0.2.1 >/dev/null 2>&1 && net=ok || net=fail
        echo "LGUEST-SNAP-CHECK n=$n records=$total distinct=$distinct last=$last net=$net"
        ;;
    POWEROFF*)
        kill "$counter"
        echo "LGUEST-SNAP-BYE n=$(cat /tmp/n)"
        poweroff -f
        ;;
    esac
done
poweroff -f
