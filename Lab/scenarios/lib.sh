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

# lab_waitfor SECONDS COMMAND [ARG...]
# Runs COMMAND every 0.1 s until it succeeds; false if it never did within SECONDS.
lab_waitfor() {
    _left=$(($1 * 10)); shift
    while [ "$_left" -gt 0 ]; do "$@" && return 0; sleep 0.1; _left=$((_left - 1)); done
    return 1
}

# lab_api SOCKET METHOD PATH [BODY]
# One request to Firecracker's API on the Unix socket SOCKET, with curl (a JSON BODY when
# given). Prints
#   LAB-API-CALL METHOD PATH status=CODE body=RESPONSE-BODY
# and leaves the response body in $LAB_TMP/api.body.
lab_api() {
    _sock=$1; shift
    if [ $# -ge 3 ]; then
        _out=$(curl -s -m 120 -w '\n%{http_code}' --unix-socket "$_sock" -X "$1" -H 'Content-Type: application/json' -d "$3" "http://localhost$2")
    else
        _out=$(curl -s -m 120 -w '\n%{http_code}' --unix-socket "$_sock" -X "$1" "http://localhost$2")
    fi
    echo "$_out" | sed '$d' >"$LAB_TMP/api.body"
    echo "LAB-API-CALL $1 $2 status=$(echo "$_out" | tail -n 1) body=$(cat "$LAB_TMP/api.body")"
}

# lab_stall_report NAME
# When a guest has stalled: one LAB-THREADS line per thread of every VMM on this host (lguest or
# QEMU), with its state, system call number and kernel wait channel sampled three times a second
# apart, then
#   LAB-STALL NAME beneath=yes|no
# beneath=yes when every vCPU thread was seen inside ioctl (16, KVM_RUN) at least once: the vCPUs
# are in the kernel's hands and the stall is beneath the VMM, in the nested virtualization. no
# when a vCPU thread never was: it is stuck in the VMM itself.
lab_stall_report() {
    _samples=$LAB_TMP/$1.threads
    : >"$_samples"
    for _round in 1 2 3; do
        for _task in /proc/[0-9]*/task/[0-9]*; do
            case $(readlink "${_task%/task/*}/exe" 2>/dev/null) in
                *lguest* | *qemu-system*) ;;
                *) continue ;;
            esac
            _comm=$(cat "$_task/comm" 2>/dev/null) || continue
            _state=$(awk '{ print $3 }' "$_task/stat" 2>/dev/null)
            _call=$(cut -d' ' -f1 "$_task/syscall" 2>/dev/null)
            _wchan=$(cat "$_task/wchan" 2>/dev/null)
            echo "${_task#/proc/} $(echo "$_comm" | tr ' ' _) ${_state:-?} ${_call:-?} ${_wchan:-?}" >>"$_samples"
        done
        sleep 1
    done
    sed "s/^/LAB-THREADS $1 /" "$_samples"
    _beneath=$(awk '$2 ~ /^(lguest-vcpu|CPU_)/ { seen[$1] = 1; if ($4 == "16") inside[$1] = 1 }
        END { n = 0; for (t in seen) { n++; if (!(t in inside)) { print "no"; exit } } print (n ? "yes" : "no") }' "$_samples")
    echo "LAB-STALL $1 beneath=$_beneath"
}

# lab_stalled FILE: whether the guest console in FILE says the guest is wedged: a double fault,
# or RCU reporting the same stall twice (a minute or more with a CPU that never came back).
lab_stalled() {
    grep -q 'double fault' "$1" && return 0
    [ "$(grep -c 'rcu_[a-z]* detected stalls' "$1")" -ge 2 ]
}

# lab_watch NAME CONSOLE PID &
# For a VMM a scenario runs in the background with its console in the file CONSOLE: while PID
# lives, does what lab_run's watchdog does (LAB-STALL NAME ..., then kills PID) if the guest wedges.
lab_watch() {
    while kill -0 "$3" 2>/dev/null; do
        sleep 1
        if lab_stalled "$2"; then
            echo
            lab_stall_report "$1"
            kill "$3" 2>/dev/null
            return 0
        fi
    done
}

