#!/bin/sh
# The lab host's own tools (lab.sh run --with-l2-disk): each Debian program runs in L2, and a
# file served by Python's HTTP server comes back intact through curl. Tests/LabTests reads the
# LAB-TOOL markers.
# shellcheck source=lib.sh
. "$LAB_LIB"

tool() { # NAME COMMAND...
    _name=$1
    shift
    if _out=$(lab_debian "$@" 2>&1); then
        echo "LAB-TOOL $_name ok $(echo "$_out" | head -n 1)"
    else
        echo "LAB-TOOL $_name failed $(echo "$_out" | tail -n 1)"
    fi
}
tool curl curl --version
tool socat socat -V
tool python3 python3 -c 'import sys; print("python", sys.version.split()[0])'
tool fio fio --version
tool iperf3 iperf3 --version

mkdir -p "$LAB_TMP/www"
head -c 262144 /dev/urandom >"$LAB_TMP/www/blob"
lab_debian python3 -m http.server --bind 127.0.0.1 --directory "$LAB_TMP/www" 8642 >/dev/null 2>&1 &
server=$!
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    lab_debian curl -s -o /dev/null http://127.0.0.1:8642/ && break
    sleep 0.5
done
got=$(lab_debian curl -s http://127.0.0.1:8642/blob | sha256sum | cut -d' ' -f1)
kill "$server" 2>/dev/null
echo "LAB-TOOL http $([ "$got" = "$(sha256sum <"$LAB_TMP/www/blob" | cut -d' ' -f1)" ] && echo ok || echo failed) sha=$got"
