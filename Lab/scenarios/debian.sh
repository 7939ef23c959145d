#!/bin/sh
# The Debian system (lab.sh run --with-debian-system; Lab/debian-system.sh) booted by lguest with
# its own kernel and initrd, its root disk served from a block device of the lab host (the
# image QEMU gives L2 as its last virtio disk). A unit inside reports once systemd has finished
# booting (LGUEST-DEBIAN ...), reaches the lab host through the NIC systemd-networkd set up,
# and then powers off or reboots through systemd. A third boot is driven from here as a user
# would: a root login typed at the serial console, then `systemctl halt`, after which lguest
# must keep waiting and say so once. Tests/LabTests reads the markers.
# shellcheck source=lib.sh
. "$LAB_LIB"
ROOT=${DEBIAN_ROOT:-$(ls /dev/vd? 2>/dev/null | tail -n 1)}
echo "LAB-DEBIAN-DISK $ROOT"

# The lab host on the guest's network: 192.0.2.1 on a TAP, with an HTTP server whose /probe the
# guest fetches.
tunctl -t lgdeb0 >/dev/null
ip addr add 192.0.2.1/24 dev lgdeb0
ip link set lgdeb0 up
mkdir -p "$LAB_TMP/www"
echo "lab-host-reached" >"$LAB_TMP/www/probe"
httpd -f -p 192.0.2.1:8080 -h "$LAB_TMP/www" &
HTTPD=$!

# lguest's arguments but the command line (no spaces in any of them).
MACHINE="--kernel $LAB_FILES/debian-vmlinuz --initrd $LAB_FILES/debian-initrd.img --disk $ROOT --memory 512 --cpus 2 --net tap=lgdeb0"
CMDLINE="root=/dev/vda rw console=ttyS0"
for action in poweroff reboot; do
    # shellcheck disable=SC2086
    lab_run "debian-$action" "$LGUEST" run $MACHINE --cmdline "$CMDLINE lguest.action=$action"
done

# A user at the serial console: lguest reads a FIFO we type into.
CONSOLE=$LAB_TMP/login.console
ERR=$LAB_TMP/login.err
HALTED="the guest halted its CPUs"
# One boot driven from here as a user would: log in, run a command, halt.
login_and_halt() {
    rm -f "$LAB_TMP/login.in"
    mkfifo "$LAB_TMP/login.in"
    : >"$CONSOLE"
    start=$(lab_uptime)
    echo "LAB-BEGIN debian-login uptime=$start"
    echo "LAB-COMMAND debian-login $LGUEST run $MACHINE --cmdline $CMDLINE"
    # shellcheck disable=SC2086
    timeout -k 5 "$LAB_RUN_TIMEOUT" "$LGUEST" run $MACHINE --cmdline "$CMDLINE" <"$LAB_TMP/login.in" >"$CONSOLE" 2>"$ERR" &
    pid=$!
    exec 5>"$LAB_TMP/login.in"
    seen() { grep -q "$1" "$CONSOLE" || ! kill -0 "$pid" 2>/dev/null; }
    type_line() { printf '%s\n' "$1" >&5; echo "LAB-DEBIAN-TYPED $1"; }
    if lab_waitfor "$LAB_RUN_TIMEOUT" seen "lguest-debian login:" && kill -0 "$pid" 2>/dev/null; then
        sleep 1
        type_line root
        lab_waitfor 120 seen "root@lguest-debian"
        # Only the command's output has "uid=0 " after the marker: its echo has "$(id -u)".
        type_line 'echo "LGUEST-LOGIN uid=$(id -u) tty=$(tty) host=$(hostname)"'
        lab_waitfor 60 seen "LGUEST-LOGIN uid=0 "
        # Let the report unit finish before going down.
        lab_waitfor 300 seen "LGUEST-DEBIAN-NET"
        type_line "systemctl halt"
        grep_err() { grep -q "$HALTED" "$ERR" || ! kill -0 "$pid" 2>/dev/null; }
        lab_waitfor 300 grep_err
        # A few seconds more: lguest must still be there, and must not say it again.
        sleep 5
        echo "LAB-DEBIAN-HALT waiting=$(kill -0 "$pid" 2>/dev/null && echo yes || echo no) said=$(grep -c "$HALTED" "$ERR")"
    else
        echo "LAB-DEBIAN-HALT waiting=no said=0 (no login prompt)"
    fi
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    status=$?
    exec 5>&-
    cat "$CONSOLE"
    echo
    lab_report debian-login "$status" "$ERR" "$start"
}
login_and_halt
# As lab_run does: a guest the emulation failed gets one more run.
if grep -q "triple-faulted" "$ERR"; then
    echo "LAB-RERUN debian-login the guest failed beneath lguest; running it once more"
    login_and_halt
fi
kill "$HTTPD" 2>/dev/null

# The same system under QEMU microvm in the same lab, for comparison (its virtio-mmio devices are
# in its ACPI tables too). Its root is the same disk, through QEMU's own virtio-blk.
QEMU=$(lab_qemu) || exit 0
lab_run debian-qemu "$QEMU" -M microvm,acpi=on,pit=on,pic=on,rtc=on -enable-kvm -cpu host \
    -m 512 -smp 2 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$LAB_FILES/debian-vmlinuz" -initrd "$LAB_FILES/debian-initrd.img" \
    -drive "file=$ROOT,if=none,id=root,format=raw" -device virtio-blk-device,drive=root \
    -append "root=/dev/vda rw console=ttyS0 lguest.action=poweroff"
