#!/bin/sh
# Benchmarks, side by side in one lab host: lguest against QEMU's microvm machine, booting the
# same stock kernel, initrd and command line (Lab/guest/bench-init.sh), one vCPU each.
#
#   boot    process start to the guest's /init, lguest from its kernel cache and as a bzImage
#           (--kernel-cache off). Timed from outside for both VMMs the same way
#           (the lab host's clock, from just before exec until the VMM exits: QEMU exits on the
#           guest's first write to port 0x440 through isa-debug-exit, lguest powers off right
#           after it); lguest's boot timer also reports the same moment from inside.
#   exits   KVM's exit counters (debugfs, summed over the VM's vCPUs) for a boot to /init, by
#           reason: lguest against QEMU, medians of RUNS boots each.
#   memory  resident memory outside guest RAM, 128 MiB guest, all four virtio devices, once
#           the guest has used each of them.
#
# Prints LAB-BENCH lines per run and LAB-BENCH-SUMMARY lines (medians and the ratio), which
# Scripts/bench.sh shows. Emulated time: compare the ratio, not the seconds.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/bench.cpio.gz
QEMU=$(lab_qemu) || { echo "LAB-ERROR no qemu-system-x86_64"; exit 1; }
RUNS=${BENCH_RUNS:-5}
CMDLINE="console=ttyS0 quiet panic=0"
HOST=192.0.2.1

# Hundredths of a second since the lab host booted.
centiseconds() { tr -d . </proc/uptime | cut -d' ' -f1; }

# run_timed NAME COMMAND...: the command's wall time in ms (10 ms resolution), its standard
# error kept in $LAB_TMP/NAME.err.
run_timed() {
    _name=$1
    shift
    _start=$(centiseconds)
    timeout -k 5 120 "$@" </dev/null >"$LAB_TMP/$_name.out" 2>"$LAB_TMP/$_name.err"
    _status=$?
    _end=$(centiseconds)
    TIMED_MS=$(((_end - _start) * 10))
    TIMED_STATUS=$_status
}

# lguest_boot RUN [VARIANT CACHE]: lguest with a kernel cache (as a user's would be; the warm-up
# run fills it), or as VARIANT with --kernel-cache CACHE.
KERNEL_CACHE=$LAB_TMP/kernels
lguest_boot() {
    _vmm=${2:-lguest}
    run_timed "$_vmm-boot-$1" "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" \
        --cpus 1 --memory 256 --trace-boot --kernel-cache "${3:-$KERNEL_CACHE}" --cmdline "$CMDLINE lguest.bench=boot"
    timer=$(sed -n 's/.*boot timer: the guest wrote 0x1 at \([0-9.]*\) ms.*/\1/p' "$LAB_TMP/$_vmm-boot-$1.err")
    first=$(sed -n 's/.*trace: first KVM_RUN at \([0-9.]*\) ms.*/\1/p' "$LAB_TMP/$_vmm-boot-$1.err")
    echo "LAB-BENCH boot vmm=$_vmm run=$1 ms=$TIMED_MS exit=$TIMED_STATUS boot_timer_ms=${timer:-none} first_kvm_run_ms=${first:-none}"
}

qemu_boot() {
    run_timed "qemu-boot-$1" "$QEMU" -M microvm,acpi=on,pit=on,pic=on,rtc=on -enable-kvm -cpu host \
        -m 256 -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -device isa-debug-exit,iobase=0x440,iosize=1 \
        -kernel "$GUEST_KERNEL" -initrd "$INITRD" -append "$CMDLINE lguest.bench=boot"
    # isa-debug-exit makes QEMU exit with (value << 1) | 1: 3 for the guest's 1.
    echo "LAB-BENCH boot vmm=qemu run=$1 ms=$TIMED_MS exit=$TIMED_STATUS"
}

