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
    all) block; net; virtqueue; startup; boot ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
