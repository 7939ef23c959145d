#!/usr/bin/env bash
# Boots the stock Debian kernel with a small initramfs to a shell on the console.
# Where this host's /dev/kvm cannot run it (no hardware virtualization, or PVM), it runs in
# the lab: a software-emulated host with a real KVM, inside which lguest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
Scripts/setup.sh
swift build -c release --product lguest >&2
exec Lab/lab.sh shell --vmm .build/release/lguest "$@"
