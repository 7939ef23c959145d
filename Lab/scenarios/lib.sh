# Helpers for lab scenarios; a scenario sources this with `. "$LAB_LIB"`.
# Plain POSIX sh: it runs under busybox in the lab host and under dash or bash directly.
#
# Environment (set by Lab/lab.sh): LGUEST (the VMM), GUEST_KERNEL, LAB_FILES, LAB_LIB.
# LAB_RUN_TIMEOUT: seconds one guest run may take before it is killed (default 300).

: "${LAB_RUN_TIMEOUT:=300}"
LAB_TMP=$(mktemp -d "${TMPDIR:-/tmp}/lab.XXXXXX")
trap 'rm -rf "$LAB_TMP"' EXIT

# Seconds since this kernel booted (emulated time in the lab).
lab_uptime() { cut -d' ' -f1 /proc/uptime; }

# QEMU to boot guests with: the copy lab.sh --with-qemu put into the lab host, else the host's.
lab_qemu() {
    if [ -x /lab/bin/qemu-system-x86_64 ]; then
        echo /lab/bin/qemu-system-x86_64
    else
        command -v qemu-system-x86_64
    fi
}

# lab_debian COMMAND [ARG...]
# Runs a program of the lab host's Debian userland (lab.sh run --with-l2-disk: curl, socat,
# python3, fio, iperf3), chrooted into it; directly on a host, the host's own.
lab_debian() {
    if [ -x /lab/debian/usr/bin/env ]; then
        chroot /lab/debian /usr/bin/env -u LD_LIBRARY_PATH PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"
    else
        "$@"
    fi
}

# lab_run NAME COMMAND [ARG...]
# Runs COMMAND, its stdout (the guest's console) going to ours and its stderr to a file, killed
# after LAB_RUN_TIMEOUT seconds, between markers that name the run:
#   LAB-BEGIN NAME uptime=SECONDS
#   LAB-RESULT NAME exit=STATUS          (124 when it timed out)
#   LAB-STDERR NAME LAST-LINE-OF-STDERR  (after up to 20 lines of LAB-STDERR-LINE NAME LINE)
#   LAB-END NAME seconds=ELAPSED
# Sets LAB_STATUS to the status.
lab_run() {
    _name=$1
    shift
    _start=$(lab_uptime)
    echo "LAB-BEGIN $_name uptime=$_start"
    echo "LAB-COMMAND $_name $*"
    timeout -k 5 "$LAB_RUN_TIMEOUT" "$@" 2>"$LAB_TMP/$_name.err"
    LAB_STATUS=$?
    _end=$(lab_uptime)
    _seconds=$(awk -v a="$_start" -v b="$_end" 'BEGIN { printf "%.1f", b - a }')
    # A run killed by timeout ends with 124 (coreutils) or 143/137 (busybox): say 124 for both.
    if [ "$LAB_STATUS" -ne 0 ] && awk -v s="$_seconds" -v t="$LAB_RUN_TIMEOUT" 'BEGIN { exit !(s >= t) }'; then
        LAB_STATUS=124
    fi
    # A VMM that stops mid-line leaves the guest's last line open: start the markers afresh.
    echo
    echo "LAB-RESULT $_name exit=$LAB_STATUS"
    tail -n 20 "$LAB_TMP/$_name.err" | sed "s/^/LAB-STDERR-LINE $_name /"
    echo "LAB-STDERR $_name $(tail -n 1 "$LAB_TMP/$_name.err")"
    echo "LAB-END $_name seconds=$_seconds"
    return 0
}
