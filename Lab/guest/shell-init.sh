#!/bin/sh
# Guest (L3) /init for `lab.sh shell`: a busybox shell on the console, with job control.
export PATH=/bin HOME=/root TERM=linux PS1='guest# '
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
load-modules
hostname guest
dmesg -n 1

cat <<BANNER

  guest: Linux $(uname -r), $(grep -c '^processor' /proc/cpuinfo) CPU(s), $(sed -n 's/^MemTotal: *//p' /proc/meminfo) of memory
  command line: $(cat /proc/cmdline)
  'poweroff -f' powers the guest off.

BANNER
# A session of its own with the console as its controlling terminal (cttyhack finds which
# terminal /dev/console is), so Ctrl-C and job control work.
(exec setsid cttyhack sh -i)
echo "the shell ended: powering off"
poweroff -f
