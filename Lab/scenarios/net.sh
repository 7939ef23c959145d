#!/bin/sh
# Network checks: lguest's classic --tunnet=IP creates a TAP whose host end has that address;
# the stock kernel's virtio-net driver pings it and fetches a file over TCP from a web server
# on the lab host (Lab/guest/net-init.sh reports from inside). Every address is inside the lab
# host, on the documentation range 192.0.2.0/24; nothing leaves it.
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

pkill -f "httpd -p 8080" 2>/dev/null || killall httpd 2>/dev/null || true
