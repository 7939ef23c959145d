#!/bin/sh
# virtio-vsock in the lab: the stock kernel's own vsock modules in the guest, socat on both
# sides (lab.sh --host-tool socat --guest-tool socat). Host programs reach the guest through
# lguest's Unix socket with `CONNECT <port>`; the guest reaches host programs listening on
# `<socket>_<port>`. Checked from the lab host here (LAB-VSOCK lines) and from inside the guest
# (Lab/guest/vsock-init.sh, LGUEST-VSOCK lines):
#   h2g: 16 MiB through the guest's echo service and back, checksums compared;
#   parallel: 4 such connections at once (4 MiB each) while the guest runs 4 of its own;
#   refused: CONNECT to a port nobody listens on in the guest closes the socket, no OK.
# With LAB_VSOCK_BENCH=RUNS it times streams through vsock and virtio-net TCP instead.
# Tests/LabTests/VsockLabTests.swift reads the markers.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/vsock.cpio.gz
SOCK=$LAB_TMP/v.sock
CONSOLE=$LAB_TMP/console
sha() { sha256sum | cut -d' ' -f1; }
# tell_guest_done: connects to the guest's port 5001 until its listener answers OK (it starts
# listening just after its last line, so the first try may find nobody there yet).
tell_guest_done() {
    for _ in $(seq 1 60); do
        printf 'CONNECT 5001\n' | socat -t 2 - UNIX-CONNECT:"$SOCK" 2>/dev/null | grep -q '^OK ' && return 0
        sleep 1
    done
    echo "LAB-VSOCK-ERROR the guest never listened on port 5001"
}
ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

# The host programs the guest connects to: an echo on port 6000, a sink on port 6001.
socat -t 300 UNIX-LISTEN:"${SOCK}_6000",fork EXEC:cat 2>"$LAB_TMP/echo.err" &
socat -u UNIX-LISTEN:"${SOCK}_6001",fork OPEN:/dev/null 2>/dev/null &
socat -u TCP-LISTEN:7001,reuseaddr,fork OPEN:/dev/null 2>/dev/null &
head -c 16777216 /dev/urandom >"$LAB_TMP/data"
head -c 4194304 "$LAB_TMP/data" >"$LAB_TMP/part"

tunctl -t lgvs0 >/dev/null
ip addr add 192.0.2.1/24 dev lgvs0
ip link set lgvs0 up

start=$(lab_uptime)
echo "LAB-BEGIN vsock uptime=$start"
echo "LAB-COMMAND vsock $LGUEST run --vsock cid=3,uds=$SOCK --net tap=lgvs0"
timeout -k 5 "$LAB_RUN_TIMEOUT" ${LAB_VSOCK_WRAP:-} "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --memory 512 --cpus 2 \
    --cmdline "console=ttyS0 panic=1 quiet${LAB_VSOCK_BENCH:+ lguest.vsock-bench=$LAB_VSOCK_BENCH}" --vsock "cid=3,uds=$SOCK" --net tap=lgvs0 ${LAB_VSOCK_EXTRA:-} \
    >"$CONSOLE" 2>"$LAB_TMP/vsock.err" &
pid=$!
lab_watch vsock "$CONSOLE" "$pid" &
# console_has TEXT: the guest printed TEXT, or lguest is gone (so waiting is over either way).
console_has() { grep -q "$1" "$CONSOLE" || ! kill -0 "$pid" 2>/dev/null; }
lab_waitfor "$LAB_RUN_TIMEOUT" console_has "LGUEST-VSOCK ready" || echo "LAB-VSOCK-ERROR the guest never said ready"

