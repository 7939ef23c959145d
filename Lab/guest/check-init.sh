#!/bin/sh
# Guest (L3) /init for the lab's boot checks. It reports what the guest sees in one line,
#   LGUEST-CHECK cpus=N memtotal_kb=N cmdline=THE KERNEL COMMAND LINE
# then does what the command line's lguest.action= asks: poweroff, reboot or panic.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "LGUEST-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"

# Virtio drivers, and pvpanic: loaded before any panic, so that the VMM hears of it.
load-modules

cpus=$(grep -c '^processor' /proc/cpuinfo 2>/dev/null) || cpus=$(nproc)
memtotal_kb=$(sed -n 's/^MemTotal: *\([0-9]*\) kB$/\1/p' /proc/meminfo)
cmdline=$(cat /proc/cmdline)
echo "LGUEST-CHECK cpus=$cpus memtotal_kb=$memtotal_kb cmdline=$cmdline"
# The kernel's own log, which `quiet` keeps off the console: its FPU setup, and how many
# warnings (WARN_ON's "WARNING:" lines and their "Call Trace:") it printed while booting.
dmesg | grep -e 'x86/fpu' -e 'XSAVE' -e 'WARNING:' | sed 's/^/LGUEST-DMESG /'
echo "LGUEST-LOG warnings=$(dmesg | grep -c -e 'WARNING:' -e 'Call Trace:') unknown_parameters=$(dmesg | grep -c 'unknown parameter')"

action=
set -f
for word in $cmdline; do
    case $word in
    lguest.action=*) action=${word#lguest.action=} ;;
    esac
done
set +f

case $action in
poweroff) poweroff -f ;;
reboot) reboot -f ;;
panic)
    echo 1 >/proc/sys/kernel/sysrq
    echo c >/proc/sysrq-trigger
    ;;
*) echo "LGUEST-CHECK-ERROR unknown lguest.action '$action'" ;;
esac
# Not reached unless the action failed; returning from init would panic the guest.
sleep 2
poweroff -f
