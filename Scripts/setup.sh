#!/usr/bin/env bash
# Installs what lguest's build, tests and lab need on a Debian machine, then fetches the lab's
# kernel. Idempotent: a second run does nothing but check.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-nftables: firecracker-python (Tests/ApiTests) makes NAT rules with it.
packages=(qemu-system-x86 busybox-static cpio gzip acpica-tools gcc python3-nftables)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
        $SUDO apt-get update >/dev/null
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# The lab's kernel (a stock Debian cloud kernel) and its modules.
Lab/lab.sh setup >/dev/null

# The Python tools of the API tests (schemathesis, firecracker-python), pinned, from PyPI. Without
# them those tests are skipped, saying so, rather than the whole run failing here.
Scripts/python-tools.sh >/dev/null || echo "setup: the API tests' Python tools could not be installed (Scripts/python-tools.sh)" >&2
