#!/bin/sh
# Many VMs at once: LAB_SOAK_VMS lguest processes (8) in this lab host, each with a disk, a TAP
# and virtio-rng, each guest (Lab/guest/soak-init.sh) doing block, net and rng I/O for
# LAB_SOAK_SECONDS (180). Every 10 s the lab host samples each lguest's resident memory: all of
# it, and the part that is not guest memory (lguest's own: its heap, stacks and code). Runs are
# named soak-N; after each lguest has exited, its markers:
#   LAB-BEGIN soak-N ... (the guest's console) ... LAB-SOAK-IMAGE n=N slot=K md5=M ...
#   LAB-SOAK-RSS n=N samples=T:OWN_KB:TOTAL_KB,...  (T: seconds since the guest's I/O began, -1 before)
#   LAB-RESULT soak-N exit=STATUS ... LAB-END soak-N
# Tests/LabTests/SoakLabTests reads them.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/soak.cpio.gz
VMS=${LAB_SOAK_VMS:-8}
SECONDS_=${LAB_SOAK_SECONDS:-180}
WWW=$LAB_TMP/www
mkdir -p "$WWW"
head -c 1048576 /dev/urandom >"$WWW/blob"
md5sum <"$WWW/blob" | cut -d' ' -f1 >"$WWW/blob.md5"
httpd -f -p 8080 -h "$WWW" &
httpd=$!

# rss PID: "OWN_KB:TOTAL_KB"; guest memory is lguest's largest mapping (whole because the VMs
# boot with --kernel-cache off: a cached kernel is mapped over parts of guest RAM, cutting it up).
rss() {
    awk '/^Size:/ { size = $2 }
         /^Rss:/ { total += $2; if (size > largest) { largest = size; guest = $2 } }
         END { printf "%d:%d", total - guest, total }' "/proc/$1/smaps" 2>/dev/null
}

start=$(lab_uptime)
echo "LAB-SOAK-BEGIN vms=$VMS seconds=$SECONDS_ uptime=$start"
i=1
while [ "$i" -le "$VMS" ]; do
    tunctl -t "lgsoak$i" >/dev/null
    ip addr add "198.18.$i.1/24" dev "lgsoak$i"
    ip link set "lgsoak$i" up
    dd if=/dev/zero of="$LAB_TMP/disk.$i" bs=1048576 count=2 2>/dev/null
    echo "$(lab_uptime)" >"$LAB_TMP/start.$i"
    timeout -k 5 "$LAB_RUN_TIMEOUT" "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --memory 128 --kernel-cache off \
        --disk "$LAB_TMP/disk.$i" --net "tap=lgsoak$i,mac=06:00:c6:12:00:0$i" --rng \
        --cmdline "console=ttyS0 quiet panic=-1 lguest.soak=$i lguest.seconds=$SECONDS_" \
        </dev/null >"$LAB_TMP/console.$i" 2>"$LAB_TMP/err.$i" &
    echo $! >"$LAB_TMP/pid.$i"
    lab_watch "soak-$i" "$LAB_TMP/console.$i" "$!" >"$LAB_TMP/watch.$i" &
    i=$((i + 1))
done

# Sample until every lguest has gone.
alive=$VMS
while [ "$alive" -gt 0 ]; do
    sleep 10
    alive=0
    i=1
    while [ "$i" -le "$VMS" ]; do
        pid=$(cat "$LAB_TMP/pid.$i")
        if kill -0 "$pid" 2>/dev/null; then
            alive=$((alive + 1))
            if [ ! -e "$LAB_TMP/soaking.$i" ] && grep -q LGUEST-SOAK-START "$LAB_TMP/console.$i"; then
                lab_uptime >"$LAB_TMP/soaking.$i"
            fi
            t=-1
            [ -e "$LAB_TMP/soaking.$i" ] && t=$(awk -v a="$(cat "$LAB_TMP/soaking.$i")" -v b="$(lab_uptime)" 'BEGIN { printf "%d", b - a }')
            # The lguest process itself: busybox's timeout execs it, coreutils' forks it.
            vmm=$pid
            case $(readlink "/proc/$pid/exe") in
            *lguest*) ;;
            *) vmm=$(cut -d' ' -f1 "/proc/$pid/task/$pid/children" 2>/dev/null) ;;
            esac
            sample=$(rss "$vmm")
            [ -n "$sample" ] && printf '%s:%s,' "$t" "$sample" >>"$LAB_TMP/rss.$i"
        fi
        i=$((i + 1))
    done
done

i=1
while [ "$i" -le "$VMS" ]; do
    wait "$(cat "$LAB_TMP/pid.$i")"
    status=$?
    echo "LAB-BEGIN soak-$i uptime=$(cat "$LAB_TMP/start.$i")"
    cat "$LAB_TMP/console.$i"
    echo
    cat "$LAB_TMP/watch.$i"
    for slot in 0 1 2 3 4 5 6 7; do
        echo "LAB-SOAK-IMAGE n=$i slot=$slot md5=$(dd if="$LAB_TMP/disk.$i" bs=262144 skip=$slot count=1 2>/dev/null | md5sum | cut -d' ' -f1)"
    done
    samples=$(cat "$LAB_TMP/rss.$i" 2>/dev/null)
    echo "LAB-SOAK-RSS n=$i samples=${samples%,}"
    lab_report "soak-$i" "$status" "$LAB_TMP/err.$i" "$(cat "$LAB_TMP/start.$i")"
    i=$((i + 1))
done
kill "$httpd" 2>/dev/null
echo "LAB-SOAK-END uptime=$(lab_uptime)"