# The median of the numbers on standard input.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "none"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# One warm-up of each (page cache, QEMU's firmware), then alternate so drift hits both alike.
lguest_boot 0 >/dev/null
qemu_boot 0 >/dev/null
: >"$LAB_TMP/boot.lines"
i=1
while [ "$i" -le "$RUNS" ]; do
    lguest_boot "$i" | tee -a "$LAB_TMP/boot.lines"
    lguest_boot "$i" lguest-bzimage off | tee -a "$LAB_TMP/boot.lines"
    qemu_boot "$i" | tee -a "$LAB_TMP/boot.lines"
    i=$((i + 1))
done
theirs=$(grep 'vmm=qemu' "$LAB_TMP/boot.lines" | grep 'exit=3$' | sed 's/.* ms=\([0-9]*\).*/\1/' | median)
for vmm in lguest lguest-bzimage; do
    ours=$(grep "vmm=$vmm " "$LAB_TMP/boot.lines" | grep 'exit=0 ' | sed 's/.* ms=\([0-9]*\).*/\1/' | median)
    timer=$(grep "vmm=$vmm " "$LAB_TMP/boot.lines" | sed -n 's/.*boot_timer_ms=\([0-9.]*\).*/\1/p' | median)
    first=$(grep "vmm=$vmm " "$LAB_TMP/boot.lines" | sed -n 's/.*first_kvm_run_ms=\([0-9.]*\).*/\1/p' | median)
    ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "none" }')
    echo "LAB-BENCH-SUMMARY boot vmm=$vmm runs=$RUNS lguest_ms=$ours lguest_boot_timer_ms=$timer lguest_first_kvm_run_ms=$first qemu_ms=$theirs ratio=$ratio"
done

# --- VM exits -------------------------------------------------------------------------------

# KVM's counters of one VM (its debugfs directory PID-FD, which lives as long as the VM), summed
# over its vCPUs: every exit, and the reasons KVM counts on this host.
EXIT_COUNTERS="exits io_exits mmio_exits halt_exits irq_exits irq_window_exits nmi_window_exits request_irq_exits signal_exits insn_emulation hypercalls"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
vm_exits() { # PID
    for _dir in /sys/kernel/debug/kvm/"$1"-*; do
        [ -d "$_dir" ] || continue
        for _counter in $EXIT_COUNTERS; do
            [ -r "$_dir/$_counter" ] && printf '%s=%s ' "$_counter" "$(cat "$_dir/$_counter")"
        done
        return 0
    done
    printf 'exits=none '
}

# exits NAME COMMAND...: boots the guest to /init (its LGUEST-BENCH at-init line) and prints the
# VM's exit counters at that moment; then kills the VMM.
exits() {
    _name=$1
    shift
    "$@" </dev/null >"$LAB_TMP/$_name-exits.out" 2>"$LAB_TMP/$_name-exits.err" &
    _pid=$!
    lab_waitfor 240 grep -q 'LGUEST-BENCH at-init' "$LAB_TMP/$_name-exits.out"
    echo "LAB-BENCH exits vmm=$_name $(vm_exits "$_pid")"
    kill "$_pid" 2>/dev/null
    wait "$_pid" 2>/dev/null
}

i=1
while [ "$i" -le "$RUNS" ]; do
    exits lguest "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" \
        --cpus 1 --memory 256 --kernel-cache "$KERNEL_CACHE" --cmdline "$CMDLINE lguest.bench=exits"
    exits lguest-bzimage "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" \
        --cpus 1 --memory 256 --kernel-cache off --cmdline "$CMDLINE lguest.bench=exits"
    exits qemu "$QEMU" -M microvm,acpi=on,pit=on,pic=on,rtc=on -enable-kvm -cpu host \
        -m 256 -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -kernel "$GUEST_KERNEL" -initrd "$INITRD" -append "$CMDLINE lguest.bench=exits"
    i=$((i + 1))
