#!/bin/sh
# Benchmark, not a test: restoring a snapshot with lguest beside QEMU's own save and restore
# (migrate to a file, -incoming) of the same guest in the same lab host. The guest is
# Lab/guest/snapshot-init.sh (a counter that writes each number to its disk) on the stock
# kernel, 1 vCPU, 256 MiB, a disk; QEMU runs it on its microvm machine.
#
# For each VMM: boot, let it count, save it; then restore 1, 2 and 4 copies at once, each with
# its own copy of the disk, and time from exec to the first byte on its console, read lguest's
# first KVM_RUN (--trace-boot), and each process's resident and proportional memory (smaps_rollup)
# once all count. Prints LAB-BENCH-SNAP lines, which Scripts/bench.sh snapshot shows.
# Emulated time: compare the ratios, not the milliseconds.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/snapshot.cpio.gz
QEMU=$(lab_qemu) || { echo "LAB-ERROR no qemu-system-x86_64"; exit 1; }
DATE=/lab/bin/date
now_ms() { "$DATE" +%s%N | cut -c1-13; }
S=$LAB_TMP
CMDLINE="console=ttyS0 reboot=k panic=1 quiet"
dd if=/dev/zero of="$S/disk.img" bs=1048576 count=16 2>/dev/null
waitfor() {
    _left=$(($1 * 100)); shift
    while [ "$_left" -gt 0 ]; do "$@" && return 0; sleep 0.01; _left=$((_left - 1)); done
    return 1
}
has() { grep -q "$2" "$1" 2>/dev/null; }
nonempty() { [ -s "$1" ]; }
is_vmm() { case $(readlink "/proc/$1/exe" 2>/dev/null) in */lguest | */qemu-system-x86_64) return 0 ;; esac; return 1; }
vmm_pid() {
    is_vmm "$1" && { echo "$1"; return; }
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do is_vmm "$c" && { echo "$c"; return; }; done
    echo "$1"
}
field() { awk -v k="$1:" '$1 == k { print $2 }' "$2"; }
hmp() { echo "$1" | socat - "UNIX-CONNECT:$S/mon.sock" 2>/dev/null | tr -d '\r'; }

# restore_copies VMM K: K restores at once (restore_cmd VMM I starts copy I in the background).
restore_copies() {
    vmm=$1 k=$2
    pids=
    i=1
    while [ "$i" -le "$k" ]; do
        cp "$S/base.img" "$S/copy$i.img"
        rm -f "$S/out$i" "$S/err$i"
        : >"$S/out$i"
        eval "t$i=\$(now_ms)"
        return_pid=
        restore_cmd "$vmm" "$i"
        pids="$pids ${return_pid:-$!}"
        i=$((i + 1))
    done
    i=1
    for p in $pids; do
        waitfor 60 nonempty "$S/out$i" || echo "LAB-BENCH-SNAP-ERROR $vmm copy $i printed nothing: $(tail -n 3 "$S/err$i" | tr '\n' ' ') $([ "$vmm" = qemu ] && { echo "info status" | socat - "UNIX-CONNECT:$S/mon$i.sock"; echo "info migrate" | socat - "UNIX-CONNECT:$S/mon$i.sock"; } 2>&1 | tr -d '\r' | tr '\n' ' ')"
        eval "first$i=\$((\$(now_ms) - t$i))"
        i=$((i + 1))
    done
    i=1
    for p in $pids; do waitfor 60 has "$S/out$i" LGUEST-SNAP-TICK || echo "LAB-BENCH-SNAP-ERROR $vmm copy $i never counted"; i=$((i + 1)); done
    sleep 1
    i=1
    for p in $pids; do
        v=$(vmm_pid "$p")
        run=$(sed -n 's/.*trace: first KVM_RUN at \([0-9.]*\) ms.*/\1/p' "$S/err$i")
        eval "echo \"LAB-BENCH-SNAP restore vmm=$vmm copies=$k copy=$i first_output_ms=\$first$i first_kvm_run_ms=${run:-none} rss_kb=$(field Rss "/proc/$v/smaps_rollup") pss_kb=$(field Pss "/proc/$v/smaps_rollup")\""
        i=$((i + 1))
    done
    # Only once every copy is measured: a copy's proportional share counts the others alive.
    for p in $pids; do kill "$(vmm_pid "$p")" 2>/dev/null; done
    for p in $pids; do wait "$p" 2>/dev/null; done
}

