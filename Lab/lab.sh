#!/usr/bin/env bash
# The lab: boots real, unmodified Linux under the VMM on machines whose /dev/kvm cannot run a
# stock kernel. QEMU's software CPU (TCG, -cpu max) emulates AMD SVM, so a Debian kernel run
# there (L2) gets a working /dev/kvm from kvm-amd; the VMM runs in L2 and boots the guest (L3).
# On a host with hardware virtualization the same scenarios run directly. See Lab/README.md.
set -euo pipefail

# A parent can hand down a signal mask that blocks nearly everything, and ignored signals: the
# test runner does (its threads block signals, and Foundation's Process passes that on). QEMU
# would then run with SIGTERM, SIGCHLD and SIGALRM blocked, which no user's shell gives it, and
# `kill` would not stop anything started here. Start again with every signal unblocked and at
# its default (perl-base is part of every Debian system).
if [[ -z ${LAB_SIGNALS_RESET:-} ]] && ! grep -Eq '^SigBlk:[[:space:]]+0+$' /proc/$$/status; then
    export LAB_SIGNALS_RESET=1
    exec perl -e 'use POSIX;
        sigprocmask(SIG_SETMASK, POSIX::SigSet->new) or die "sigprocmask: $!";
        $SIG{$_} = "DEFAULT" for grep { !/^(KILL|STOP|ZERO)$/ } keys %SIG;
        exec @ARGV or die "exec: $!"' -- "$BASH" "$0" "$@"
fi

PROG=lab.sh
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$LAB_DIR")
CACHE=${LGUEST_LAB_CACHE:-$HOME/.cache/lguest-lab}

# What the lab installs from Debian, and the command each package provides.
PACKAGES="qemu-system-x86 busybox-static cpio gzip acpica-tools gcc libc6-dev socat curl"
# The kernel modules L2 needs: kvm for /dev/kvm, tun for the VMM's TAP devices, vhost_net for
# QEMU's vhost=on, loop to hand block devices to guests, virtio and squashfs for its disk
# (Lab/l2-disk.sh). Their dependencies are resolved from the modules.
L2_MODULES="irqbypass kvm kvm-amd tun vhost_net loop virtio_pci virtio_blk squashfs"
# The modules a guest initramfs carries unless told otherwise: every virtio driver the VMM
# offers over virtio-mmio, and pvpanic so that a guest panic reaches the VMM.
# Programs of this host copied with their libraries into guest initramfs images (run --guest-tool).
GUEST_TOOLS=()
GUEST_MODULES="virtio_ring virtio virtio_mmio virtio_blk failover net_failover virtio_net virtio_console virtio-rng pvpanic pvpanic-mmio"
# L2's kernel command line. panic=-1 and QEMU's -no-reboot turn an L2 panic into a QEMU exit.
L2_APPEND="console=ttyS0 quiet panic=-1 mitigations=off"
# QEMU firmware that `-M microvm` (and -kernel loading) needs inside L2.
QEMU_FIRMWARE="bios-microvm.bin qboot.rom linuxboot.bin linuxboot_dma.bin pvh.bin kvmvapic.bin multiboot.bin multiboot_dma.bin"

usage() {
    cat <<EOF
usage: Lab/$PROG COMMAND [OPTIONS]

The lab boots real Linux under the VMM. On this kind of machine (PVM /dev/kvm) it runs the VMM
inside a software-emulated host (QEMU TCG, L2); with hardware virtualization it runs directly.

commands:
  setup [--refresh]
      Install what the lab needs (apt: $PACKAGES) and fetch the
      Debian cloud kernel into the cache. Prints the kernel's path. Fast when already done;
      --refresh looks up the newest linux-image-*-cloud-amd64 again.

  guest-initramfs --init SCRIPT --out FILE [--modules "NAME ..."]
      Build a guest (L3) initramfs: static busybox, /init = SCRIPT, and the named kernel
      modules with their dependencies (loaded in order by /bin/load-modules).
      Default modules: $GUEST_MODULES

  run --vmm PATH --scenario SCRIPT [--guest-init SCRIPT]... [--files DIR] [--env NAME=VALUE]...
      [--host-tool PROGRAM]... [--guest-tool PROGRAM]... [--guest-modules "NAME ..."] [--log FILE] [--timeout SECONDS] [--with-qemu] [--with-l2-disk] [--with-debian-system]
      Run SCRIPT inside the lab host (L2) with LGUEST, GUEST_KERNEL, LAB_FILES and LAB_LIB set.
      --guest-init builds an L3 initramfs from that script into LAB_FILES, named after it:
      check-init.sh -> check.cpio.gz. --with-qemu also puts qemu-system-x86_64 into L2 (for
      -M microvm). --host-tool copies a program of this host (curl, say) with its libraries into
      L2's /lab/bin; --guest-tool copies one into each guest initramfs's /bin, and
      --guest-modules adds kernel modules to the guest's. --with-l2-disk gives L2 the Debian userland of 'l2-disk' (built if need be).
      Exits 0 when the scenario finished (LAB-DONE), 1 when the lab failed, 124 on timeout
      (default ${DEFAULT_TIMEOUT:-900} s), 3 when the emulator froze (no heartbeat from the
      lab host for LAB_FROZEN_AFTER s, default 120; LAB-HOST-FROZEN in the log).
      --with-debian-system gives L2 the image of 'debian-system' as its last disk, and its
      kernel and initrd as debian-vmlinuz and debian-initrd.img in LAB_FILES.

  l2-disk [--check]
      Build the lab host's disk once: Debian $L2_DISK_SUITE with $L2_DISK_PACKAGES
      (mmdebstrap, squashfs; cached). Prints its path. --check: exit 1 unless it is cached.

  debian-system [--check]
      Build a Debian system for lguest once: $DEBIAN_SYSTEM_PACKAGES on an ext4
      root image, with its kernel and initrd beside it (cached). Prints its directory.

  direct --vmm PATH --scenario SCRIPT [--guest-init SCRIPT]... [--files DIR] [--env NAME=VALUE]...
      [--log FILE]
      Run the same scenario on this host, which must have hardware-virtualized /dev/kvm.

  shell [--vmm PATH] [--qemu | --debian] [--memory MIB] [--cpus N]
      Interactive: boot a guest with a busybox shell on its console under the VMM (default
      $REPO_DIR/.build/debug/lguest), in the lab or directly. --qemu boots it under QEMU
      microvm instead. 'poweroff -f' in the guest ends everything. --debian boots the Debian
      system of 'debian-system' (systemd, root on a disk) to a login prompt on ttyS0 instead:
      log in as root (no password); 'poweroff' ends it. In the lab only, for now.

environment:
  LGUEST_LAB_CACHE   cache directory (default \$HOME/.cache/lguest-lab; now $CACHE)
  LGUEST_LAB_MODE    auto (default), lab or direct: where 'shell' runs
EOF
}
DEFAULT_TIMEOUT=900
# Seconds without a heartbeat from the lab host after which lab.sh run takes QEMU for frozen.
FROZEN_AFTER=${LAB_FROZEN_AFTER:-120}
# shellcheck source=l2-disk.sh
. "$LAB_DIR/l2-disk.sh"
# shellcheck source=debian-system.sh
. "$LAB_DIR/debian-system.sh"

