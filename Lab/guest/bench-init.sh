#!/bin/sh
# Guest (L3) /init for the benchmarks. Its first act is a mark on the boot-timer port (0x440):
# lguest timestamps it; QEMU, given an isa-debug-exit device on that port, exits there. Then
# lguest.bench= on the command line says what else to do:
#   boot    power off at once through the ACPI sleep register (lguest; QEMU has already gone)
#   memory  use every device once (console, disk, network, rng), print LGUEST-BENCH ready,
#           and wait to be measured and killed
#   exits   print LGUEST-BENCH at-init and wait: the lab host reads KVM's exit counters for
#           the boot so far, then kills the VMM
/bin/outb 0x440 1
export PATH=/bin
mount -t proc proc /proc

mode=
for word in $(cat /proc/cmdline); do
    case $word in
    lguest.bench=*) mode=${word#lguest.bench=} ;;
    lguest.host=*) host=${word#lguest.host=} ;;
    esac
done

case $mode in
exits)
    echo "LGUEST-BENCH at-init"
    sleep 3600
    ;;
boot)
    outb 0x600 0x34
    ;;
memory)
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev 2>/dev/null
    load-modules
    for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && [ -c /dev/hvc0 ] && break; sleep 0.2; done
    echo "hvc0 is here" >/dev/hvc0
    dd if=/dev/vda of=/dev/null bs=65536 2>/dev/null
    dd if=/dev/urandom of=/dev/vda bs=65536 count=16 conv=fsync 2>/dev/null
    head -c 64 /dev/hwrng >/dev/null
    ip addr add "${host%.*}.2/24" dev eth0
    ip link set eth0 up
    ping -c 3 -W 2 "$host" >/dev/null 2>&1 && net=ok || net=failed
    echo "LGUEST-BENCH ready net=$net"
    sleep 3600
    ;;
*)
    echo "LGUEST-BENCH-ERROR unknown lguest.bench '$mode'"
    ;;
esac
sleep 2
outb 0x600 0x34
