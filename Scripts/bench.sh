#!/usr/bin/env bash
# Builds and runs lguest's benchmarks (Benchmarks/, a package of its own) and prints their
# tables. Needs root for `net` (a TAP device in a private network namespace) and fio for
# `block`, which it installs when missing.
#
#   Scripts/bench.sh block [device-bench options]   block device vs fio on one file
#   Scripts/bench.sh net [device-bench options]     net device vs the raw TAP
#   Scripts/bench.sh virtqueue [benchmark options]  split-ring code under ordo-one/benchmark
#   Scripts/bench.sh startup [RUNS]                 exec to first KVM_RUN, stock kernel, on this host
#   Scripts/bench.sh boot [RUNS]                    boot to /init and memory overhead vs QEMU microvm, in the lab
#   Scripts/bench.sh vsock [RUNS]                   one 16 MiB stream through vsock vs virtio-net TCP, both ways, in the lab
#   Scripts/bench.sh guest-io [RUNS] [SECS] [POLLS] [WORKERS] fio and iperf3 inside the guest, lguest vs QEMU microvm, in the lab
#   Scripts/bench.sh deps REV [RUNS]                 this build vs git revision REV: size, start-up, memory
#   Scripts/bench.sh restore [RUNS]                 restore vs boot of a tiny guest, and clones' memory, on this host
#   Scripts/bench.sh snapshot                       save and restore (1, 2, 4 copies) vs QEMU's migrate/-incoming, in the lab
#   Scripts/bench.sh all
set -euo pipefail
cd "$(dirname "$0")/.."

need_fio() {
    command -v fio >/dev/null && return
    echo "bench: installing fio" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fio >/dev/null; then
        $SUDO apt-get update >/dev/null
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fio >/dev/null
    fi
}

build() {
    swift build --package-path Benchmarks -c release --product device-bench >&2
}

bench=Benchmarks/.build/release/device-bench

block() {
    need_fio
    build
    "$bench" block "$@"
}

net() {
    [ "$(id -u)" -eq 0 ] || { echo "bench: net needs root (it creates a TAP device)" >&2; exit 1; }
    [ -c /dev/net/tun ] || { echo "bench: /dev/net/tun is missing (modprobe tun)" >&2; exit 1; }
    build
    # The TAP lives in a network namespace of the benchmark's own, which the kernel removes
    # with the process: nothing is left behind, whatever way it exits.
    "$bench" net "$@"
}

# lguest as users get it: a release build with the Swift runtime linked in.
build_lguest() {
    Scripts/setup.sh >&2
    swift build -c release --static-swift-stdlib --product lguest >&2
}

# The stock kernel and the benchmark initramfs, with every device but the network (which needs
# a TAP): the start-up a user sees, up to the first instruction the guest runs. The guest itself
# does not get far where /dev/kvm is PVM; only the time to its first KVM_RUN is taken.
startup() {
    local runs=${1:-30} work kernel
    build_lguest
    swift build --package-path Benchmarks -c release --product startup-bench >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    kernel=$(Lab/lab.sh setup)
    Lab/lab.sh guest-initramfs --init Lab/guest/bench-init.sh --out "$work/initrd.cpio.gz" >&2
    truncate -s 64M "$work/disk.img"
    Benchmarks/.build/release/startup-bench --runs "$runs" .build/release/lguest run \
        --kernel "$kernel" --initrd "$work/initrd.cpio.gz" --memory 128 \
        --console virtio --disk "$work/disk.img" --rng --trace-boot
}

# Lab/scenarios/bench.sh in the lab: lguest and QEMU's microvm machine side by side.
boot() {
    local runs=${1:-5} log
    build_lguest
    log=$(mktemp)
    Lab/lab.sh run --vmm .build/release/lguest --with-qemu --scenario Lab/scenarios/bench.sh \
        --guest-init Lab/guest/bench-init.sh --env "BENCH_RUNS=$runs" --log "$log" >&2
    tr -d '\r' <"$log" | grep -E '^LAB-BENCH'
    rm -f "$log"
}

# A 64-bit ELF whose code writes 'x' to COM1 forever: mov dx,0x3f8; mov al,'x'; out dx,al; jmp.
spin_elf() {
    python3 - "$1" <<'PY'
import struct, sys
code = bytes([0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x78, 0xEE, 0xEB, 0xFB])
addr = 0x200000
header = b'\x7fELF' + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack('<HHIQQQIHHHHHH', 2, 62, 1, addr, 64, 0, 0, 64, 56, 1, 64, 0, 0)
program = struct.pack('<IIQQQQQQ', 1, 5, 120, addr, addr, len(code), len(code), 0x1000)
open(sys.argv[1], 'wb').write(header + program + code)
PY
}

