#!/usr/bin/env bash
# Runs every test tier: host-only unit tests, KVM smoke tests with tiny guests, and the lab
# (stock Linux booted by lguest, checked from inside the guest).
set -euo pipefail
cd "$(dirname "$0")/.."
Scripts/setup.sh
exec swift test "$@"
