# The lab host's disk (sourced by lab.sh): a Debian userland for scenarios whose tools busybox
# lacks — a real HTTP client, socat, Python, fio, iperf3. Built once by mmdebstrap from Debian's
# packages (the network it needs is Debian's archive), cached as a read-only squashfs image, and
# given to L2 as a QEMU virtio disk by `run --with-l2-disk`. L2's /init mounts it at
# /lab/debian; scenarios run its programs with `lab_debian COMMAND...` (lib.sh).

L2_DISK_SUITE=bookworm
L2_DISK_PACKAGES="curl socat python3 fio iperf3 ca-certificates"

# Sets L2_DISK to the image's path in the cache (named by what goes into it).
l2_disk_path() {
    local key
    key=$({
        echo "$L2_DISK_SUITE $L2_DISK_PACKAGES"
        declare -f build_l2_disk
    } | hash_of)
    L2_DISK=$CACHE/images/l2-disk-$key.squashfs
}

build_l2_disk() {
    l2_disk_path
    [[ -f $L2_DISK ]] && return
    PACKAGES="mmdebstrap squashfs-tools-ng" install_packages
    local t0
    t0=$(now)
    note "building the lab host's disk once (mmdebstrap $L2_DISK_SUITE: $L2_DISK_PACKAGES)"
    mkdir -p "$CACHE/images"
    # --variant=essential: dpkg and the essential set, no apt. /lab is a mount point for L2's
    # own /lab, so scenario files are reachable inside.
    mmdebstrap --quiet --variant=essential --format=squashfs \
        --include="${L2_DISK_PACKAGES// /,}" --customize-hook='mkdir -p "$1/lab"' \
        "$L2_DISK_SUITE" "$L2_DISK.part" >&2 || { rm -f "$L2_DISK.part"; die "mmdebstrap failed"; }
    mv "$L2_DISK.part" "$L2_DISK"
    note "the lab host's disk is ready in $(elapsed "$t0") s ($(du -h "$L2_DISK" | cut -f1)): $L2_DISK"
}

# l2-disk [--check]: build the image (or, with --check, only say whether it is cached: exit 0
# and its path, or exit 1).
cmd_l2_disk() {
    if [[ ${1:-} == --check ]]; then
        l2_disk_path
        [[ -f $L2_DISK ]] && { echo "$L2_DISK"; return 0; }
        return 1
    fi
    [[ $# -eq 0 ]] || usage_error "l2-disk: unknown argument $1"
    build_l2_disk
    echo "$L2_DISK"
}
