#!/bin/sh
# Snapshots in the lab, with the stock kernel and Lab/guest/snapshot-init.sh (a guest that
# counts and writes each number to its disk, and answers what the host types on its console):
#  1. lguest boots it through Firecracker's API (curl; a config file with a NIC on a TAP made
#     here, a disk and a balloon). The guest fills and frees 128 MiB; the balloon is inflated by
#     64 MiB (lguest's resident memory is measured before and after) and deflated again; the
#     guest says what MemTotal is each time.
#  2. The VM is paused, snapshotted (PUT /snapshot/create) and lguest is killed with SIGKILL.
#  3. Three seconds later a new lguest loads the snapshot (PUT /snapshot/load, resume_vm): the
#     guest counts on, compares its clock with the host's, reads its disk back, pings the host
#     and powers off.
#  4. Three clones start from the same snapshot at once (lguest restore --resume), each with a
#     copy of the disk as it was at the snapshot and a TAP of its own; each counts on, its
#     resident and proportional memory is read, and each powers off.
# Markers (Tests/LabTests/SnapshotLabTests.swift reads them; keep them in step): LAB-SNAP-* from
# here, and each VM's console as LAB-CONSOLE <vm> <line>.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/snapshot.cpio.gz
DATE=date
[ -x /lab/bin/date ] && DATE=/lab/bin/date
now_ms() { "$DATE" +%s%N | cut -c1-13; }
S=$LAB_TMP
dd if=/dev/zero of="$S/disk.img" bs=1048576 count=16 2>/dev/null
tunctl -t lgsnap0 >/dev/null
ip addr add 192.0.2.1/24 dev lgsnap0
ip link set lgsnap0 up