# Restoring beside booting, on this host, with the tiny guest that prints forever (128 MiB):
# snapshotted once through the API, then RUNS boots and RUNS restores (lguest restore --resume),
# each timed from exec to the first KVM_RUN (the guest's first instruction) and to the first
# byte it prints; then the resident and proportional memory (smaps_rollup) of 1, 2 and 4
# restored clones running at once.
restore() {
    local runs=${1:-20} work pid n i total_rss total_pss
    build_lguest
    swift build --package-path Benchmarks -c release --product startup-bench >&2
    work=$(mktemp -d)
    spin_elf "$work/spin.elf"
    printf '{"boot-source": {"kernel_image_path": "%s", "boot_args": ""}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}, "drives": []}\n' \
        "$work/spin.elf" >"$work/vm.json"
    .build/release/lguest --api-sock "$work/api.sock" --config-file "$work/vm.json" </dev/null >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do [ -S "$work/api.sock" ] && break; sleep 0.05; done
    sleep 0.2
    curl -sf --unix-socket "$work/api.sock" -X PATCH http://localhost/vm -d '{"state": "Paused"}'
    curl -sf --unix-socket "$work/api.sock" -X PUT http://localhost/snapshot/create \
        -d "{\"snapshot_path\": \"$work/vm.state\", \"mem_file_path\": \"$work/vm.mem\"}"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "restore: booting the tiny guest (128 MiB)"
    Benchmarks/.build/release/startup-bench --runs "$runs" --console \
        .build/release/lguest run --kernel "$work/spin.elf" --memory 128 --cmdline "" --trace-boot
    echo "restore: restoring its snapshot (state $(stat -c %s "$work/vm.state") bytes, memory file $(du -k "$work/vm.mem" | cut -f1) KiB on disk)"
    Benchmarks/.build/release/startup-bench --runs "$runs" --console \
        .build/release/lguest restore --snapshot "$work/vm.state" --memory-file "$work/vm.mem" --resume --trace-boot
    for n in 1 2 4; do
        local pids=()
        for i in $(seq "$n"); do
            .build/release/lguest restore --snapshot "$work/vm.state" --memory-file "$work/vm.mem" --resume </dev/null >/dev/null 2>&1 &
            pids+=($!)
        done
        sleep 0.5
        total_rss=0 total_pss=0
        for pid in "${pids[@]}"; do
            total_rss=$((total_rss + $(awk '/^Rss:/{print $2}' "/proc/$pid/smaps_rollup")))
            total_pss=$((total_pss + $(awk '/^Pss:/{print $2}' "/proc/$pid/smaps_rollup")))
        done
        kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
        echo "restore: $n clone(s) at once: resident $((total_rss / n)) KiB each, proportional $((total_pss / n)) KiB each, $total_pss KiB in all"
    done
    rm -rf "$work"
}

# Lab/scenarios/snapshot-bench.sh in the lab: lguest's snapshots beside QEMU's migration to a
# file, the same guest in the same lab host; medians per VMM and number of copies.
snapshot() {
    local log
    build_lguest
    log=$(mktemp)
    Lab/lab.sh run --vmm .build/release/lguest --with-qemu --scenario Lab/scenarios/snapshot-bench.sh \
        --guest-init Lab/guest/snapshot-init.sh --host-tool curl --host-tool date --host-tool socat --guest-tool date \
        --env LAB_RUN_TIMEOUT=900 --timeout 2400 --log "$log" >&2
    tr -d '\r' <"$log" | grep -E '^LAB-BENCH-SNAP' | tee "$log.lines"
    awk '
        /^LAB-BENCH-SNAP restore/ {
            for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
            key = f["vmm"] " " f["copies"]
            out[key] = out[key] " " f["first_output_ms"]; rss[key] += f["rss_kb"]; pss[key] += f["pss_kb"]; n[key]++
        }
        function median(list,   m, a, i, j, t) {
            m = split(list, a, " ")
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return a[int((m + 1) / 2)]
        }
        END {
            split("1 2 4", ks, " ")
            for (x = 1; x <= 3; x++) {
                k = ks[x]; l = "lguest " k; q = "qemu " k
                if (!n[l] || !n[q]) continue
                printf "snapshot %d cop%s: first console byte lguest %d ms, QEMU %d ms (ratio %.2f); per copy: resident lguest %d KiB, QEMU %d KiB; proportional lguest %d KiB, QEMU %d KiB\n",
                    k, k == 1 ? "y" : "ies", median(out[l]), median(out[q]), median(out[q]) / median(out[l]),
                    rss[l] / n[l], rss[q] / n[q], pss[l] / n[l], pss[q] / n[q]
            }
        }' "$log.lines"
    rm -f "$log" "$log.lines"
}

