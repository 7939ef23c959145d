#!/bin/sh
# Guest (L3) /init for the hostile-guest scenario: a program in the guest attacks two of
# lguest's virtio devices through /dev/mem (Lab/guest/mmio-attack.c), and afterwards the devices
# it left alone must still work. The attacked ones are the first disk and the rng; the second
# disk is the control. One LGUEST-HOSTILE line per step:
#   windows attacked=virtioN@BASE,... control=virtioM
#   attack-rc=N control-disk=ok|bad
#   done
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
load-modules
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    [ -b /dev/vda ] && [ -b /dev/vdb ] && break
    sleep 0.2
done
arg() { sed -n "s/.*lguest\\.$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
virtio_of_block() { basename "$(readlink -f "/sys/block/$1/device")"; }
virtio_of_type() { # DEVICE-ID (0x0004 for rng)
    for d in /sys/bus/virtio/devices/*; do
        [ "$(cat "$d/device")" = "$1" ] && { basename "$d"; return; }
    done
}
platform_of() { basename "$(dirname "$(readlink -f "/sys/bus/virtio/devices/$1")")"; }
base_of() { awk -v d="$1" '$NF == d { split($1, r, "-"); print "0x" r[1]; exit }' /proc/iomem; }

targets="$(virtio_of_block vda) $(virtio_of_type 0x0004)"
control=$(virtio_of_block vdb)
bases=''
list=''
for v in $targets; do
    p=$(platform_of "$v")
    b=$(base_of "$p")
    # Out of the kernel's hands: the virtio-mmio driver lets go of the window and its interrupt.
    echo "$p" >/sys/bus/platform/drivers/virtio-mmio/unbind
    bases="$bases $b"
    list="$list$v@$b,"
done
echo "LGUEST-HOSTILE windows attacked=$list control=$control"

# shellcheck disable=SC2086
mmio-attack "$(arg seed)" "$(arg attack-seconds)" 0x6000000 0x400000 $bases >/tmp/attack.out 2>&1
rc=$?
sed 's/^/LGUEST-HOSTILE /' /tmp/attack.out

# What the attack did not touch still works: the control disk, written and read back.
yes "control disk pattern" | head -c 1048576 >/tmp/pattern
if [ ! -b /dev/vdb ]; then
    echo "LGUEST-HOSTILE attack-rc=$rc control-disk=missing"
    poweroff -f
fi
dd if=/tmp/pattern of=/dev/vdb bs=65536 conv=fsync 2>/dev/null
echo 3 >/proc/sys/vm/drop_caches
want=$(sha256sum </tmp/pattern | cut -d' ' -f1)
got=$(dd if=/dev/vdb bs=65536 count=16 2>/dev/null | sha256sum | cut -d' ' -f1)
echo "LGUEST-HOSTILE attack-rc=$rc control-disk=$([ "$want" = "$got" ] && echo ok || echo bad)"
echo "LGUEST-HOSTILE done"
poweroff -f
sleep 5