restore_cmd() {
    if [ "$1" = lguest ]; then
        "$LGUEST" restore --snapshot "$S/vm.state" --memory-file "$S/vm.mem" --resume --trace-boot \
            --disk "$S/copy$2.img" </dev/null >"$S/out$2" 2>"$S/err$2" &
    else
        "$QEMU" -M microvm,acpi=on,pit=on,pic=on,rtc=on -enable-kvm -cpu host -m 256 -smp 1 \
            -nodefaults -no-user-config -display none -serial stdio \
            -drive id=disk,file="$S/copy$2.img",format=raw,if=none -device virtio-blk-device,drive=disk \
            -kernel "$GUEST_KERNEL" -initrd "$INITRD" -append "$CMDLINE" \
            -monitor "unix:$S/mon$2.sock,server,nowait" \
            -incoming "exec:cat $S/qemu.mig" </dev/null >"$S/out$2" 2>"$S/err$2" &
        # The stream says the VM was stopped (as lguest's snapshot was taken paused): once it is
        # loaded, `cont`, as `resume_vm` does for lguest.
        qpid=$!
        (
            while ! echo "info status" | socat - "UNIX-CONNECT:$S/mon$2.sock" 2>/dev/null | tr -d '\r' | grep -q 'VM status: paused$'; do
                sleep 0.01
            done
            echo cont | socat - "UNIX-CONNECT:$S/mon$2.sock" >/dev/null 2>&1
        ) </dev/null >/dev/null 2>&1 &
        # restore_copies waits on $!: the QEMU, not the helper.
        return_pid=$qpid
    fi
}

echo "LAB-BEGIN snapshot-bench uptime=$(lab_uptime)"

# lguest: boot through the API, count, pause, snapshot. (LAB_BENCH_ONLY=qemu skips it.)
if [ "${LAB_BENCH_ONLY:-}" != qemu ]; then
printf '{"boot-source": {"kernel_image_path": "%s", "initrd_path": "%s", "boot_args": "%s"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 256}, "drives": [{"drive_id": "disk", "path_on_host": "%s", "is_root_device": false}]}\n' \
    "$GUEST_KERNEL" "$INITRD" "$CMDLINE" "$S/disk.img" >"$S/vm.json"
"$LGUEST" --api-sock "$S/api.sock" --id bench --log-path "$S/api.log" --config-file "$S/vm.json" </dev/null >"$S/boot.out" 2>"$S/boot.err" &
pid=$!
waitfor 120 has "$S/boot.out" "LGUEST-SNAP-TICK n=10 " || echo "LAB-BENCH-SNAP-ERROR lguest's guest never counted"
curl -s --unix-socket "$S/api.sock" -X PATCH http://localhost/vm -d '{"state": "Paused"}'
t0=$(now_ms)
curl -s --unix-socket "$S/api.sock" -X PUT http://localhost/snapshot/create -d "{\"snapshot_path\": \"$S/vm.state\", \"mem_file_path\": \"$S/vm.mem\"}"
t1=$(now_ms)
echo "LAB-BENCH-SNAP save vmm=lguest ms=$((t1 - t0)) state_bytes=$(wc -c <"$S/vm.state") memory_kb_on_disk=$(du -k "$S/vm.mem" | cut -f1)"
cp "$S/disk.img" "$S/base.img"
kill -9 "$(vmm_pid "$pid")"; wait "$pid" 2>/dev/null
for k in 1 2 4; do restore_copies lguest "$k"; done
rm -f "$S/vm.mem"
fi

# QEMU: boot the same guest, count, stop, migrate to a file.
dd if=/dev/zero of="$S/disk.img" bs=1048576 count=16 2>/dev/null
"$QEMU" -M microvm,acpi=on,pit=on,pic=on,rtc=on -enable-kvm -cpu host -m 256 -smp 1 \
    -nodefaults -no-user-config -display none -serial stdio -monitor "unix:$S/mon.sock,server,nowait" \
    -drive id=disk,file="$S/disk.img",format=raw,if=none -device virtio-blk-device,drive=disk \
    -kernel "$GUEST_KERNEL" -initrd "$INITRD" -append "$CMDLINE" </dev/null >"$S/qboot.out" 2>"$S/qboot.err" &
pid=$!
waitfor 120 has "$S/qboot.out" "LGUEST-SNAP-TICK n=10 " || echo "LAB-BENCH-SNAP-ERROR QEMU's guest never counted: $(tail -n 3 "$S/qboot.err")"
hmp stop >/dev/null
t0=$(now_ms)
hmp "migrate \"exec:cat > $S/qemu.mig\"" >/dev/null
migrated() { hmp "info migrate" | grep -q 'Migration status: completed'; }
waitfor 120 migrated || echo "LAB-BENCH-SNAP-ERROR QEMU's migration never completed: $(hmp 'info migrate' | head -n 5)"
t1=$(now_ms)
echo "LAB-BENCH-SNAP save vmm=qemu ms=$((t1 - t0)) state_bytes=$(wc -c <"$S/qemu.mig") memory_kb_on_disk=$(du -k "$S/qemu.mig" | cut -f1)"
cp "$S/disk.img" "$S/base.img"
hmp quit >/dev/null
wait "$pid" 2>/dev/null
for k in 1 2 4; do restore_copies qemu "$k"; done
echo "LAB-END snapshot-bench"
