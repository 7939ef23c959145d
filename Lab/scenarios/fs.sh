#!/bin/sh
# Shared directories: the stock kernel's virtiofs driver mounts two directories lguest shares
# (one read-only) and works in them (Lab/guest/fs-init.sh reports from inside); afterwards the
# host side checks what landed in the directories, what did not, and every checksum of the
# archive the guest unpacked. The guest also times unpacking and reading the same archive
# through the share and through an ext4 file system on a virtio-blk disk (the benchmark in
# the README). Tests/LabTests/FsLabTests.swift reads the markers; keep them in step.
# shellcheck source=lib.sh
. "$LAB_LIB"
INITRD=$LAB_FILES/fs.cpio.gz
BASE=$LAB_TMP/fs
WORK=$BASE/work
RO=$BASE/ro
OUTSIDE=$BASE/outside
DISK=$BASE/ext4.img
FILES=${LAB_FS_FILES:-2000}
mkdir -p "$WORK" "$RO" "$OUTSIDE" "$BASE/tree/archive"

# What the guest must never see: a file beside the share, and links to it (absolute, escaping
# with .., and to /etc/passwd) made on the host side.
echo "HOST-SECRET $(date +%s)" >"$OUTSIDE/secret"
ln -s /etc/passwd "$WORK/passwd"
ln -s "$OUTSIDE/secret" "$WORK/secret-abs"
ln -s ../outside/secret "$WORK/secret-rel"
echo "read-only share, never written" >"$RO/keep"

# The archive: $FILES files (2000 unless LAB_FS_FILES says) in 50 directories, sizes from a few bytes to 16 KiB.
head -c 16384 /dev/urandom >"$BASE/blob"
i=0
while [ "$i" -lt "$FILES" ]; do
    dir=$BASE/tree/archive/d$((i % 50))
    [ -d "$dir" ] || mkdir "$dir"
    printf 'file %d of the archive\n' "$i" >"$dir/f$i"
    [ $((i % 7)) -eq 0 ] && dd if="$BASE/blob" bs=$(((i * 37) % 16384 + 1)) count=1 2>/dev/null >>"$dir/f$i"
    i=$((i + 1))
done
(cd "$BASE/tree" && tar cf "$RO/archive.tar" archive)
(cd "$BASE/tree" && find archive -type f | sort | xargs sha256sum) >"$BASE/manifest"
echo "LAB-FS archive-files=$(wc -l <"$BASE/manifest") archive-bytes=$(wc -c <"$RO/archive.tar")"
ro_state() { (cd "$RO" && ls -A && stat -c '%n %a %s %Y' keep archive.tar && sha256sum keep archive.tar) | sha256sum | cut -d' ' -f1; }
ro_before=$(ro_state)

# The ext4 disk for the comparison: e2fsprogs' mke2fs, which the lab copies from the host
# with --host-tool (busybox's own mke2fs, first on L2's PATH, makes only ext2).
dd if=/dev/zero of="$DISK" bs=1048576 count=0 seek=256 2>/dev/null
MKFS=$(command -v /lab/bin/mke2fs || command -v mkfs.ext4 || true)
if [ -n "$MKFS" ] && "$MKFS" -q -F -t ext4 "$DISK"; then
    echo "LAB-FS ext4=yes"
else
    echo "LAB-FS ext4=no"
fi

# Every file the guest has looked up holds a descriptor in lguest: let it have plenty (lguest
# raises its soft limit to this hard one). Thousands of small FUSE requests are slow in the
# emulated lab: Tests/LabTests gives this run more time than the others (LAB_RUN_TIMEOUT).
ulimit -n 65536 2>/dev/null || true
lab_run fs "$LGUEST" run --kernel "$GUEST_KERNEL" --initrd "$INITRD" --cpus 2 --memory 512 \
    --share "$WORK,tag=work" --share "$RO,tag=ro,readonly" --disk "$DISK" \
    --cmdline "console=ttyS0 quiet panic=0"

# What the guest left on the host.
mode() { stat -c %a "$1" 2>/dev/null || echo none; }
echo "LAB-FS renamed=$(cat "$WORK/renamed.txt" 2>/dev/null) gone=$([ -e "$WORK/made.txt" ] && echo no || echo yes)"
echo "LAB-FS chmod=$(mode "$WORK/renamed.txt") links=$(stat -c %h "$WORK/hard.txt" 2>/dev/null) symlink=$(readlink "$WORK/soft.txt")"
echo "LAB-FS deleted=$([ -e "$WORK/deleteme" ] && echo no || echo yes) dir=$([ -d "$WORK/dir/sub" ] && echo yes || echo no)"
echo "LAB-FS setuid=$(mode "$WORK/suid") device=$([ -e "$WORK/null" ] && echo made || echo none) fifo=$([ -p "$WORK/fifo" ] && echo yes || echo no)"
outside_files=$(ls -A "$OUTSIDE" | tr '\n' ' ')
echo "LAB-FS outside=[${outside_files% }] secret-intact=$(grep -c HOST-SECRET "$OUTSIDE/secret")"
echo "LAB-FS readonly-unchanged=$([ "$ro_before" = "$(ro_state)" ] && echo yes || echo no)"
if [ -d "$WORK/untar/archive" ]; then
    bad=$(cd "$WORK/untar" && sha256sum -c "$BASE/manifest" 2>&1 | grep -vc ': OK$')
    echo "LAB-FS untar-files=$(find "$WORK/untar/archive" -type f | wc -l) untar-mismatches=$bad"
else
    echo "LAB-FS untar-files=0 untar-mismatches=missing"
fi
