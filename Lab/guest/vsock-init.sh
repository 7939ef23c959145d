#!/bin/sh
# Guest (L3) /init for the vsock checks, with the stock kernel's own vsock modules and socat
# (copied in with lab.sh --guest-tool socat). One LGUEST-VSOCK line per check:
#   ready                       the echo service listens on port 5000 (host programs CONNECT 5000)
#   g2h bytes=N sent=SHA got=SHA   16 MiB to the host's echo on port 6000 (uds_6000) and back
#   parallel i bytes=N ok|bad      4 more at once, while the host runs its own 4
#   refused port=6999 rc=N         a host port nobody listens on
#   bench-g2h / bench-net-g2h     (benchmark mode only) 16 MiB to the host through vsock and TCP
# then it waits for the host's connection to port 5001, and powers off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
load-modules
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/vsock ] && break; sleep 0.2; done
echo "LGUEST-VSOCK modules $(lsmod | grep -c vsock) cid=$(dmesg | grep -o 'vsock.*' | head -n 1)"
now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

# The echo service a host program reaches with CONNECT 5000, and the sink it times with 5002.
socat -t 300 VSOCK-LISTEN:5000,fork,reuseaddr EXEC:cat 2>/tmp/echo.err &
socat -u VSOCK-LISTEN:5002,fork,reuseaddr OPEN:/dev/null 2>/dev/null &
sleep 0.5
echo "LGUEST-VSOCK ready"
# The same bytes over virtio-net TCP, for the benchmark beside vsock's.
ip link set eth0 up
ip addr add 192.0.2.2/24 dev eth0
socat -u TCP-LISTEN:7000,reuseaddr,fork OPEN:/dev/null 2>/dev/null &
sleep 0.2
echo "LGUEST-VSOCK net-ready"

head -c 16777216 /dev/urandom >/tmp/data

# Benchmark mode (lguest.vsock-bench=RUNS on the command line, Scripts/bench.sh vsock): the host
# times its runs first; once it connects to port 5001, the guest times RUNS streams of 16 MiB
# to the host through vsock and through virtio-net TCP, in turn, and powers off.
runs=$(sed -n 's/.*lguest.vsock-bench=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$runs" ]; then
    socat -u VSOCK-LISTEN:5001 OPEN:/dev/null 2>/dev/null
    for i in $(seq 1 "$runs"); do
        start=$(now_ms)
        socat -u - VSOCK-CONNECT:2:6001 </tmp/data 2>/dev/null
        echo "LGUEST-VSOCK bench-g2h run=$i bytes=16777216 ms=$(( $(now_ms) - start ))"
        start=$(now_ms)
        socat -u - TCP:192.0.2.1:7001 </tmp/data 2>/dev/null
        echo "LGUEST-VSOCK bench-net-g2h run=$i bytes=16777216 ms=$(( $(now_ms) - start ))"
    done
    poweroff -f
fi

sent=$(sha256sum </tmp/data | cut -d' ' -f1)
t0=$(now_ms)
# Streams through an echo are sent and read by two processes at once (vsock-duplex): one
# socat doing both can block writing while the echo waits for it to read.
vsock-duplex 2 6000 </tmp/data >/tmp/back 2>/tmp/g2h.err
rc=$?
echo "LGUEST-VSOCK g2h-time ms=$(( $(now_ms) - t0 ))"
echo "LGUEST-VSOCK g2h bytes=$(wc -c </tmp/back) sent=$sent got=$(sha256sum </tmp/back | cut -d' ' -f1) rc=$rc"
tail -n 2 /tmp/g2h.err | sed 's/^/LGUEST-VSOCK g2h-stderr /'

head -c 4194304 /tmp/data >/tmp/part
part=$(sha256sum </tmp/part | cut -d' ' -f1)
pids=''
for i in 1 2 3 4; do
    (vsock-duplex 2 6000 </tmp/part >/tmp/back.$i 2>/tmp/parallel.$i.err
     if [ "$(sha256sum </tmp/back.$i | cut -d' ' -f1)" = "$part" ]; then r=ok; else r=bad; fi
     echo "LGUEST-VSOCK parallel $i bytes=$(wc -c </tmp/back.$i) $r"
     sed "s/^/LGUEST-VSOCK parallel-stderr $i /" /tmp/parallel.$i.err) &
    pids="$pids $!"
done
# Only these: the listeners above are this shell's children too.
for p in $pids; do wait "$p"; done

socat -t 5 - VSOCK-CONNECT:2:6999 </dev/null >/dev/null 2>/tmp/refused.err
echo "LGUEST-VSOCK refused port=6999 rc=$? why=$(tail -n 1 /tmp/refused.err | sed 's/.*: //')"

# The host says when it is done, by connecting to port 5001.
socat -u VSOCK-LISTEN:5001 OPEN:/dev/null 2>/dev/null
echo "LGUEST-VSOCK done echo_errors=$(wc -l </tmp/echo.err)"
poweroff -f
