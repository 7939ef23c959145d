#!/usr/bin/env bash
# Builds and runs lguest's benchmarks (Benchmarks/, a package of its own) and prints their
# tables. Needs root for `net` (a TAP device in a private network namespace) and fio for
# `block`, which it installs when missing.
#
#   Scripts/bench.sh block [device-bench options]   block device vs fio on one file
#   Scripts/bench.sh net [device-bench options]     net device vs the raw TAP
#   Scripts/bench.sh virtqueue [benchmark options]  split-ring code under ordo-one/benchmark
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

virtqueue() {
    swift package --package-path Benchmarks benchmark --target Virtqueue "$@"
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
    block) block "$@" ;;
    net) net "$@" ;;
    virtqueue) virtqueue "$@" ;;
    all) block; net; virtqueue ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
