#!/bin/sh
# Rate limiters through Firecracker's API: lguest starts with only --api-sock, and curl gives
# the guest (Lab/guest/throttle-init.sh) a data disk with a bandwidth limit and a network
# interface with a receive bandwidth limit, Firecracker's token buckets. The guest measures
# what it gets; once it has, the limits are doubled with PATCH on the running VM and it
# measures again. Tests/LabTests/ThrottleLabTests reads the markers:
#   LAB-THROTTLE-LIMITS phase=N block_bytes_per_s=B net_bytes_per_s=B   (what was asked)
#   LGUEST-THROTTLE phase=N ...                                         (what the guest saw)
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/throttle.cpio.gz
DISK=$LAB_TMP/data.img
SOCK=$LAB_TMP/api.sock
CONSOLE=$LAB_TMP/console
WWW=$LAB_TMP/www
# Phase 1: 10 MiB/s of disk, 20 Mbit/s of network; phase 2 twice both. The disk's bucket holds
# 200 ms of its rate, more than one of the guest's 1 MiB reads, so that a refill timer that
# fires late in the nested lab costs no throughput (a bucket no larger than a request caps at
# that request while it waits). The network's frames are small against 100 ms of it.
BLOCK_1=2097152 BLOCK_2=4194304 BLOCK_MS=200
NET_1=250000 NET_2=500000 NET_MS=100

dd if=/dev/zero of="$DISK" bs=1048576 count=80 2>/dev/null
mkdir -p "$WWW"
head -c 8000000 /dev/zero >"$WWW/big"
tunctl -t lgthr0 >/dev/null
ip addr add 192.0.2.1/24 dev lgthr0
ip link set lgthr0 up
httpd -f -p 192.0.2.1:8080 -h "$WWW" &
httpd=$!

# api METHOD PATH [BODY]: one request on this VM's socket (lab_api).
api() { lab_api "$SOCK" "$@"; }
bucket() { echo "{\"bandwidth\": {\"size\": $1, \"refill_time\": $2}}"; }
limits() { echo "LAB-THROTTLE-LIMITS phase=$1 block_bytes_per_s=$(($2 * 1000 / BLOCK_MS)) net_bytes_per_s=$(($3 * 1000 / NET_MS))"; }

start=$(lab_uptime)
echo "LAB-BEGIN throttle uptime=$start"
timeout -k 5 "$LAB_RUN_TIMEOUT" "$LGUEST" --api-sock "$SOCK" --id lab-throttle --log-path "$LAB_TMP/api.log" \
    >"$CONSOLE" 2>"$LAB_TMP/api.err" &
pid=$!
lab_watch throttle "$CONSOLE" "$pid" &
lab_waitfor 30 test -S "$SOCK" || echo "LAB-API-ERROR no socket"
api PUT /boot-source "{\"kernel_image_path\": \"$GUEST_KERNEL\", \"initrd_path\": \"$INITRD\", \"boot_args\": \"console=ttyS0 panic=1 quiet\"}"
api PUT /machine-config '{"vcpu_count": 1, "mem_size_mib": 256}'
api PUT /drives/data "{\"drive_id\": \"data\", \"path_on_host\": \"$DISK\", \"is_root_device\": false, \"is_read_only\": true, \"rate_limiter\": $(bucket $BLOCK_1 $BLOCK_MS)}"
api PUT /network-interfaces/eth0 "{\"iface_id\": \"eth0\", \"host_dev_name\": \"lgthr0\", \"guest_mac\": \"06:00:c0:00:02:02\", \"rx_rate_limiter\": $(bucket $NET_1 $NET_MS)}"
limits 1 $BLOCK_1 $NET_1
api PUT /actions '{"action_type": "InstanceStart"}'

if lab_waitfor 240 grep -q "LGUEST-THROTTLE-WAITING" "$CONSOLE"; then
    api PATCH /drives/data "{\"drive_id\": \"data\", \"rate_limiter\": $(bucket $BLOCK_2 $BLOCK_MS)}"
    api PATCH /network-interfaces/eth0 "{\"iface_id\": \"eth0\", \"rx_rate_limiter\": $(bucket $NET_2 $NET_MS)}"
    limits 2 $BLOCK_2 $NET_2
    api GET /vm/config
    touch "$WWW/raised"
else
    echo "LAB-API-ERROR the guest never finished its first measurement"
    kill "$pid" 2>/dev/null
fi
wait "$pid"
status=$?
kill "$httpd" 2>/dev/null
echo
cat "$CONSOLE"
echo
lab_report throttle "$status" "$LAB_TMP/api.err" "$start"
