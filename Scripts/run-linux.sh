#!/usr/bin/env bash
# Boots the stock Debian kernel with a small initramfs to a shell on the console.
# Where this host's /dev/kvm cannot run it (no hardware virtualization, or PVM), it runs in
# the lab: a software-emulated host with a real KVM, inside which lguest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
Scripts/setup.sh
# The Swift runtime linked in: a faster start, less memory, nothing to ship beside the binary.
swift build -c release --static-swift-stdlib --product lguest >&2
exec Lab/lab.sh shell --vmm .build/release/lguest "$@"