# Benchmark mode (LAB_VSOCK_BENCH=RUNS, Scripts/bench.sh vsock): RUNS streams of 16 MiB from
# the lab host into the guest through vsock and through virtio-net TCP, in turn; then the
# guest's own runs the other way (Lab/guest/vsock-init.sh); nothing else.
if [ -n "${LAB_VSOCK_BENCH:-}" ]; then
    lab_waitfor 30 console_has "LGUEST-VSOCK net-ready"
    for i in $(seq 1 "$LAB_VSOCK_BENCH"); do
        t0=$(ms)
        { printf 'CONNECT 5002\n'; cat "$LAB_TMP/data"; } | socat -u - UNIX-CONNECT:"$SOCK" 2>/dev/null
        echo "LAB-VSOCK bench-h2g run=$i bytes=16777216 ms=$(($(ms) - t0))"
        t0=$(ms)
        socat -u - TCP:192.0.2.2:7000 <"$LAB_TMP/data" 2>/dev/null
        echo "LAB-VSOCK bench-net-h2g run=$i bytes=16777216 ms=$(($(ms) - t0))"
    done
    tell_guest_done
    wait "$pid"
    echo "LAB-RESULT vsock exit=$?"
    grep "LGUEST-VSOCK bench" "$CONSOLE"
    echo "LAB-END vsock seconds=$(awk -v a="$start" -v b="$(lab_uptime)" 'BEGIN { printf "%.1f", b - a }')"
    exit 0
fi

# One host program: CONNECT 5000 (the guest's echo), 16 MiB there and back. (socat's -t is how
# long it waits for the way back once its input ended; it ends sooner when the guest closes.)
t0=$(ms)
{ printf 'CONNECT 5000\n'; cat "$LAB_TMP/data"; } | socat -t 300 - UNIX-CONNECT:"$SOCK" >"$LAB_TMP/echo.out" 2>"$LAB_TMP/h2g.err"
echo "LAB-VSOCK h2g-time ms=$(($(ms) - t0))"
echo "LAB-VSOCK h2g ok_line=$(head -n 1 "$LAB_TMP/echo.out" | tr ' ' _) bytes=$(wc -c <"$LAB_TMP/echo.out") sent=$(sha <"$LAB_TMP/data") got=$(tail -c 16777216 "$LAB_TMP/echo.out" | sha)"

# Four at once.
part=$(sha <"$LAB_TMP/part")
pids=''
for i in 1 2 3 4; do
    ({ printf 'CONNECT 5000\n'; cat "$LAB_TMP/part"; } | socat -t 300 - UNIX-CONNECT:"$SOCK" >"$LAB_TMP/p.$i" 2>/dev/null
     got=$(tail -c 4194304 "$LAB_TMP/p.$i" | sha)
     echo "LAB-VSOCK parallel $i bytes=$(wc -c <"$LAB_TMP/p.$i") $([ "$got" = "$part" ] && echo ok || echo bad)") &
    pids="$pids $!"
done
# Only these: the listeners above are this shell's children too.
for p in $pids; do wait "$p"; done

# A port nobody listens on in the guest: the socket closes with no OK.
reply=$(printf 'CONNECT 7777\n' | socat -t 10 - UNIX-CONNECT:"$SOCK" 2>/dev/null | tr -d '\n')
echo "LAB-VSOCK refused reply=[$reply]"

# The guest's own checks end with the refused connect; then tell it to power off.
lab_waitfor 300 console_has "LGUEST-VSOCK refused" || echo "LAB-VSOCK-ERROR the guest's checks never ended"
tell_guest_done
wait "$pid"
status=$?
echo
cat "$CONSOLE"
echo
echo "LAB-RESULT vsock exit=$status"
tail -n 20 "$LAB_TMP/vsock.err" | sed "s/^/LAB-STDERR-LINE vsock /"
echo "LAB-STDERR vsock $(tail -n 1 "$LAB_TMP/vsock.err")"
[ -n "${LAB_VSOCK_WRAP:-}" ] && grep -A 12 -E 'openat|SIGSYS|killed' /tmp/strace.log | tail -n 60 | sed 's/^/LAB-VSOCK-TRACE /'
# A sandbox kill is logged by the kernel with the system call's number.
dmesg | grep -i -E 'seccomp|audit' | tail -n 5 | sed 's/^/LAB-VSOCK-DMESG /'
echo "LAB-END vsock seconds=$(awk -v a="$start" -v b="$(lab_uptime)" 'BEGIN { printf "%.1f", b - a }')"
