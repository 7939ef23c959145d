#!/bin/sh
# Guest (L3) /init for the shared-directory checks. The stock virtiofs driver mounts lguest's
# two shares, `work` (writable) and `ro` (read-only), and the guest reports one LGUEST-FS line
# per check; the scenario (Lab/scenarios/fs.sh) checks the host side afterwards.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
load-modules
mkdir -p /mnt/work /mnt/ro /mnt/disk /tmp
mount -t tmpfs tmpfs /tmp
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
mount -t virtiofs work /mnt/work && echo "LGUEST-FS mount-work=ok" || echo "LGUEST-FS mount-work=failed"
mount -t virtiofs ro /mnt/ro && echo "LGUEST-FS mount-ro=ok" || echo "LGUEST-FS mount-ro=failed"
echo "LGUEST-FS fstype=$(grep ' /mnt/work ' /proc/mounts | cut -d' ' -f3)"

# Create, write, read back, rename, link, symlink, chmod, truncate, delete.
cd /mnt/work || poweroff -f
echo "hello from the guest" >made.txt
echo "LGUEST-FS readback=$(cat made.txt | tr ' ' _)"
mv made.txt renamed.txt && echo "LGUEST-FS rename=ok"
ln renamed.txt hard.txt && echo "LGUEST-FS link=ok links=$(stat -c %h renamed.txt)"
ln -s renamed.txt soft.txt && echo "LGUEST-FS symlink=$(readlink soft.txt) through=$(cat soft.txt | tr ' ' _)"
chmod 640 renamed.txt && echo "LGUEST-FS chmod=$(stat -c %a renamed.txt)"
if command -v truncate >/dev/null; then truncate -s 5 renamed.txt; else dd if=/dev/null of=renamed.txt bs=1 seek=5 2>/dev/null; fi
echo "LGUEST-FS truncate=$(stat -c %s renamed.txt) content=$(cat renamed.txt)"
echo bye >deleteme && rm deleteme && echo "LGUEST-FS delete=$([ -e deleteme ] && echo no || echo yes)"
mkdir -p dir/sub && echo "LGUEST-FS mkdir=$([ -d dir/sub ] && echo yes || echo no)"
ls dir >/dev/null && echo "LGUEST-FS readdir=$(ls -a dir | tr '\n' ,)"
# No set-user-ID file and no device node can appear on the host; a FIFO may.
echo x >suid && chmod 4755 suid; echo "LGUEST-FS setuid=$(stat -c %a suid)"
if mknod null c 1 3 2>/dev/null; then echo "LGUEST-FS device=made"; else echo "LGUEST-FS device=refused"; fi
mkfifo fifo && echo "LGUEST-FS fifo=$([ -p fifo ] && echo yes || echo no)"
df /mnt/work >/dev/null 2>&1 && echo "LGUEST-FS statfs=ok"

# Links made on the host that point out of the share are the guest's to resolve, in its own
# tree: the host's secret never shows.
for link in passwd secret-abs secret-rel; do
    echo "LGUEST-FS escape-$link=$(readlink $link | tr '/' '|') leaked=$(cat $link 2>/dev/null | grep -c HOST-SECRET)"
done
echo "LGUEST-FS dotdot=$(ls -d /mnt/work/.. | tr '/' '|') parent-has-secret=$(ls /mnt/work/../ 2>/dev/null | grep -c secret)"

# The read-only share: reads work, every write is refused.
echo "LGUEST-FS ro-read=$(cat /mnt/ro/keep | tr ' ' _)"
refused=0
touch /mnt/ro/new 2>/dev/null || refused=$((refused + 1))
(echo more >>/mnt/ro/keep) 2>/dev/null || refused=$((refused + 1))
rm /mnt/ro/keep 2>/dev/null || refused=$((refused + 1))
mkdir /mnt/ro/dir 2>/dev/null || refused=$((refused + 1))
chmod 777 /mnt/ro/keep 2>/dev/null || refused=$((refused + 1))
echo "LGUEST-FS ro-refused=$refused/5 erofs=$(touch /mnt/ro/x 2>&1 | grep -c 'Read-only')"

# Untar the archive into the writable share (the host checks every checksum afterwards), and
# time it: that is the benchmark's first half. The same archive unpacked on ext4 on the
# virtio-blk disk is the other; each is then read back after dropping the caches. The archive
# is copied to memory first, so both read it from the same place. Times in ms of guest uptime.
now() { cut -d' ' -f1 /proc/uptime | tr -d .; }
cp /mnt/ro/archive.tar /tmp/archive.tar && echo "LGUEST-FS ro-copy=ok"
bench() { # NAME DIR
    mkdir -p "$2"
    t0=$(now); tar xf /tmp/archive.tar -C "$2"; status=$?; sync; t1=$(now)
    echo 3 >/proc/sys/vm/drop_caches
    t2=$(now); tar cf - -C "$2" archive | wc -c >/dev/null; t3=$(now)
    echo "LGUEST-FS bench ${1}_untar_ms=$(((t1 - t0) * 10)) ${1}_read_ms=$(((t3 - t2) * 10)) ${1}_status=$status"
}
bench virtiofs /mnt/work/untar
echo "LGUEST-FS untar=$([ "$status" = 0 ] && echo ok || echo failed) files=$(find /mnt/work/untar -type f | wc -l)"
if mount -t ext4 /dev/vda /mnt/disk 2>/dev/null; then
    bench ext4 /mnt/disk/untar
    umount /mnt/disk
fi

cd /
umount /mnt/work && umount /mnt/ro && echo "LGUEST-FS umount=ok"
echo "LGUEST-FS done"
sync
poweroff -f
sleep 2
