#!/bin/sh
# Firecracker's API in the lab: lguest starts with only --api-sock, and curl (a real HTTP
# client, copied into the lab host with --host-tool curl) configures the stock kernel's VM
# through the socket: boot source, 2 vCPUs and 256 MiB, a root drive, a network interface on a
# TAP made here, entropy, a data disk; then starts it, pauses and resumes it, swaps the data
# disk's image (PATCH /drives) while it runs, and sends Ctrl-Alt-Delete,
# which the guest's init (Lab/guest/api-init.sh) answers by powering off. Tests/LabTests reads
# the markers; keep them in step. Every address is inside the lab host (192.0.2.0/24).
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/api.cpio.gz
DISK=$LAB_TMP/root.img
SOCK=$LAB_TMP/api.sock
CONSOLE=$LAB_TMP/console
dd if=/dev/zero of="$DISK" bs=1048576 count=16 2>/dev/null
# The data disk, and the image that replaces it while the guest runs (twice its size).
{ printf 'FIRST-IMAGE.'; head -c 1048564 /dev/zero; } >"$LAB_TMP/first.img"
{ printf 'SECOND-IMAGE'; head -c 2097140 /dev/zero; } >"$LAB_TMP/second.img"
tunctl -t lgapi0 >/dev/null
ip addr add 192.0.2.1/24 dev lgapi0
ip link set lgapi0 up

# api METHOD PATH [BODY]: one request on this VM's socket (lab_api).
api() { lab_api "$SOCK" "$@"; }
ticks() { grep -c LGUEST-API-TICK "$CONSOLE"; }
more_ticks_than() { [ "$(ticks)" -gt "$1" ]; }
# The last tick line the guest has finished writing: a snapshot of the console without its
# final line when that line is still being written.
last_tick() {
    cp "$CONSOLE" "$LAB_TMP/console.snapshot"
    if [ -n "$(tail -c 1 "$LAB_TMP/console.snapshot")" ]; then sed -i '$d' "$LAB_TMP/console.snapshot"; fi
    grep LGUEST-API-TICK "$LAB_TMP/console.snapshot" | tail -n 1
}
tick_uptime() { grep LGUEST-API-TICK "$CONSOLE" | sed -n "${1}p" | sed 's/.*uptime=//'; }

start=$(lab_uptime)
echo "LAB-BEGIN api uptime=$start"
# The log goes to a file of its own: in the console's file its lines would split the guest's.
timeout -k 5 "$LAB_RUN_TIMEOUT" "$LGUEST" --api-sock "$SOCK" --id lab-api --log-path "$LAB_TMP/api.log" \
    >"$CONSOLE" 2>"$LAB_TMP/api.err" &
pid=$!
lab_waitfor 30 test -S "$SOCK" || echo "LAB-API-ERROR no socket"
api GET /
api PUT /boot-source "{\"kernel_image_path\": \"$GUEST_KERNEL\", \"initrd_path\": \"$INITRD\", \"boot_args\": \"console=ttyS0 reboot=k panic=1 quiet\"}"
api PUT /machine-config '{"vcpu_count": 2, "mem_size_mib": 256}'
api PUT /drives/rootfs "{\"drive_id\": \"rootfs\", \"path_on_host\": \"$DISK\", \"is_root_device\": true, \"is_read_only\": false}"
api PUT /network-interfaces/eth0 '{"iface_id": "eth0", "host_dev_name": "lgapi0", "guest_mac": "06:00:c0:00:02:02"}'
api PUT /drives/data "{\"drive_id\": \"data\", \"path_on_host\": \"$LAB_TMP/first.img\", \"is_root_device\": false}"
api PUT /entropy '{}'
api PUT /actions '{"action_type": "InstanceStart"}'
api GET / | tee "$LAB_TMP/state"
if [ -n "${LAB_API_DEBUG:-}" ] || ! grep -q Running "$LAB_TMP/state" 2>/dev/null; then
    for t in /proc/$(pidof lguest)/task/*; do echo "LAB-API-DEBUG $(cat "$t/comm") $(cat "$t/wchan" 2>/dev/null) $(cut -d' ' -f3 "$t/stat")"; done
    sed 's/^/LAB-API-DEBUG stderr /' "$LAB_TMP/api.err"
    head -c 2000 "$CONSOLE" | sed 's/^/LAB-API-DEBUG console /'
fi

lab_waitfor 200 grep -q "LGUEST-API-TICK n=5 " "$CONSOLE" || echo "LAB-API-ERROR the guest never ticked"
api PATCH /vm '{"state": "Paused"}'
api GET /
paused=$(ticks)
sleep 5
echo "LAB-API-PAUSE ticks_at_pause=$paused ticks_after_5s=$(ticks)"
api PATCH /vm '{"state": "Resumed"}'
lab_waitfor 60 more_ticks_than "$((paused + 5))" || echo "LAB-API-ERROR no ticks after resume"
echo "LAB-API-RESUME last_before=$(tick_uptime "$paused") first_after=$(tick_uptime $((paused + 1))) ticks=$(ticks)"
echo "LAB-API-DATA before $(last_tick)"
api PATCH /drives/data "{\"drive_id\": \"data\", \"path_on_host\": \"$LAB_TMP/second.img\"}"
lab_waitfor 60 grep -q "vdb=SECOND-IMAGE vdb_sectors=4096" "$CONSOLE" || echo "LAB-API-ERROR the guest never saw the swapped disk"
echo "LAB-API-DATA after $(last_tick)"
api PUT /actions '{"action_type": "SendCtrlAltDel"}'
wait "$pid"
status=$?
echo
cat "$CONSOLE"
echo
lab_report api "$status" "$LAB_TMP/api.err" "$start"