done | tee "$LAB_TMP/exits.lines"
for vmm in lguest lguest-bzimage qemu; do
    summary=
    for counter in $EXIT_COUNTERS; do
        m=$(grep "vmm=$vmm " "$LAB_TMP/exits.lines" | sed -n "s/.* $counter=\([0-9]*\).*/\1/p" | median)
        summary="$summary $counter=$m"
    done
    echo "LAB-BENCH-SUMMARY exits vmm=$vmm runs=$RUNS$summary"
done

# --- memory ---------------------------------------------------------------------------------

# Resident memory of PID outside its guest RAM, in kB: every mapping's Rss, less the mappings
# at least as large as the guest's RAM (one for lguest; QEMU's RAM block for QEMU). Also the
# anonymous part of it (heap, stacks, buffers): what each further VM costs, where the program's
# file pages are shared between all the VMs that run it.
rss_outside_guest() { # PID GUEST_KB
    awk -v guest="$2" '
        /^[0-9a-f]+-[0-9a-f]+ / { big = 0 }
        /^Size:/ { big = ($2 >= guest) }
        /^Rss:/ { total += $2; if (big) ram += $2 }
        /^Anonymous:/ { if (!big) anon += $2 }
        END { printf "rss_kb=%d guest_ram_kb=%d overhead_kb=%d overhead_anon_kb=%d\n", total, ram, total - ram, anon }
    ' "/proc/$1/smaps"
}

# measure NAME TAP COMMAND...: starts the VMM, waits for the guest's ready line, measures.
measure() {
    _name=$1 _tap=$2
    shift 2
    tunctl -t "$_tap" >/dev/null
    ip addr add "$HOST/24" dev "$_tap"
    ip link set "$_tap" up
    dd if=/dev/zero of="$LAB_TMP/$_name.img" bs=1048576 count=16 2>/dev/null
    "$@" </dev/null >"$LAB_TMP/$_name.out" 2>"$LAB_TMP/$_name.err" &
    _pid=$!
    _waited=0
    until grep -q 'LGUEST-BENCH ready' "$LAB_TMP/$_name.out" 2>/dev/null; do
        if [ "$_waited" -ge 240 ] || ! kill -0 "$_pid" 2>/dev/null; then break; fi
        sleep 0.5
        _waited=$((_waited + 1))
    done
    _ready=$(grep -o 'LGUEST-BENCH ready.*' "$LAB_TMP/$_name.out" | tr -d '\r')
    sleep 1
    echo "LAB-BENCH memory vmm=$_name $(rss_outside_guest "$_pid" 131072) threads=$(ls /proc/$_pid/task | wc -l) ${_ready:-not-ready}"
    kill "$_pid" 2>/dev/null
    wait "$_pid" 2>/dev/null
    sed "s/^/LAB-STDERR-LINE $_name /" "$LAB_TMP/$_name.err" | tail -n 5
    ip link delete "$_tap" 2>/dev/null || tunctl -d "$_tap" >/dev/null
}

# --kernel-cache off: a cached kernel's segments are mapped over parts of guest RAM, which would
# cut RAM into mappings smaller than the guest and count them as lguest's own.
measure lguest lgbench0 "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 1 --memory 128 --kernel-cache off \
    --console virtio --disk "$LAB_TMP/lguest.img" --net tap=lgbench0 --rng \
    --cmdline "$CMDLINE lguest.bench=memory lguest.host=$HOST"

measure qemu lgbench1 "$QEMU" -M microvm,acpi=on,pit=on,pic=on,rtc=on -enable-kvm -cpu host \
    -m 128 -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -drive id=disk,file="$LAB_TMP/qemu.img",format=raw,if=none -device virtio-blk-device,drive=disk \
    -netdev tap,id=net,ifname=lgbench1,script=no,downscript=no -device virtio-net-device,netdev=net \
    -device virtio-rng-device -device virtio-serial-device -chardev null,id=hvc -device virtconsole,chardev=hvc \
    -kernel "$GUEST_KERNEL" -initrd "$INITRD" -append "$CMDLINE lguest.bench=memory lguest.host=$HOST"
