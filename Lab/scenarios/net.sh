#!/bin/sh
# Network checks: lguest's classic --tunnet=IP creates a TAP whose host end has that address;
# the stock kernel's virtio-net driver pings it and fetches a file over TCP from a web server
# on the lab host (Lab/guest/net-init.sh reports from inside). Then the same again on a TAP
# made here, with --net tap=NAME,vhost=on: the host kernel moves the frames, and the scenario
# watches for the kernel's vhost worker beside lguest. Every address is inside the lab host,
# on the documentation range 192.0.2.0/24; nothing leaves it.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/net.cpio.gz
HOST=192.0.2.1

mkdir -p "$LAB_TMP/www"
head -c 262144 /dev/urandom >"$LAB_TMP/www/payload"
echo "LAB-NET payload=$(sha256sum <"$LAB_TMP/www/payload" | cut -d' ' -f1)"
busybox httpd -p 8080 -h "$LAB_TMP/www"

lab_run net "$LGUEST" --tunnet=$HOST --initrd="$INITRD" 256 "$GUEST_KERNEL" \
    console=ttyS0 quiet lguest.host=$HOST

# vhost=on: the kernel's worker is a thread named vhost-PID (a kernel thread before Linux 6.4).
if [ -c /dev/vhost-net ]; then
    tunctl -t lgvh0 >/dev/null
    ip addr add "$HOST/24" dev lgvh0
    ip link set lgvh0 up
    (
        for _ in $(seq 1 1200); do
            for comm in /proc/[0-9]*/task/*/comm; do
                case $(cat "$comm" 2>/dev/null) in vhost-*) echo "LAB-NETVHOST worker=$(cat "$comm")"; exit 0 ;; esac
            done
            sleep 0.25
        done
    ) &
    watcher=$!
    lab_run net-vhost "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --memory 256 \
        --net tap=lgvh0,vhost=on --cmdline "console=ttyS0 quiet lguest.host=$HOST lguest.vhost=1"
    kill "$watcher" 2>/dev/null
    ip link del lgvh0 2>/dev/null
else
    echo "LAB-NETVHOST device=missing (no /dev/vhost-net in the lab host)"
fi

pkill -f "httpd -p 8080" 2>/dev/null || killall httpd 2>/dev/null || true
