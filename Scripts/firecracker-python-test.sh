#!/usr/bin/env bash
# Runs Scripts/firecracker-python-check.py (firecracker-python, unchanged, driving lguest) in a
# mount and network namespace of its own, so that the client's fixed paths and its network set-up
# touch nothing of the host:
#   /usr/local/bin/firecracker  a link to LGUEST (the other entries of /usr/local/bin stay visible)
#   /var/lib                    an empty tmpfs, for the client's /var/lib/firecracker
#   eth0                        one end of a veth pair whose other end is in the namespace too,
#                               holding the default route (192.0.2.0/24, TEST-NET-1): the client
#                               names the guest's interface after it; the client adds its TAP
#                               device and nftables NAT rules inside this namespace only
# Needs root (unshare), /dev/kvm, /dev/net/tun, and Scripts/python-tools.sh's environment.
#
#   Scripts/firecracker-python-test.sh LGUEST KERNEL ROOTFS
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 LGUEST KERNEL ROOTFS" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
lguest="$(realpath "$1")" kernel="$(realpath "$2")" rootfs="$(realpath "$3")"
python="${LGUEST_PYTHON_TOOLS:-$here/../.build/python-tools}/bin/python"
[ -x "$python" ] || { echo "no Python tools at $python: run Scripts/python-tools.sh" >&2; exit 2; }

exec unshare --mount --net --propagation private -- env LGUEST="$lguest" KERNEL="$kernel" ROOTFS="$rootfs" \
    PYTHON="$python" CHECK="$here/firecracker-python-check.py" bash -euc '
    # /usr/local/bin: a tmpfs holding links to what was there, and firecracker.
    original=$(mktemp -d)
    mount --bind /usr/local/bin "$original"
    mount -t tmpfs tmpfs /usr/local/bin
    for entry in "$original"/* "$original"/.[!.]*; do
        [ -e "$entry" ] || [ -L "$entry" ] || continue
        ln -s "$entry" "/usr/local/bin/$(basename "$entry")"
    done
    rm -f /usr/local/bin/firecracker
    ln -s "$LGUEST" /usr/local/bin/firecracker
    mount -t tmpfs tmpfs /var/lib
    ip link set lo up
    ip link add eth0 type veth peer name eth0peer
    ip addr add 192.0.2.2/24 dev eth0
    ip link set eth0peer up
    ip link set eth0 up
    ip route add default via 192.0.2.1
    exec "$PYTHON" "$CHECK" --kernel "$KERNEL" --rootfs "$ROOTFS"
'