# lab_run NAME COMMAND [ARG...]
# Runs COMMAND, its stdout (the guest's console) going to ours and its stderr to a file, killed
# after LAB_RUN_TIMEOUT seconds, between markers that name the run:
#   LAB-BEGIN NAME uptime=SECONDS
#   LAB-STALL NAME ...                   (when the guest wedged: see lab_stall_report)
#   LAB-RESULT NAME exit=STATUS          (124 when it timed out, 125 when it was killed wedged)
#   LAB-STDERR NAME LAST-LINE-OF-STDERR  (after up to 20 lines of LAB-STDERR-LINE NAME LINE)
#   LAB-END NAME seconds=ELAPSED
# Sets LAB_STATUS to the status. stdin goes to COMMAND as it is.
lab_run() {
    lab_run_once "$@"
    # The emulated SVM beneath the lab fails a guest now and then (Lab/README.md, "The tests"):
    # a guest that triple-faulted or wedged beneath lguest gets one more run, after the first's
    # markers. Tests read a run's last attempt.
    if grep -q "triple-faulted" "$LAB_TMP/$1.err" 2>/dev/null || grep -q "beneath=yes" "$LAB_TMP/$1.threads.verdict" 2>/dev/null; then
        echo "LAB-RERUN $1 the guest failed beneath lguest; running it once more"
        lab_run_once "$@"
    fi
}

lab_run_once() {
    _name=$1
    shift
    rm -f "$LAB_TMP/$_name.threads.verdict"
    _start=$(lab_uptime)
    echo "LAB-BEGIN $_name uptime=$_start"
    echo "LAB-COMMAND $_name $*"
    _out=$LAB_TMP/$_name.out
    : >"$_out"
    rm -f "$LAB_TMP/$_name.status" "$LAB_TMP/$_name.pid"
    # In the background (stdin kept through descriptor 3), so that a watchdog can read the
    # console as it comes and kill a guest that has wedged instead of waiting out the timeout.
    exec 3<&0
    {
        timeout -k 5 "$LAB_RUN_TIMEOUT" "$@" 2>"$LAB_TMP/$_name.err" <&3 &
        echo $! >"$LAB_TMP/$_name.pid"
        wait $!
        echo $? >"$LAB_TMP/$_name.status"
    } | tee "$_out" &
    _tee=$!
    _stalled=no
    while kill -0 "$_tee" 2>/dev/null; do
        sleep 1
        if [ "$_stalled" = no ] && [ ! -e "$LAB_TMP/$_name.status" ] && lab_stalled "$_out"; then
            _stalled=yes
            echo
            lab_stall_report "$_name" | tee "$LAB_TMP/$_name.threads.verdict"
            kill "$(cat "$LAB_TMP/$_name.pid")" 2>/dev/null
        fi
    done
    wait "$_tee"
    exec 3<&-
    LAB_STATUS=$(cat "$LAB_TMP/$_name.status" 2>/dev/null || echo 1)
    _end=$(lab_uptime)
    _seconds=$(awk -v a="$_start" -v b="$_end" 'BEGIN { printf "%.1f", b - a }')
    # A run killed by timeout ends with 124 (coreutils) or 143/137 (busybox): say 124 for both.
    if [ "$_stalled" = yes ]; then
        LAB_STATUS=125
    elif [ "$LAB_STATUS" -ne 0 ] && awk -v s="$_seconds" -v t="$LAB_RUN_TIMEOUT" 'BEGIN { exit !(s >= t) }'; then
        LAB_STATUS=124
    fi
    # A VMM that stops mid-line leaves the guest's last line open: start the markers afresh.
    echo
    lab_report "$_name" "$LAB_STATUS" "$LAB_TMP/$_name.err" "$_start"
    return 0
}

# lab_report NAME STATUS STDERR-FILE START-UPTIME
# The markers that close a run (LAB-RESULT, LAB-STDERR-LINE..., LAB-STDERR, LAB-END, as lab_run
# describes them), for lab_run and for scenarios that start a VMM in the background themselves.
lab_report() {
    echo "LAB-RESULT $1 exit=$2"
    tail -n 20 "$3" | sed "s/^/LAB-STDERR-LINE $1 /"
    echo "LAB-STDERR $1 $(tail -n 1 "$3")"
    echo "LAB-END $1 seconds=$(awk -v a="$4" -v b="$(lab_uptime)" 'BEGIN { printf "%.1f", b - a }')"
}
