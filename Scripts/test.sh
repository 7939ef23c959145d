#!/usr/bin/env bash
# Runs every test tier: a short fuzz smoke (every parser harness over its checked-in corpus,
# Fuzz/README.md), host-only unit tests, KVM smoke tests with tiny guests, and the lab (stock
# Linux booted by lguest, checked from inside the guest). The smoke runs first, so the test
# runner's summary is the last thing printed.
set -euo pipefail
cd "$(dirname "$0")/.."
Scripts/setup.sh
Scripts/fuzz.sh smoke
exec swift test "$@"
