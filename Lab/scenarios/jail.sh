#!/bin/sh
# lguest jail in the lab: a guest boots under a jailed lguest (its own root in
# /srv/jailer/lguest/ID/root, mount and PID namespaces, cgroup v2 limits, user 1000:1000), and
# while it runs the lab host looks at the lguest process from outside: its ids, what its / holds,
# its cgroup and the limits written there, its descriptor limit. Tests/LabTests/JailLabTests.swift
# reads the LAB-JAIL markers.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/jail.cpio.gz
ID=lab-vm-1
ROOT=/srv/jailer/lguest/$ID/root
CONSOLE=$LAB_TMP/console
grep -q ' cgroup2 ' /proc/mounts || { mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup; }
CGROUP=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
echo "LAB-JAIL controllers=$(tr ' ' , <"$CGROUP/cgroup.controllers")"

start=$(lab_uptime)
echo "LAB-BEGIN jail uptime=$start"
echo "LAB-COMMAND jail $LGUEST jail --id $ID --uid 1000 --gid 1000 ... -- run ..."
timeout -k 5 "$LAB_RUN_TIMEOUT" "$LGUEST" jail --id "$ID" --uid 1000 --gid 1000 \
    --cgroup "cpu.max=50000 100000" --cgroup memory.max=400M --cgroup pids.max=64 --resource-limit no-file=1024 \
    -- run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --memory 128 --cpus 1 \
    --cmdline "console=ttyS0 quiet panic=-1" >"$CONSOLE" 2>"$LAB_TMP/jail.err" &
jailer=$!
seen() { grep -q "$1" "$CONSOLE" || ! kill -0 "$jailer" 2>/dev/null; }
if lab_waitfor "$LAB_RUN_TIMEOUT" seen "LGUEST-JAIL ready" && [ -f "$ROOT/lguest.pid" ]; then
    pid=$(cat "$ROOT/lguest.pid")
    ids() { awk -v k="$1" '$1 == k { print $2 "," $3 "," $4 "," $5 }' "/proc/$pid/status"; }
    echo "LAB-JAIL pid=$pid uid=$(ids Uid:) gid=$(ids Gid:) nonewprivs=$(awk '$1 == "NoNewPrivs:" { print $2 }' "/proc/$pid/status") exe=$(readlink "/proc/$pid/exe")"
    echo "LAB-JAIL root-sees=$(ls -A "/proc/$pid/root" | sort | tr '\n' ,) jail-holds=$(ls -A "$ROOT" | sort | tr '\n' ,)"
    echo "LAB-JAIL cgroup=$(cut -d: -f3 "/proc/$pid/cgroup") in-procs=$(grep -c "^$pid\$" "$CGROUP/lguest/$ID/cgroup.procs")"
    echo "LAB-JAIL cpu.max=$(tr ' ' _ <"$CGROUP/lguest/$ID/cpu.max") memory.max=$(cat "$CGROUP/lguest/$ID/memory.max") pids.max=$(cat "$CGROUP/lguest/$ID/pids.max")"
    echo "LAB-JAIL nofile=$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits")"
else
    echo "LAB-JAIL never-ready"
fi
wait "$jailer"
status=$?
cat "$CONSOLE"
echo
lab_report jail "$status" "$LAB_TMP/jail.err" "$start"