die() { echo "$PROG: $*" >&2; exit 2; }
usage_error() { echo "$PROG: $*" >&2; echo "try 'Lab/$PROG --help'" >&2; exit 64; }
note() { echo "$PROG: $*" >&2; }
need_arg() { [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- setup ---------------------------------------------------------------------------------

# The packages of $PACKAGES that are not installed.
missing_packages() {
    local p missing=()
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    echo "${missing[*]}"
}

install_packages() {
    local missing
    missing=$(missing_packages)
    [[ -z $missing ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing packages ($missing): run Lab/$PROG setup as root"
    note "installing $missing"
    # shellcheck disable=SC2086
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2; then
        note "install failed; running apt-get update and trying again"
        apt-get update >&2
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2 ||
            die "apt-get install $missing failed"
    fi
}

# The version (e.g. 6.1.0-56-cloud-amd64) that linux-image-cloud-amd64 currently depends on.
resolve_kernel_version() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: linux-image-\([^ ]*-cloud-amd64\)$/\1/p' | head -n 1
}

fetch_kernel() { # VERSION
    local v=$1 dir=$CACHE/kernel/$1 tmp
    [[ -e $dir/.done ]] && return 0
    note "downloading linux-image-$v"
    tmp=$(mktemp -d)
    # apt-get download drops privileges to _apt: give it a directory it may write.
    chmod 755 "$tmp"
    chown _apt "$tmp" 2>/dev/null || true
    if ! (cd "$tmp" && apt-get download "linux-image-$v" >&2); then
        rm -rf "$tmp"
        die "apt-get download linux-image-$v failed"
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -x "$tmp"/linux-image-*.deb "$dir" || { rm -rf "$tmp"; die "dpkg-deb -x failed"; }
    rm -rf "$tmp"
    [[ -f $dir/boot/vmlinuz-$v ]] || die "the package has no boot/vmlinuz-$v"
    touch "$dir/.done"
}

cmd_setup() {
    local refresh=false v
    while [[ $# -gt 0 ]]; do
        case $1 in
        --refresh) refresh=true ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "setup: unknown argument $1" ;;
        esac
        shift
    done
    install_packages
    mkdir -p "$CACHE"
    v=$(cat "$CACHE/kernel-version" 2>/dev/null || true)
    if $refresh || [[ -z $v || ! -e $CACHE/kernel/$v/.done ]]; then
        v=$(resolve_kernel_version)
        if [[ -z $v ]]; then
            note "apt-cache knows no linux-image-cloud-amd64; running apt-get update"
            apt-get update >&2 || die "apt-get update failed"
            v=$(resolve_kernel_version)
            [[ -n $v ]] || die "cannot resolve linux-image-cloud-amd64 to a kernel version"
        fi
        fetch_kernel "$v"
        echo "$v" >"$CACHE/kernel-version"
    fi
    echo "$CACHE/kernel/$v/boot/vmlinuz-$v"
}

# Checks that setup was done and sets KVER, KERNEL, MODDIR.
require_setup() {
    local p
    for p in cpio gzip; do
        command -v "$p" >/dev/null || die "$p not found: run Lab/$PROG setup"
    done
    if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
        die "no static /bin/busybox (busybox-static): run Lab/$PROG setup"
    fi
    KVER=$(cat "$CACHE/kernel-version" 2>/dev/null || true)
    [[ -n $KVER && -e $CACHE/kernel/$KVER/.done ]] || die "no kernel in $CACHE: run Lab/$PROG setup"
    KERNEL=$CACHE/kernel/$KVER/boot/vmlinuz-$KVER
    MODDIR=$CACHE/kernel/$KVER/lib/modules/$KVER
}

require_qemu() {
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run Lab/$PROG setup"
}

# --- building initramfs images ---------------------------------------------------------------

# A kernel module's file name or dependency name, normalized: kvm-amd and kvm_amd are one module.
modname() { local n=${1##*/}; n=${n%%.ko*}; echo "${n//-/_}"; }

# The modules that MODULE depends on, comma-separated, from the module's .modinfo section.
module_depends() { # FILE
    local f=$1
    if command -v modinfo >/dev/null && modinfo -F depends "$f" 2>/dev/null; then return; fi
    case $f in
    *.xz) xz -dc "$f" ;;
    *.zst) zstd -qdc "$f" ;;
    *.gz) gzip -dc "$f" ;;
    *) cat "$f" ;;
    esac | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n 1
}

declare -A MODULE_FILE=()
index_modules() {
    [[ ${#MODULE_FILE[@]} -gt 0 ]] && return
    local f
    while IFS= read -r f; do
        MODULE_FILE[$(modname "$f")]=$f
    done < <(cd "$MODDIR" && find kernel -name '*.ko*')
}

# Appends MODULE and then what it depends on, dependencies first, to MODULE_ORDER.
declare -A MODULE_SEEN=()
MODULE_ORDER=()
resolve_module() { # NAME
    local n d deps
    n=$(modname "$1")
    [[ -n ${MODULE_SEEN[$n]:-} ]] && return
    MODULE_SEEN[$n]=1
    if [[ -z ${MODULE_FILE[$n]:-} ]]; then
        # Built into the kernel: nothing to load.
        sed 's/-/_/g' "$MODDIR/modules.builtin" | grep -q "/$n\.ko" && return
        die "kernel $KVER has no module $1"
    fi
    deps=$(module_depends "$MODDIR/${MODULE_FILE[$n]}")
    for d in ${deps//,/ }; do resolve_module "$d"; done
    MODULE_ORDER+=("${MODULE_FILE[$n]}")
}

# Copies the modules NAMES and their dependencies into STAGE, uncompressed, and writes
# /etc/modules-order (one path a line, dependencies first) and /bin/load-modules.
add_modules() { # STAGE NAMES
    local stage=$1 names=$2 m rel dst
    index_modules
    MODULE_SEEN=()
    MODULE_ORDER=()
    for m in $names; do resolve_module "$m"; done
    mkdir -p "$stage/etc" "$stage/bin"
    : >"$stage/etc/modules-order"
    for m in "${MODULE_ORDER[@]}"; do
        rel=${m%.xz}
        rel=${rel%.zst}
        rel=${rel%.gz}
        dst=/lib/modules/$KVER/$rel
        mkdir -p "$stage$(dirname "$dst")"
        case $m in
        *.xz) xz -dc "$MODDIR/$m" >"$stage$dst" ;;
        *.zst) zstd -qdc "$MODDIR/$m" >"$stage$dst" ;;
        *.gz) gzip -dc "$MODDIR/$m" >"$stage$dst" ;;
        *) cp "$MODDIR/$m" "$stage$dst" ;;
        esac
        echo "$dst" >>"$stage/etc/modules-order"
    done
    cat >"$stage/bin/load-modules" <<'EOF'
#!/bin/sh
# Loads the kernel modules in /etc/modules-order, in that order (dependencies first).
status=0
[ -r /etc/modules-order ] || exit 0
while read -r m; do
    [ -n "$m" ] || continue
    n=${m##*/}
    n=$(echo "${n%.ko}" | tr - _)
    grep -q "^$n " /proc/modules 2>/dev/null && continue
    insmod "$m" || { echo "load-modules: insmod $m failed" >&2; status=1; }
done </etc/modules-order
exit $status
EOF
    chmod 755 "$stage/bin/load-modules"
}

# A minimal root: busybox and its applets in /bin, the usual directories, console and null.
add_busybox() { # STAGE
    local stage=$1 a
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,run,etc,root,usr}
    ln -sfn bin "$stage/sbin"
    ln -sfn ../bin "$stage/usr/bin"
    ln -sfn ../bin "$stage/usr/sbin"
    cp /bin/busybox "$stage/bin/busybox"
    for a in $(/bin/busybox --list); do
        [[ $a == busybox || -e $stage/bin/$a ]] || ln -s busybox "$stage/bin/$a"
    done
    # The kernel opens /dev/console for init before anything is mounted.
    if [[ $(id -u) -eq 0 ]]; then
        mknod -m 600 "$stage/dev/console" c 5 1
        mknod -m 666 "$stage/dev/null" c 1 3
    fi
    echo 'root:x:0:0:root:/root:/bin/sh' >"$stage/etc/passwd"
    echo 'root:x:0:' >"$stage/etc/group"
}

# Packs STAGE into a newc cpio, gzip -1, at OUT.
pack() { # STAGE OUT
    # Written aside and renamed: a concurrent lab run never sees half an image.
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$2.$$.tmp"
    mv "$2.$$.tmp" "$2"
}

# Copies a dynamically linked PROGRAM's libraries into STAGE at their own paths, and appends the
# directories they are in to STAGE/lab/etc/libdirs.
add_libraries() { # STAGE PROGRAM
    local stage=$1 prog=$2 lib
    ldd "$prog" >/dev/null 2>&1 || return 0 # static
    mkdir -p "$stage/lab/etc"
    for lib in $(ldd "$prog" | grep -o '/[^ ]*'); do
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
        dirname "$lib" >>"$stage/lab/etc/libdirs"
    done
    sort -u -o "$stage/lab/etc/libdirs" "$stage/lab/etc/libdirs"
}

hash_of() { sha256sum | cut -c1-16; }

# The guest's own tools beside busybox: /bin/outb (Lab/guest/outb.c) writes an I/O port, for
# the boot timer and the power registers; /bin/vsock-duplex (Lab/guest/vsock-duplex.c) streams
# through a vsock echo in both directions at once; /bin/mmio-attack (Lab/guest/mmio-attack.c) is
# the hostile-guest scenario's attacker.
add_guest_tools() { # STAGE
    command -v gcc >/dev/null || die "gcc not found: run Lab/$PROG setup"
    gcc -static -nostdlib -Os -fno-stack-protector -fno-pie -no-pie -fcf-protection=none \
        -o "$1/bin/outb" "$LAB_DIR/guest/outb.c" || die "cannot build $LAB_DIR/guest/outb.c"
    gcc -static -O2 -o "$1/bin/vsock-duplex" "$LAB_DIR/guest/vsock-duplex.c" ||
        die "cannot build $LAB_DIR/guest/vsock-duplex.c"
    gcc -static -O2 -o "$1/bin/mmio-attack" "$LAB_DIR/guest/mmio-attack.c" ||
        die "cannot build $LAB_DIR/guest/mmio-attack.c"
}

# A guest (L3) initramfs. Cached by content.
build_guest_initramfs() { # INIT OUT MODULES
    local init=$1 out=$2 modules=$3 key stage cached
    [[ -f $init ]] || die "no such init script: $init"
    key=$({
        echo "$KVER $modules"
        cat "$init"
        declare -f add_busybox add_modules add_guest_tools pack
        cat "$LAB_DIR/guest/outb.c" "$LAB_DIR/guest/vsock-duplex.c" "$LAB_DIR/guest/mmio-attack.c"
        sha256sum /bin/busybox
        for t in "${GUEST_TOOLS[@]}"; do sha256sum "$(command -v "$t")"; done
    } | hash_of)
    cached=$CACHE/images/guest-$key.cpio.gz
    if [[ ! -f $cached ]]; then
        stage=$(mktemp -d)
        add_busybox "$stage"
        add_modules "$stage" "$modules"
        add_guest_tools "$stage"
        for t in "${GUEST_TOOLS[@]}"; do
            # A busybox applet of the same name is a symlink: replace it, never write through it.
            rm -f "$stage/bin/$t"
            cp -L "$(command -v "$t")" "$stage/bin/$t"
            add_libraries "$stage" "$(command -v "$t")"
        done
        cp "$init" "$stage/init"
        chmod 755 "$stage/init"
        mkdir -p "$CACHE/images"
        pack "$stage" "$cached"
        rm -rf "$stage"
    fi
    cp "$cached" "$out"
}

# L2's base image: busybox, the kvm modules, the guest kernel. Cached by content.
build_l2_base() {
    local key stage
    key=$({
        echo "$KVER $L2_MODULES"
        declare -f build_l2_base add_busybox add_modules pack
        sha256sum /bin/busybox
    } | hash_of)
    L2_BASE=$CACHE/images/l2-base-$key.cpio.gz
    [[ -f $L2_BASE ]] && return
    stage=$(mktemp -d)
    add_busybox "$stage"
    add_modules "$stage" "$L2_MODULES"
    mkdir -p "$stage/lab/guest" "$stage/lab/bin" "$stage/lab/files"
    cp "$KERNEL" "$stage/lab/guest/vmlinuz"
    mkdir -p "$CACHE/images"
    pack "$stage" "$L2_BASE"
    rm -rf "$stage"
}

# QEMU for inside L2: the binary at /lab/bin, its libraries, the firmware -M microvm loads.
build_l2_qemu() {
    # QEMU finds its firmware relative to its binary: /lab/bin/../share/qemu.
    local qemu key stage f datadir=/usr/share/qemu
    qemu=$(command -v qemu-system-x86_64)
    key=$({
        sha256sum "$qemu"
        declare -f build_l2_qemu add_libraries pack
        echo "$QEMU_FIRMWARE"
    } | hash_of)
    L2_QEMU=$CACHE/images/l2-qemu-$key.cpio.gz
    [[ -f $L2_QEMU ]] && return
    stage=$(mktemp -d)
    mkdir -p "$stage/lab/bin" "$stage/lab/share/qemu"
    cp "$qemu" "$stage/lab/bin/qemu-system-x86_64"
    add_libraries "$stage" "$qemu"
    for f in $QEMU_FIRMWARE; do
        if [[ -e $datadir/$f ]]; then cp -L "$datadir/$f" "$stage/lab/share/qemu/$f"; fi
    done
    pack "$stage" "$L2_QEMU"
    rm -rf "$stage"
}

# The VMM under test at /lab/bin/lguest, with its libraries. Cached by content.
build_l2_vmm() { # VMM
    local vmm=$1 key stage
    key=$({
        sha256sum "$vmm"
        ldd "$vmm" 2>/dev/null | grep -o '/[^ ]*' | xargs -r sha256sum
        declare -f build_l2_vmm add_libraries pack
    } | hash_of)
    L2_VMM=$CACHE/images/l2-vmm-$key.cpio.gz
    [[ -f $L2_VMM ]] && return
    stage=$(mktemp -d)
    mkdir -p "$stage/lab/bin"
    cp "$vmm" "$stage/lab/bin/lguest"
    add_libraries "$stage" "$vmm"
    pack "$stage" "$L2_VMM"
    rm -rf "$stage"
    # Keep the cache from growing without bound: one build per binary is plenty.
    find "$CACHE/images" -name 'l2-vmm-*.cpio.gz' -mmin +1440 -delete 2>/dev/null || true
}

# L2's /init. MODE: batch (scenario stdin is /dev/null) or interactive (the console is a tty).
write_l2_init() { # FILE
    cat >"$1" <<'EOF'
#!/bin/sh
# L2 (the lab host) init, written by Lab/lab.sh.
export PATH=/lab/bin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
# lguest keeps expanded kernels in the user's cache directory (its kernel cache). The lab host
# has none: its guests boot their bzImages as they are unless a scenario names a cache
# (--kernel-cache). Booted from the cache, Debian guests failed 3 of 7 boots on the lab's
# emulated SVM (triple faults, a hang), against none of 12 as bzImages (Lab/README.md).
unset HOME XDG_CACHE_HOME
up() { cut -d' ' -f1 /proc/uptime; }
echo "LAB-L2-UP uptime=$(up)"
load-modules
if [ ! -c /dev/kvm ]; then
    echo "LAB-ERROR no /dev/kvm"
    poweroff -f
fi
# The lab host's disk (Lab/l2-disk.sh), when QEMU was given one: a Debian userland at
# /lab/debian, with L2's /proc, /sys, /dev, /tmp, /run and /lab inside it for chroot.
if [ -e /lab/etc/l2-disk ]; then
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do [ -b /dev/vda ] && break; sleep 0.2; done
    if mkdir -p /lab/debian && mount -t squashfs -o ro /dev/vda /lab/debian; then
        for d in proc sys dev tmp run lab; do mount --bind "/$d" "/lab/debian/$d"; done
        echo "LAB-L2-DISK uptime=$(up)"
    else
        echo "LAB-ERROR the lab host's disk did not mount"
    fi
fi
ip link set lo up 2>/dev/null
if ls /lab/etc/libdirs* >/dev/null 2>&1; then
    LD_LIBRARY_PATH=$(cat /lab/etc/libdirs* | sort -u | tr '\n' ':')
    export LD_LIBRARY_PATH=${LD_LIBRARY_PATH%:}
fi
export LGUEST=/lab/bin/lguest GUEST_KERNEL=/lab/guest/vmlinuz LAB_FILES=/lab/files LAB_LIB=/lab/lib.sh
export HOME=/root TERM=${TERM:-linux}
[ -r /lab/etc/env ] && . /lab/etc/env
chmod 755 /lab/scenario.sh
# A heartbeat on the second serial port, which lab.sh run watches: an emulator that has frozen
# (it happens, rarely, to QEMU's software CPU under nested SVM) stops it, a busy lab host does not.
if [ -c /dev/ttyS1 ]; then
    (while :; do up >/dev/ttyS1; sleep 5; done) </dev/null >/dev/null 2>&1 &
fi
echo "LAB-SCENARIO-START uptime=$(up)"
if [ "$(cat /lab/etc/mode)" = interactive ]; then
    # Keep L2's kernel messages off the terminal the guest's shell is using.
    dmesg -n 1
    # A session of its own with ttyS0 as its controlling terminal, so the VMM can put its
    # stdin in raw mode and job control works in the guest's shell.
    (exec setsid cttyhack /lab/scenario.sh)
else
    # L2's own messages would land in the middle of the guests' console lines: warnings and
    # worse only.
    dmesg -n 5
    /lab/scenario.sh </dev/null
fi
echo "LAB-DONE status=$? uptime=$(up)"
sync
poweroff -f
EOF
    chmod 755 "$1"
}

# --- run / direct ------------------------------------------------------------------------------

# Parses the options run, direct and shell share. Sets VMM SCENARIO FILES LOG TIMEOUT WITH_QEMU
# GUEST_INITS ENVS.
parse_run_options() {
    VMM='' SCENARIO='' FILES='' LOG='' TIMEOUT=$DEFAULT_TIMEOUT WITH_QEMU=false WITH_L2_DISK=false WITH_DEBIAN_SYSTEM=false
    GUEST_INITS=() ENVS=() HOST_TOOLS=() GUEST_TOOLS=() GUEST_EXTRA_MODULES=''
    while [[ $# -gt 0 ]]; do
        case $1 in
        --vmm) need_arg "$@"; VMM=$2; shift ;;
        --vmm=*) VMM=${1#*=} ;;
        --scenario) need_arg "$@"; SCENARIO=$2; shift ;;
        --scenario=*) SCENARIO=${1#*=} ;;
        --guest-init) need_arg "$@"; GUEST_INITS+=("$2"); shift ;;
        --guest-init=*) GUEST_INITS+=("${1#*=}") ;;
        --files) need_arg "$@"; FILES=$2; shift ;;
        --files=*) FILES=${1#*=} ;;
        --env) need_arg "$@"; ENVS+=("$2"); shift ;;
        --host-tool) need_arg "$@"; HOST_TOOLS+=("$2"); shift ;;
        --host-tool=*) HOST_TOOLS+=("${1#*=}") ;;
        --guest-tool) need_arg "$@"; GUEST_TOOLS+=("$2"); shift ;;
        --guest-tool=*) GUEST_TOOLS+=("${1#*=}") ;;
        --guest-modules) need_arg "$@"; GUEST_EXTRA_MODULES+=" $2"; shift ;;
        --guest-modules=*) GUEST_EXTRA_MODULES+=" ${1#*=}" ;;
        --env=*) ENVS+=("${1#*=}") ;;
        --log) need_arg "$@"; LOG=$2; shift ;;
        --log=*) LOG=${1#*=} ;;
        --timeout) need_arg "$@"; TIMEOUT=$2; shift ;;
        --timeout=*) TIMEOUT=${1#*=} ;;
        --with-qemu) WITH_QEMU=true ;;
        --with-l2-disk) WITH_L2_DISK=true ;;
        --with-debian-system) WITH_DEBIAN_SYSTEM=true ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "$CMD: unknown argument $1" ;;
        esac
        shift
    done
    [[ -n $VMM || ${ALLOW_NO_VMM:-false} == true ]] || usage_error "$CMD: --vmm PATH is required"
    [[ -n $SCENARIO ]] || usage_error "$CMD: --scenario SCRIPT is required"
    [[ -z $VMM || (-f $VMM && -x $VMM) ]] || die "VMM binary $VMM does not exist or is not executable (swift build?)"
    [[ -f $SCENARIO ]] || die "no such scenario: $SCENARIO"
    [[ -z $FILES || -d $FILES ]] || die "--files $FILES is not a directory"
    [[ $TIMEOUT =~ ^[0-9]+$ && $TIMEOUT -gt 0 ]] || usage_error "--timeout needs a number of seconds"
    local e
    for e in "${ENVS[@]}"; do
        [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || usage_error "--env wants NAME=VALUE, not $e"
    done
    for e in "${GUEST_INITS[@]}"; do [[ -f $e ]] || die "no such guest init: $e"; done
    local t
    for t in "${HOST_TOOLS[@]}"; do
        command -v "$t" >/dev/null || die "--host-tool $t: no such program on this host"
    done
    for t in "${GUEST_TOOLS[@]}"; do
        command -v "$t" >/dev/null || die "--guest-tool $t: no such program on this host"
    done
}

