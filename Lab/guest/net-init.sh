#!/bin/sh
# Guest (L3) /init for the network checks: eth0 is lguest's virtio-net on a TAP device whose
# host end is the address in lguest.host= (lguest's classic --tunnet=IP). Reports, one
# LGUEST-NET line each: the MAC, how many pings of the host end came back, and the sha256 of a
# 256 KiB file fetched over TCP from a web server on the host. With lguest.vhost=1 on the
# command line (a boot with --net ...,vhost=on) the lines say LGUEST-NETVHOST instead.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
load-modules
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done

host=
marker=LGUEST-NET
for word in $(cat /proc/cmdline); do
    case $word in
        lguest.host=*) host=${word#lguest.host=} ;;
        lguest.vhost=1) marker=LGUEST-NETVHOST ;;
    esac
done
guest=${host%.*}.2

ip link set lo up
ip link set eth0 up
ip addr add "$guest/24" dev eth0
echo "$marker mac=$(cat /sys/class/net/eth0/address)"
received=$(ping -c 3 -W 3 "$host" 2>/dev/null | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
echo "$marker ping-received=${received:-0}"
# busybox's static wget crashes in its resolver; a raw HTTP/1.0 request over nc needs none.
# The server closes the connection after the body, so the payload is the response's tail.
printf 'GET /payload HTTP/1.0\r\nHost: lab\r\n\r\n' | nc -w 20 "$host" 8080 >/tmp/response 2>/tmp/nc.err
echo "$marker fetched=$(tail -c 262144 /tmp/response | sha256sum | cut -d' ' -f1) response-bytes=$(wc -c </tmp/response)"
poweroff -f
sleep 2