# What a change of dependencies costs: the release binary of git revision REV (built in a
# worktree of its own) beside this one's, each booting a tiny guest (a few instructions that
# print forever) with 128 MiB, RUNS times each, alternating: exec to first KVM_RUN (from
# --trace-boot), and resident and anonymous memory 0.4 s in. Prints medians.
deps() {
    local rev=${1:?deps needs a git revision} runs=${2:-15} work
    build_lguest
    work=$(mktemp -d)
    git worktree add --detach "$work/tree" "$rev" >/dev/null
    (cd "$work/tree" && swift build -c release --static-swift-stdlib --product lguest >&2)
    spin_elf "$work/spin.elf"
    local name bin i pid
    declare -A times=() rss=() anon=()
    for i in $(seq "$runs"); do
        for name in before after; do
            bin=.build/release/lguest; [ "$name" = before ] && bin=$work/tree/.build/release/lguest
            "$bin" run --kernel "$work/spin.elf" --memory 128 --no-sandbox --trace-boot --cmdline "" \
                </dev/null >/dev/null 2>"$work/err" &
            pid=$!
            sleep 0.4
            rss[$name]+="$(awk '/VmRSS/{print $2}' "/proc/$pid/status") "
            anon[$name]+="$(awk '/RssAnon/{print $2}' "/proc/$pid/status") "
            kill "$pid"; wait "$pid" 2>/dev/null || true
            times[$name]+="$(sed -n 's/.*first KVM_RUN at \([0-9.]*\) ms.*/\1/p' "$work/err") "
        done
    done
    median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    for name in before after; do
        bin=.build/release/lguest; [ "$name" = before ] && bin=$work/tree/.build/release/lguest
        strip -o "$work/stripped" "$bin"
        printf 'deps %-6s %-8s stripped %s bytes, first KVM_RUN %s ms, resident %s KiB, anonymous %s KiB\n' \
            "$name" "$([ "$name" = before ] && echo "$rev" || echo HEAD)" "$(stat -c %s "$work/stripped")" \
            "$(echo "${times[$name]}" | median)" "$(echo "${rss[$name]}" | median)" "$(echo "${anon[$name]}" | median)"
    done
    git worktree remove --force "$work/tree" >/dev/null
    rm -rf "$work"
}

# The lab's vsock scenario in benchmark mode: RUNS streams of 16 MiB each way through vsock and
# through virtio-net TCP (socat at both ends), alternating, timed where they start; medians.
vsock() {
    local runs=${1:-5} log
    swift build >&2
    log=$(mktemp)
    Lab/lab.sh run --vmm .build/debug/lguest --scenario Lab/scenarios/vsock.sh --guest-init Lab/guest/vsock-init.sh \
        --host-tool socat --guest-tool socat --guest-modules "vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport" \
        --env "LAB_VSOCK_BENCH=$runs" --env LAB_RUN_TIMEOUT=900 --log "$log" >&2
    tr -d '\r' <"$log" | awk '
        /VSOCK bench-/ {
            for (i = 1; i <= NF; i++) if ($i ~ /^bench-/) name = $i; else if ($i ~ /^ms=/) ms = substr($i, 4)
            times[name] = times[name] " " ms
        }
        function median(list,   n, a, i, j, t) {
            n = split(list, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return a[int((n + 1) / 2)]
        }
        END {
            split("h2g g2h", ways, " ")
            for (k = 1; k <= 2; k++) {
                w = ways[k]; v = median(times["bench-" w]); t = median(times["bench-net-" w])
                if (v == "" || t == "") { printf "vsock %s: no result\n", w; continue }
                printf "vsock %s  16 MiB: vsock %d ms (%.1f MiB/s), virtio-net TCP %d ms (%.1f MiB/s), vsock/TCP throughput %.2f  [runs: vsock%s; tcp%s]\n",
                    w, v, 16000 / v, t, 16000 / t, t / v, times["bench-" w], times["bench-net-" w]
            }
        }'
    rm -f "$log"
}

# Lab/scenarios/guest-io.sh in the lab: what the guest measures with fio and iperf3 under lguest
# and under QEMU microvm (vhost off and on), RUNS boots of each, alternating; medians, spreads
# and ratios (Scripts/guest-io-report.py). POLLS and WORKERS ("0 250", say) add lguest boots
# with those disk poll= windows and workers= counts.
guest_io() {
    local runs=${1:-3} seconds=${2:-5} polls=${3:-} workers=${4:-} log=.build/bench/guest-io-serial.log
    build_lguest
    mkdir -p .build/bench
    Lab/lab.sh run --vmm .build/release/lguest --with-qemu --with-l2-disk --scenario Lab/scenarios/guest-io.sh \
        --guest-init Lab/guest/guest-io-init.sh --guest-modules squashfs \
        --env "GUEST_IO_RUNS=$runs" --env "GUEST_IO_SECONDS=$seconds" --env "GUEST_IO_POLLS=$polls" --env "GUEST_IO_WORKERS=$workers" --env LAB_RUN_TIMEOUT=900 \
        --timeout $((1200 + runs * 900)) --log "$log" >&2
    python3 Scripts/guest-io-report.py "$log"
    echo "guest-io: the lab's serial log, every guest's own lines included: $log" >&2
}

virtqueue() {
    swift package --package-path Benchmarks benchmark --target Virtqueue "$@"
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
    block) block "$@" ;;
    net) net "$@" ;;
    virtqueue) virtqueue "$@" ;;
    startup) startup "$@" ;;
    boot) boot "$@" ;;
    deps) deps "$@" ;;
    vsock) vsock "$@" ;;
    restore) restore "$@" ;;
    snapshot) snapshot "$@" ;;
    guest-io) guest_io "$@" ;;
    all) block; net; virtqueue; startup; boot ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