# Copies each --host-tool program into STAGE/lab/bin with its libraries; their library
# directories go to STAGE/lab/etc/libdirs.tools (the VMM's own list is libdirs).
add_host_tools() { # STAGE
    local stage=$1 t path
    ((${#HOST_TOOLS[@]})) || return 0
    mkdir -p "$stage/lab/bin" "$stage/lab/etc"
    for t in "${HOST_TOOLS[@]}"; do
        path=$(command -v "$t")
        cp -L "$path" "$stage/lab/bin/$(basename "$path")"
        add_libraries "$stage" "$path"
    done
    [[ -f $stage/lab/etc/libdirs ]] && mv "$stage/lab/etc/libdirs" "$stage/lab/etc/libdirs.tools"
    return 0
}

# Fills DIR with the --files and the guest initramfs images built from --guest-init scripts.
stage_files() { # DIR
    local dir=$1 init name
    mkdir -p "$dir"
    [[ -n $FILES ]] && cp -a "$FILES/." "$dir/"
    for init in "${GUEST_INITS[@]}"; do
        name=$(basename "$init")
        name=${name%.sh}
        name=${name%-init}
        build_guest_initramfs "$init" "$dir/$name.cpio.gz" "$GUEST_MODULES$GUEST_EXTRA_MODULES"
    done
}

# Writes NAME=VALUE assignments as a sourceable file.
write_env() { # FILE
    local e
    : >"$1"
    for e in "${ENVS[@]}"; do
        printf 'export %s=%q\n' "${e%%=*}" "${e#*=}" >>"$1"
    done
}

# Hardware-virtualized /dev/kvm: not PVM, and the CPU has VMX or SVM.
have_hardware_kvm() {
    [[ -c /dev/kvm && ! -e /sys/module/kvm_pvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo
}

# Builds L2's initramfs for MODE into WORK/l2.cpio.gz.
build_l2() { # WORK MODE
    local work=$1 mode=$2 t0 stage
    t0=$(now)
    build_l2_base
    local parts=("$L2_BASE")
    if [[ -n $VMM ]]; then
        build_l2_vmm "$VMM"
        parts+=("$L2_VMM")
    fi
    stage=$work/run
    mkdir -p "$stage/lab/etc"
    write_l2_init "$stage/init"
    cp "$SCENARIO" "$stage/lab/scenario.sh"
    cp "$LAB_DIR/scenarios/lib.sh" "$stage/lab/lib.sh"
    echo "$mode" >"$stage/lab/etc/mode"
    if $WITH_L2_DISK; then touch "$stage/lab/etc/l2-disk"; fi
    write_env "$stage/lab/etc/env"
    stage_files "$stage/lab/files"
    add_host_tools "$stage"
    if $WITH_DEBIAN_SYSTEM; then
        build_debian_system
        cp "$DEBIAN_SYSTEM/vmlinuz" "$stage/lab/files/debian-vmlinuz"
        cp "$DEBIAN_SYSTEM/initrd.img" "$stage/lab/files/debian-initrd.img"
    fi
    pack "$stage" "$work/run.cpio.gz"
    if $WITH_QEMU; then
        build_l2_qemu
        parts+=("$L2_QEMU")
    fi
    parts+=("$work/run.cpio.gz")
    # The kernel unpacks concatenated cpio archives one after another.
    cat "${parts[@]}" >"$work/l2.cpio.gz"
    note "L2 initramfs ready in $(elapsed "$t0") s ($(du -h "$work/l2.cpio.gz" | cut -f1))"
}

# QEMU's command line for L2 with INITRD. No -enable-kvm: the lab host is emulated (TCG), and
# -cpu max gives it SVM. -vga none and -nic none: no option ROMs to find, nothing to drive.
qemu_l2_command() { # INITRD
    QEMU_COMMAND=(qemu-system-x86_64 -M q35 -accel tcg -cpu max -smp 2 -m 2048 -nographic -no-reboot
        -vga none -nic none -kernel "$KERNEL" -initrd "$1" -append "$L2_APPEND")
    if $WITH_L2_DISK; then
        QEMU_COMMAND+=(-drive "file=$L2_DISK,if=virtio,format=raw,readonly=on")
    fi
    # The Debian system's root image, L2's last disk; snapshot=on keeps the cached image as built.
    if $WITH_DEBIAN_SYSTEM; then
        QEMU_COMMAND+=(-drive "file=$DEBIAN_SYSTEM/root.img,if=virtio,format=raw,snapshot=on")
    fi
}

cmd_run() {
    CMD=run
    parse_run_options "$@"
    require_setup
    require_qemu
    local work rc t0
    work=$(mktemp -d)
    WORK=$work
    trap 'rm -rf "$WORK"' EXIT
    build_l2 "$work" batch
    if $WITH_L2_DISK; then build_l2_disk; fi
    [[ -n $LOG ]] && mkdir -p "$(dirname "$LOG")"
    local log=${LOG:-$work/serial.log} kept=${LOG:-"not kept (use --log)"}
    t0=$(now)
    set +e
    qemu_l2_command "$work/l2.cpio.gz"
    # The console on stdio as -nographic would put it, and the lab host's heartbeat (write_l2_init)
    # on a second serial port, into a file that watch_heartbeat reads.
    QEMU_COMMAND+=(-serial mon:stdio -serial "file:$work/heartbeat" -pidfile "$work/qemu.pid")
    : >"$work/heartbeat"
    watch_heartbeat "$work" &
    local watcher=$!
    # --foreground: QEMU stays in this process group, so Ctrl-C reaches it.
    timeout --foreground -k 10 "$TIMEOUT" "${QEMU_COMMAND[@]}" </dev/null 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    kill -KILL "$watcher" 2>/dev/null
    wait "$watcher" 2>/dev/null
    set -e
    note "QEMU ran $(elapsed "$t0") s"
    if [[ -s $work/frozen ]]; then
        # Into the serial log too, where Tests/LabTests looks for why a scenario stopped.
        {
            echo "LAB-HOST-FROZEN $(head -n 1 "$work/frozen")"
            tail -n +2 "$work/frozen" | sed 's/^ */LAB-HOST-FROZEN-THREAD /'
        } | tee -a "$log"
        note "the lab host froze: $(head -n 1 "$work/frozen")"
        exit 3
    fi
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        note "the lab timed out after $TIMEOUT s; serial log: $kept"
        exit 124
    fi
    if grep -q 'LAB-ERROR' "$log"; then
        note "the lab failed: $(grep -m1 -o 'LAB-ERROR.*' "$log" | tr -d '\r')"
        exit 1
    fi
    if ! grep -q 'LAB-DONE' "$log"; then
        note "L2 stopped before the scenario finished (QEMU exit $rc); serial log: $kept"
        exit 1
    fi
}

# watch_heartbeat WORK
# While QEMU runs: when the lab host's heartbeat (WORK/heartbeat) has not grown for FROZEN_AFTER
# seconds (longer before its first beat, while the lab host boots), the emulator has frozen: its
# threads go into WORK/frozen, after one line that says so, and QEMU is killed.
watch_heartbeat() { # WORK
    local work=$1 size=0 current last quiet limit pid
    last=$(date +%s)
    while sleep 5; do
        current=$(stat -c %s "$work/heartbeat" 2>/dev/null || echo 0)
        if [[ $current != "$size" ]]; then
            size=$current last=$(date +%s)
            continue
        fi
        limit=$FROZEN_AFTER
        [[ $size -eq 0 ]] && limit=$((FROZEN_AFTER + 240))
        quiet=$(($(date +%s) - last))
        ((quiet >= limit)) || continue
        pid=$(cat "$work/qemu.pid" 2>/dev/null) || return 0
        {
            echo "no heartbeat from the lab host for $quiet s; QEMU (pid $pid) killed"
            for task in /proc/"$pid"/task/*; do
                echo "  ${task##*/} $(cat "$task/comm" 2>/dev/null) $(awk '{ print $3, "utime=" $14, "stime=" $15 }' "$task/stat" 2>/dev/null) $(cat "$task/wchan" 2>/dev/null)"
            done
        } >"$work/frozen.tmp"
        mv "$work/frozen.tmp" "$work/frozen"
        kill -KILL "$pid" 2>/dev/null
        return 0
    done
}

# Runs SCENARIO on this host with the environment it gets in the lab; WORK holds files and env.
run_scenario_here() { # WORK
    local work=$1 vmm=''
    [[ -n $VMM ]] && vmm=$(realpath "$VMM")
    (
        # shellcheck disable=SC1091
        . "$work/env"
        export LGUEST=$vmm GUEST_KERNEL=$KERNEL LAB_FILES=$work/files LAB_LIB=$LAB_DIR/scenarios/lib.sh
        exec sh "$SCENARIO"
    )
}

cmd_direct() {
    CMD=direct
    parse_run_options "$@"
    require_setup
    have_hardware_kvm || die "direct needs a hardware-virtualized /dev/kvm (this host's is missing or PVM): use Lab/$PROG run"
    local work rc
    work=$(mktemp -d)
    WORK=$work
    trap 'rm -rf "$WORK"' EXIT
    stage_files "$work/files"
    write_env "$work/env"
    set +e
    {
        run_scenario_here "$work" </dev/null
        echo "LAB-DONE status=$?"
    } 2>&1 | if [[ -n $LOG ]]; then mkdir -p "$(dirname "$LOG")" && tee "$LOG"; else cat; fi
    rc=${PIPESTATUS[0]}
    set -e
    exit "$rc"
}

# --- shell ---------------------------------------------------------------------------------------

cmd_shell() {
    local vmm=$REPO_DIR/.build/debug/lguest use_qemu=false debian=false memory=256 cpus=2 mode=${LGUEST_LAB_MODE:-auto}
    while [[ $# -gt 0 ]]; do
        case $1 in
        --vmm) need_arg "$@"; vmm=$2; shift ;;
        --vmm=*) vmm=${1#*=} ;;
        --qemu) use_qemu=true ;;
        --debian) debian=true ;;
        --memory) need_arg "$@"; memory=$2; shift ;;
        --cpus) need_arg "$@"; cpus=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "shell: unknown argument $1" ;;
        esac
        shift
    done
    CMD=shell
    local args=(--scenario "$LAB_DIR/scenarios/shell.sh" --guest-init "$LAB_DIR/guest/shell-init.sh"
        --env "SHELL_MEMORY=$memory" --env "SHELL_CPUS=$cpus")
    if $debian; then
        $use_qemu && usage_error "shell: --debian boots under lguest only"
        args+=(--with-debian-system --env SHELL_SYSTEM=debian)
    fi
    if $use_qemu; then
        args+=(--with-qemu --env SHELL_VMM=qemu)
        # The VMM is not needed; take it along when it is there.
        [[ -x $vmm ]] && args+=(--vmm "$vmm")
    else
        args+=(--vmm "$vmm")
    fi
    ALLOW_NO_VMM=$use_qemu parse_run_options "${args[@]}"
    require_setup
    case $mode in
    auto) have_hardware_kvm && mode=direct || mode=lab ;;
    lab | direct) ;;
    *) die "LGUEST_LAB_MODE must be auto, lab or direct, not $mode" ;;
    esac
    local work
    work=$(mktemp -d)
    WORK=$work
    trap 'rm -rf "$WORK"' EXIT
    if [[ $mode == direct ]]; then
        $debian && die "shell --debian runs in the lab for now (its root disk is one of the lab host's disks)"
        stage_files "$work/files"
        write_env "$work/env"
        run_scenario_here "$work"
        return
    fi
    require_qemu
    build_l2 "$work" interactive
    note "booting the lab host, then the guest (seconds to tens of seconds); 'poweroff -f' in the guest ends it; Ctrl-] x kills the lab"
    qemu_l2_command "$work/l2.cpio.gz"
    # Ctrl-] rather than Ctrl-A as this QEMU's escape, so that Ctrl-A reaches lguest.
    "${QEMU_COMMAND[@]}" -echr 0x1d
}

