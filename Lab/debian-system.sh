# A Debian system for lguest to boot (sourced by lab.sh): Debian bookworm with systemd, udev,
# the cloud kernel and initramfs-tools on an ext4 root image, built once by mmdebstrap from
# Debian's packages and cached. Its own kernel and initrd (from its /boot) are kept beside it.
# Its default target is multi-user.target, as a server's is. systemd-networkd gives its
# Ethernet link 192.0.2.2/24 (the lab host is 192.0.2.1 on the TAP). A unit in the image
# reports from inside once the boot is over and then does what lguest.action= on the kernel
# command line says (poweroff, reboot, halt; anything else: nothing).

DEBIAN_SYSTEM_PACKAGES="systemd-sysv udev linux-image-cloud-amd64 initramfs-tools iproute2"

# Sets DEBIAN_SYSTEM to the cached image's directory (root.img, vmlinuz, initrd.img).
debian_system_path() {
    local key
    key=$({
        echo "$L2_DISK_SUITE $DEBIAN_SYSTEM_PACKAGES"
        declare -f build_debian_system debian_system_report
    } | hash_of)
    DEBIAN_SYSTEM=$CACHE/images/debian-system-$key
}

# The script the image's lguest-report.service runs (through systemd-run, so that the boot is
# over when it asks): markers on the console, then the action.
debian_system_report() {
    cat <<'REPORT'
#!/bin/sh
# /dev/console, not /dev/ttyS0: serial-getty's vhangup() cuts off whoever else has ttyS0 open,
# but spares descriptors opened through the console.
exec >/dev/console 2>&1
state=$(systemctl is-system-running --wait)
echo "LGUEST-DEBIAN state=$state failed=$(systemctl --failed --no-legend | wc -l)"
echo "LGUEST-DEBIAN-ROOT $(findmnt -n -o SOURCE,FSTYPE /)"
systemd-analyze | sed 's/^/LGUEST-DEBIAN-ANALYZE /'
ip -br addr | sed 's/^/LGUEST-DEBIAN-IP /'
# The lab host, through the NIC networkd configured: its HTTP server's /probe (bash's /dev/tcp:
# no HTTP client in the image).
if ip -br link | grep -q '^e'; then
    reply=$(timeout 20 bash -c 'exec 3<>/dev/tcp/192.0.2.1/8080 && printf "GET /probe HTTP/1.0\r\n\r\n" >&3 && cat <&3' 2>&1 | tail -n 1)
    # networkd's own record of the link: /run/systemd/netif/links/IFINDEX.
    link=$(ip -br link | awk '$1 ~ /^e/ { print $1; exit }')
    state=$(awk -F= '$1 == "OPER_STATE" { o = $2 } $1 == "ADMIN_STATE" { a = $2 } END { print o "/" a }' "/run/systemd/netif/links/$(cat "/sys/class/net/$link/ifindex")" 2>/dev/null)
    echo "LGUEST-DEBIAN-NET networkd=$(systemctl is-active systemd-networkd) link=$link=$state reply=$reply"
fi
case " $(cat /proc/cmdline) " in
*" lguest.action=poweroff "*) systemctl poweroff ;;
*" lguest.action=reboot "*) systemctl reboot ;;
*" lguest.action=halt "*) systemctl halt ;;
esac
REPORT
}

build_debian_system() {
    debian_system_path
    [[ -f $DEBIAN_SYSTEM/.done ]] && return
    PACKAGES="mmdebstrap e2fsprogs" install_packages
    local t0 root
    t0=$(now)
    note "building the Debian system once (mmdebstrap $L2_DISK_SUITE: $DEBIAN_SYSTEM_PACKAGES)"
    rm -rf "$DEBIAN_SYSTEM"
    mkdir -p "$DEBIAN_SYSTEM"
    root=$DEBIAN_SYSTEM/root
    debian_system_report >"$DEBIAN_SYSTEM/lguest-report"
    mmdebstrap --quiet --variant=minbase --include="${DEBIAN_SYSTEM_PACKAGES// /,}" \
        --customize-hook="copy-in $DEBIAN_SYSTEM/lguest-report /usr/local/bin" \
        --customize-hook='chmod 755 "$1/usr/local/bin/lguest-report"' \
        --customize-hook='printf "[Unit]\nDescription=lguest lab report\n[Service]\nType=oneshot\nExecStart=/usr/bin/systemd-run --on-active=1 /usr/local/bin/lguest-report\n[Install]\nWantedBy=multi-user.target\n" >"$1/etc/systemd/system/lguest-report.service"' \
        --customize-hook='chroot "$1" systemctl enable lguest-report.service' \
        --customize-hook='chroot "$1" systemctl set-default multi-user.target' \
        --customize-hook='printf "[Match]\nType=ether\n[Network]\nAddress=192.0.2.2/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n" >"$1/etc/systemd/network/10-lab.network"' \
        --customize-hook='chroot "$1" systemctl enable systemd-networkd.service' \
        --customize-hook='chroot "$1" systemctl mask systemd-networkd-wait-online.service' \
        --customize-hook='echo lguest-debian >"$1/etc/hostname"; echo "/dev/vda / ext4 rw 0 1" >"$1/etc/fstab"' \
        --customize-hook='chroot "$1" passwd -d root' \
        "$L2_DISK_SUITE" "$root" >&2 || { rm -rf "$DEBIAN_SYSTEM"; die "mmdebstrap failed"; }
    cp -L "$root/vmlinuz" "$DEBIAN_SYSTEM/vmlinuz"
    cp -L "$root/initrd.img" "$DEBIAN_SYSTEM/initrd.img"
    mkfs.ext4 -q -L root -d "$root" "$DEBIAN_SYSTEM/root.img" 2G >&2 || die "mkfs.ext4 failed"
    rm -rf "$root" "$DEBIAN_SYSTEM/lguest-report"
    touch "$DEBIAN_SYSTEM/.done"
    note "the Debian system is ready in $(elapsed "$t0") s: $DEBIAN_SYSTEM"
}

cmd_debian_system() {
    if [[ ${1:-} == --check ]]; then
        debian_system_path
        [[ -f $DEBIAN_SYSTEM/.done ]] && { echo "$DEBIAN_SYSTEM"; return 0; }
        return 1
    fi
    [[ $# -eq 0 ]] || usage_error "debian-system: unknown argument $1"
    build_debian_system
    echo "$DEBIAN_SYSTEM"
}
