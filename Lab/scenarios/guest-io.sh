#!/bin/sh
# Guest-visible I/O, side by side in one lab host (Scripts/bench.sh guest-io): lguest and QEMU's
# microvm machine (virtio-mmio devices, QEMU's default back ends, -nodefaults) boot the same
# stock kernel and initramfs (Lab/guest/guest-io-init.sh), one vCPU and 256 MiB each, with the
# same two disks and a TAP, and the guest measures:
#   block  fio, direct=1, libaio, on a 256 MiB scratch disk (a file in the lab host's tmpfs,
#          filled first): 4 KiB random read and write at QD1 and QD32, 1 MiB sequential read
#          and write
#   net    iperf3 TCP both ways against the lab host's iperf3 server, and 200 pings
# Both VMMs' networks run twice, with vhost off and with vhost=on (/dev/vhost-net); the block
# figures come from the vhost-off boots. Runs alternate between the VMMs, GUEST_IO_RUNS times
# (default 3), so drift in the emulator hits all alike. GUEST_IO_POLLS="0 250 ..." adds lguest
# boots with those `--disk ...,poll=` values (block only), to compare queue polling windows, and
# GUEST_IO_WORKERS="0 ..." boots with those `--disk ...,workers=` counts (block only).
#
# The guest runs Debian's fio and iperf3 from the lab host's own disk (lab.sh run
# --with-l2-disk), handed to it read-only through a loop device: lguest serves block devices
# (exclusively, and the mounted disk itself is held by its mount).
#
# Every run is framed by lab_run's markers; Scripts/bench.sh reads the guest's LGUEST-IO lines
# inside them. Emulated time: compare the ratios, not the figures.
# shellcheck source=lib.sh
. "$LAB_LIB"
QEMU=$(lab_qemu) || { echo "LAB-ERROR no qemu-system-x86_64"; exit 1; }
INITRD=$LAB_FILES/guest-io.cpio.gz
RUNS=${GUEST_IO_RUNS:-3}
SECONDS_EACH=${GUEST_IO_SECONDS:-5}
HOST=192.0.2.1
TAP=lgio0
CMDLINE="console=ttyS0 quiet panic=-1 lguest.host=$HOST lguest.seconds=$SECONDS_EACH"

[ -b /dev/vda ] || { echo "LAB-ERROR no lab host disk (lab.sh run --with-l2-disk)"; exit 1; }
TOOLS=$(losetup -f)
losetup -r "$TOOLS" /dev/vda || { echo "LAB-ERROR losetup $TOOLS /dev/vda failed"; exit 1; }
[ -c /dev/vhost-net ] || echo "LAB-WARNING no /dev/vhost-net: the vhost=on runs will fail"

DATA=$LAB_TMP/data.img
dd if=/dev/zero of="$DATA" bs=1048576 count=256 2>/dev/null

tunctl -t "$TAP" >/dev/null
ip addr add "$HOST/24" dev "$TAP"
ip link set "$TAP" up
lab_debian iperf3 -s -D -B "$HOST" >/dev/null 2>&1 || echo "LAB-ERROR iperf3 -s did not start"
echo "LAB-GUEST-IO runs=$RUNS seconds=$SECONDS_EACH tools=$TOOLS data_bytes=$(wc -c <"$DATA")"

lguest_io() { # RUN
    lab_run "io-lguest-$1" "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 1 --memory 256 \
        --disk "$DATA" --disk "$TOOLS,readonly" --net "tap=$TAP" --cmdline "$CMDLINE lguest.io=block,net" </dev/null
}

lguest_poll_io() { # RUN POLL
    lab_run "io-lguest-poll$2-$1" "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 1 --memory 256 \
        --disk "$DATA,poll=$2" --disk "$TOOLS,readonly" --net "tap=$TAP" --cmdline "$CMDLINE lguest.io=block" </dev/null
}

lguest_workers_io() { # RUN WORKERS
    lab_run "io-lguest-workers$2-$1" "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 1 --memory 256 \
        --disk "$DATA,workers=$2" --disk "$TOOLS,readonly" --net "tap=$TAP" --cmdline "$CMDLINE lguest.io=block" </dev/null
}

lguest_vhost_io() { # RUN
    lab_run "io-lguest-vhost-$1" "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 1 --memory 256 \
        --disk "$DATA" --disk "$TOOLS,readonly" --net "tap=$TAP,vhost=on" --cmdline "$CMDLINE lguest.io=net" </dev/null
}

qemu_io() { # RUN VHOST WHAT
    lab_run "io-qemu-vhost-$2-$1" "$QEMU" -M microvm,acpi=on,pit=on,pic=on,rtc=on -enable-kvm -cpu host \
        -m 256 -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -drive id=data,file="$DATA",format=raw,if=none -device virtio-blk-device,drive=data \
        -drive id=tools,file="$TOOLS",format=raw,if=none,readonly=on -device virtio-blk-device,drive=tools \
        -netdev "tap,id=net,ifname=$TAP,script=no,downscript=no,vhost=$2" -device virtio-net-device,netdev=net \
        -kernel "$GUEST_KERNEL" -initrd "$INITRD" -append "$CMDLINE lguest.io=$3" </dev/null
}

i=1
while [ "$i" -le "$RUNS" ]; do
    lguest_io "$i"
    for poll in ${GUEST_IO_POLLS:-}; do lguest_poll_io "$i" "$poll"; done
    for workers in ${GUEST_IO_WORKERS:-}; do lguest_workers_io "$i" "$workers"; done
    lguest_vhost_io "$i"
    qemu_io "$i" off block,net
    qemu_io "$i" on net
    i=$((i + 1))
done
losetup -d "$TOOLS"
