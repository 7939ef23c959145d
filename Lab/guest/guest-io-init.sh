#!/bin/sh
# Guest (L3) /init for the guest-visible I/O benchmarks (Lab/scenarios/guest-io.sh): the same
# initramfs boots under lguest and under QEMU's microvm machine, and every figure is measured
# here, inside the guest, by Debian's own fio and iperf3.
#
# Two disks: a scratch disk to measure (any size but the tools disk's) and the lab host's Debian
# userland (a squashfs, read-only), whose fio and iperf3 run chrooted into it. The guest tells
# them apart by trying to mount each as squashfs.
#
# Command line: lguest.io=block,net (what to measure), lguest.host=ADDR (the lab host on the
# TAP, running `iperf3 -s`), lguest.seconds=N (each fio job and each iperf3 stream).
# Prints LGUEST-IO lines, then LGUEST-IO-DONE, and powers off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
load-modules

what=block,net
host=192.0.2.1
seconds=5
for word in $(cat /proc/cmdline); do
    case $word in
    lguest.io=*) what=${word#lguest.io=} ;;
    lguest.host=*) host=${word#lguest.host=} ;;
    lguest.seconds=*) seconds=${word#lguest.seconds=} ;;
    esac
done

for _ in $(seq 50); do [ -b /dev/vdb ] && break; sleep 0.1; done
mkdir -p /tools
data= tools=
for disk in /dev/vd?; do
    if [ -z "$tools" ] && mount -t squashfs -o ro "$disk" /tools 2>/dev/null; then
        tools=$disk
    else
        data=$disk
    fi
done
if [ -z "$tools" ] || [ -z "$data" ]; then
    echo "LGUEST-IO-ERROR disks: tools=${tools:-none} data=${data:-none} ($(ls /dev/vd? 2>/dev/null | tr '\n' ' '))"
    poweroff -f
fi
mount --bind /dev /tools/dev
mount -t proc proc /tools/proc
mount -t sysfs sysfs /tools/sys
mount -t tmpfs tmpfs /tools/tmp
debian() { chroot /tools /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
echo "LGUEST-IO disks data=$data tools=$tools sectors=$(cat /sys/block/${data#/dev/}/size)"

# fio_job NAME RW BLOCKSIZE DEPTH: one job on the whole scratch disk, direct I/O through libaio,
# after a second of ramp; fio's terse line (version 3) as it is, for the host to read.
fio_job() {
    line=$(debian fio --name="$1" --filename="$data" --rw="$2" --bs="$3" --iodepth="$4" \
        --direct=1 --ioengine=libaio --time_based --runtime="$seconds" --ramp_time=1 \
        --randrepeat=0 --output-format=terse --terse-version=3 2>&1 | grep '^3;')
    echo "LGUEST-IO fio job=$1 ${line:-failed}"
}

case ,$what, in
*,block,*)
    fio_job randread-4k-qd1 randread 4k 1
    fio_job randread-4k-qd32 randread 4k 32
    fio_job randwrite-4k-qd1 randwrite 4k 1
    fio_job randwrite-4k-qd32 randwrite 4k 32
    fio_job read-1m-qd4 read 1m 4
    fio_job write-1m-qd4 write 1m 4
    ;;
esac

case ,$what, in
*,net,*)
    ip addr add "${host%.*}.2/24" dev eth0
    ip link set eth0 up
    for _ in $(seq 50); do ping -c 1 -W 1 "$host" >/dev/null 2>&1 && break; sleep 0.1; done
    # iperf3's summary: the receiver's line carries what arrived. g2h: the guest sends; h2g
    # (-R): the lab host sends.
    for way in g2h h2g; do
        flag=; [ "$way" = h2g ] && flag=-R
        mbps=$(debian iperf3 -c "$host" -t "$seconds" -f m $flag 2>&1 | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1) }')
        echo "LGUEST-IO net tcp=$way mbps=${mbps:-failed}"
    done
    # Round trips of small messages: 200 pings of 56 bytes, 10 ms apart.
    rtt=$(ping -c 200 -i 0.01 -q "$host" 2>&1 | sed -n 's#.*min/avg/max = \([0-9.]*\)/\([0-9.]*\)/\([0-9.]*\).*#min_ms=\1 avg_ms=\2 max_ms=\3#p')
    echo "LGUEST-IO net ping ${rtt:-failed}"
    ;;
esac
echo "LGUEST-IO-DONE"
sync
poweroff -f