# api SOCKET METHOD PATH [BODY]: one request (lab_api), its body left in $S/api.body.
api() { lab_api "$@"; }
# The last complete line of FILE holding WORD (a line still being written is left out).
last_line() {
    cp "$1" "$S/snap.copy"
    if [ -n "$(tail -c 1 "$S/snap.copy")" ]; then sed -i '$d' "$S/snap.copy"; fi
    grep "$2" "$S/snap.copy" | tail -n 1
}
has() { grep -q "$2" "$1"; }
tick_n() { echo "$1" | sed -n 's/.*LGUEST-SNAP-TICK n=\([0-9]*\).*/\1/p'; }
# The lguest process behind PID (busybox's timeout execs the command itself; coreutils' forks).
is_vmm() { case $(readlink "/proc/$1/exe" 2>/dev/null) in */lguest) return 0 ;; esac; return 1; }
vmm_pid() {
    is_vmm "$1" && { echo "$1"; return; }
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        is_vmm "$c" && { echo "$c"; return; }
    done
    echo "$1"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# type FIFO-FD TEXT: a line on the guest's console.
say() { eval "echo \"\$2\" >&$1"; }

echo "LAB-BEGIN snapshot uptime=$(lab_uptime)"

# 1. Boot through the API, then the balloon.
cat >"$S/vm.json" <<JSON
{"boot-source": {"kernel_image_path": "$GUEST_KERNEL", "initrd_path": "$INITRD", "boot_args": "console=ttyS0 reboot=k panic=1 quiet"},
 "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
 "drives": [{"drive_id": "disk", "path_on_host": "$S/disk.img", "is_root_device": false}],
 "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "lgsnap0", "guest_mac": "06:00:c0:00:02:02"}],
 "balloon": {"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1}}
JSON
mkfifo "$S/in1"
exec 3<>"$S/in1"
timeout -k 5 "$LAB_RUN_TIMEOUT" "$LGUEST" --api-sock "$S/api1.sock" --id first --log-path "$S/api1.log" \
    --config-file "$S/vm.json" <&3 >"$S/console1" 2>"$S/err1" &
pid1=$!
lab_waitfor 120 has "$S/console1" "LGUEST-SNAP-TICK n=5 " || echo "LAB-SNAP-ERROR the first VM never counted to 5"
say 3 FILL
lab_waitfor 60 has "$S/console1" LGUEST-SNAP-FILLED || echo "LAB-SNAP-ERROR the guest never filled its memory"
vmm1=$(vmm_pid "$pid1")
rss_full=$(rss_kb "$vmm1")
say 3 MEM
lab_waitfor 60 has "$S/console1" LGUEST-SNAP-MEM || echo "LAB-SNAP-ERROR no MemTotal from the guest"
api "$S/api1.sock" PATCH /balloon '{"amount_mib": 64}'
inflated() { api "$S/api1.sock" GET /balloon/statistics >/dev/null; grep -q '"actual_mib":64' "$S/api.body"; }
lab_waitfor 90 inflated || echo "LAB-SNAP-ERROR the balloon never reached 64 MiB: $(cat "$S/api.body")"
sleep 1
rss_inflated=$(rss_kb "$vmm1")
say 3 MEM
lab_waitfor 60 sh -c "[ \$(grep -c LGUEST-SNAP-MEM '$S/console1') -ge 2 ]" || echo "LAB-SNAP-ERROR no MemTotal from the guest with the balloon inflated"
api "$S/api1.sock" PATCH /balloon '{"amount_mib": 0}'
deflated() { api "$S/api1.sock" GET /balloon/statistics >/dev/null; grep -q '"actual_mib":0' "$S/api.body"; }
lab_waitfor 90 deflated || echo "LAB-SNAP-ERROR the balloon never deflated: $(cat "$S/api.body")"
say 3 MEM
lab_waitfor 60 sh -c "[ \$(grep -c LGUEST-SNAP-MEM '$S/console1') -ge 3 ]" || echo "LAB-SNAP-ERROR no MemTotal from the guest with the balloon deflated"
echo "LAB-SNAP-BALLOON rss_full_kb=$rss_full rss_inflated_kb=$rss_inflated"

# 2. Pause, snapshot, kill.
api "$S/api1.sock" PATCH /vm '{"state": "Paused"}'
sleep 0.5
last=$(tick_n "$(last_line "$S/console1" LGUEST-SNAP-TICK)")
# A tick line the guest was half-way through when it stopped ends in the next VM's console.
partial=no
[ -n "$(tail -c 1 "$S/console1")" ] && partial=yes
t0=$(now_ms)
api "$S/api1.sock" PUT /snapshot/create "{\"snapshot_path\": \"$S/vm.state\", \"mem_file_path\": \"$S/vm.mem\"}"
t1=$(now_ms)
sleep 1
after=$(tick_n "$(last_line "$S/console1" LGUEST-SNAP-TICK)")
kill -9 "$vmm1"
wait "$pid1"
echo "LAB-SNAP-CREATED last=$last partial=$partial after_snapshot=$after create_ms=$((t1 - t0)) state_bytes=$(wc -c <"$S/vm.state") mem_bytes=$(wc -c <"$S/vm.mem")"
cp "$S/disk.img" "$S/base.img"
exec 3>&-
sleep 3

# 3. A new lguest loads it.
mkfifo "$S/in2"
exec 4<>"$S/in2"
timeout -k 5 "$LAB_RUN_TIMEOUT" "$LGUEST" --api-sock "$S/api2.sock" --id second --log-path "$S/api2.log" \
    <&4 >"$S/console2" 2>"$S/err2" &
pid2=$!
lab_waitfor 30 test -S "$S/api2.sock" || echo "LAB-SNAP-ERROR no socket for the second lguest"
t0=$(now_ms)
api "$S/api2.sock" PUT /snapshot/load "{\"snapshot_path\": \"$S/vm.state\", \"mem_backend\": {\"backend_type\": \"File\", \"backend_path\": \"$S/vm.mem\"}, \"resume_vm\": true, \"network_overrides\": [{\"iface_id\": \"eth0\", \"host_dev_name\": \"lgsnap0\"}]}"
t1=$(now_ms)
lab_waitfor 60 has "$S/console2" LGUEST-SNAP-TICK || echo "LAB-SNAP-ERROR the restored guest never counted"
t2=$(now_ms)
api "$S/api2.sock" GET /
echo "LAB-SNAP-LOADED load_ms=$((t1 - t0)) first_tick_ms=$((t2 - t0))"
for _ in 1 2 3; do
    say 4 "HOSTTIME $(now_ms)"
    lab_waitfor 15 has "$S/console2" LGUEST-SNAP-CLOCK && break
    echo "LAB-SNAP-ERROR no clock answer (yet)"
done
say 4 CHECK
lab_waitfor 60 has "$S/console2" LGUEST-SNAP-CHECK || echo "LAB-SNAP-ERROR no check answer"
say 4 POWEROFF
wait "$pid2"
status2=$?
exec 4>&-
records=$(tr -d '\000' <"$S/disk.img" | grep -c '^COUNT ')
echo "LAB-SNAP-SECOND exit=$status2 disk_records=$records disk_last=$(tr -d '\000' <"$S/disk.img" | grep '^COUNT ' | tail -n 1 | sed 's/^COUNT 0*//')"

# 4. Three clones at once, each on a copy of the disk as it was at the snapshot.
for i in 1 2 3; do
    cp "$S/base.img" "$S/clone$i.img"
    tunctl -t "lgclone$i" >/dev/null
    ip link set "lgclone$i" up
    mkfifo "$S/cin$i"
done
exec 5<>"$S/cin1" 6<>"$S/cin2" 7<>"$S/cin3"
t0=$(now_ms)
for i in 1 2 3; do
    fd=$((i + 4))
    eval "timeout -k 5 \"\$LAB_RUN_TIMEOUT\" \"\$LGUEST\" restore --snapshot \"\$S/vm.state\" --memory-file \"\$S/vm.mem\" --resume --trace-boot \
        --disk \"\$S/clone$i.img\" --net tap=lgclone$i <&$fd >\"\$S/cconsole$i\" 2>\"\$S/cerr$i\" &"
    eval "cpid$i=\$!"
done
for i in 1 2 3; do
    lab_waitfor 60 has "$S/cconsole$i" LGUEST-SNAP-TICK || echo "LAB-SNAP-ERROR clone $i never counted"
done
t1=$(now_ms)
sleep 1
for i in 1 2 3; do
    eval "p=\$cpid$i"
    p=$(vmm_pid "$p")
    rss=$(sed -n 's/^Rss: *\([0-9]*\) kB$/\1/p' "/proc/$p/smaps_rollup")
    pss=$(sed -n 's/^Pss: *\([0-9]*\) kB$/\1/p' "/proc/$p/smaps_rollup")
    first_run=$(grep 'trace: first KVM_RUN' "$S/cerr$i" | head -n 1 | sed 's/[^0-9.]*\([0-9.]*\) ms.*/\1/')
    echo "LAB-SNAP-CLONE-MEMORY clone=$i rss_kb=$rss pss_kb=$pss first_kvm_run_ms=$first_run"
done
echo "LAB-SNAP-CLONES all_counting_ms=$((t1 - t0))"
for i in 1 2 3; do say $((i + 4)) POWEROFF; done
for i in 1 2 3; do
    eval "p=\$cpid$i"
    wait "$p"
    echo "LAB-SNAP-CLONE clone=$i exit=$? stderr=$(grep -v '^lguest: the VM\|trace:' "$S/cerr$i" | tail -n 1)"
done
exec 5>&- 6>&- 7>&-

for vm in 1 2; do sed "s/^/LAB-CONSOLE vm$vm /" "$S/console$vm"; done
for i in 1 2 3; do sed "s/^/LAB-CONSOLE clone$i /" "$S/cconsole$i"; done
for f in err1 err2 cerr1 cerr2 cerr3; do tail -n 5 "$S/$f" | sed "s/^/LAB-SNAP-STDERR $f /"; done
echo "LAB-END snapshot"