cmd_guest_initramfs() {
    local init='' out='' modules=$GUEST_MODULES
    while [[ $# -gt 0 ]]; do
        case $1 in
        --init) need_arg "$@"; init=$2; shift ;;
        --init=*) init=${1#*=} ;;
        --out) need_arg "$@"; out=$2; shift ;;
        --out=*) out=${1#*=} ;;
        --modules) [[ $# -ge 2 ]] || usage_error "--modules needs a value"; modules=$2; shift ;;
        --modules=*) modules=${1#*=} ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "guest-initramfs: unknown argument $1" ;;
        esac
        shift
    done
    [[ -n $init ]] || usage_error "guest-initramfs: --init SCRIPT is required"
    [[ -n $out ]] || usage_error "guest-initramfs: --out FILE is required"
    require_setup
    build_guest_initramfs "$init" "$out" "$modules"
    echo "$out"
}

main() {
    [[ $# -gt 0 ]] || { usage >&2; exit 64; }
    local cmd=$1
    shift
    case $cmd in
    setup) cmd_setup "$@" ;;
    guest-initramfs) cmd_guest_initramfs "$@" ;;
    run) cmd_run "$@" ;;
    direct) cmd_direct "$@" ;;
    shell) cmd_shell "$@" ;;
    l2-disk) cmd_l2_disk "$@" ;;
    debian-system) cmd_debian_system "$@" ;;
    -h | --help | help) usage ;;
    *) usage_error "unknown command $cmd" ;;
    esac
}

main "$@"
