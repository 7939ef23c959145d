#!/bin/sh
# The Debian system (lab.sh run --with-debian-system; Lab/debian-system.sh) booted by lguest with
# its own kernel and initrd, its root disk served from a block device of the lab host (the
# image QEMU gives L2 as its last virtio disk). A unit inside reports once systemd has finished
# booting (LGUEST-DEBIAN ...) and then powers off or reboots through systemd.
# Tests/LabTests reads the markers.
# shellcheck source=lib.sh
. "$LAB_LIB"
ROOT=${DEBIAN_ROOT:-$(ls /dev/vd? 2>/dev/null | tail -n 1)}
echo "LAB-DEBIAN-DISK $ROOT"

for action in poweroff reboot; do
    lab_run "debian-$action" "$LGUEST" run --kernel "$LAB_FILES/debian-vmlinuz" \
        --initrd "$LAB_FILES/debian-initrd.img" --disk "$ROOT" --memory 512 --cpus 2 \
        --cmdline "root=/dev/vda rw console=ttyS0 lguest.action=$action"
done

# The same system under QEMU microvm in the same lab, for comparison (its virtio-mmio devices are
# in its ACPI tables too). Its root is the same disk, through QEMU's own virtio-blk.
QEMU=$(lab_qemu) || exit 0
lab_run debian-qemu "$QEMU" -M microvm,acpi=on,pit=on,pic=on,rtc=on -enable-kvm -cpu host \
    -m 512 -smp 2 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$LAB_FILES/debian-vmlinuz" -initrd "$LAB_FILES/debian-initrd.img" \
    -drive "file=$ROOT,if=none,id=root,format=raw" -device virtio-blk-device,drive=root \
    -append "root=/dev/vda rw console=ttyS0 lguest.action=poweroff"
