#!/usr/bin/env bash
# Builds, once, the stock Debian 12 guest of the VM test lane (tests/vm/lane.sh): systemd 252 as
# PID 1, pure cgroup v2, Docker 20.10 (docker.io), AppArmor, fuse3, and two kernels, Debian 12's
# default 6.1 (linux-image-amd64) and 6.12 (linux-image-6.12-amd64, bookworm-security). Booted
# with tests/vm/run.sh under qemu's TCG (these machines' /dev/kvm cannot run a stock kernel).
#
#   tests/vm/build.sh       prints the cache directory on its last line of output
#
# The cache is /var/tmp/lodge-vm/<hash of this file> (LODGE_VM_CACHE moves /var/tmp/lodge-vm):
#   root.img               ext4 root disk (raw; run.sh boots a qcow2 overlay on it)
#   vmlinuz-6.1 initrd-6.1 vmlinuz-6.12 initrd-6.12    booted with -kernel/-initrd
#   versions               the kernel, systemd and Docker versions inside
# Changing this file (the recipe) builds a new one; older ones are removed.
#
# In the guest, lodge-vm-job.service runs at boot, after multi-user.target: it mounts the 9p
# share `lodgejob` (trans=virtio) at /run/lodge-vm/job and a second disk /dev/vdb, when there is
# one, read-only at /run/lodge-vm/payload; runs `bash job.sh` from the share with LODGE_VM_BOOT
# (1, 2, ...), LODGE_VM_SHARE and LODGE_VM_PAYLOAD set; writes bootN.stdout, bootN.stderr,
# bootN.status and bootN.journal back to the share; then reboots if the job left a file named
# `reboot-request` in the share (run.sh boots the same disk again), else powers off.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { printf '== vm-build: %s\n' "$*" >&2; }
if [ "$(id -u)" != 0 ]; then
    echo "tests/vm/build.sh: run as root (debootstrap, chroot, apt)" >&2
    exit 1
fi

# --- host tools: qemu-system-x86 from bookworm-backports (bookworm's 7.2 conflicts with the
# newer qemu-utils these machines have), debootstrap, e2fsprogs (mkfs.ext4 -d).
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
apt_updated=false
apt_update() { $apt_updated || { apt-get update -qq; apt_updated=true; }; }
if ! have qemu-system-x86 || ! command -v qemu-system-x86_64 >/dev/null; then
    if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding the bookworm-backports suite (/etc/apt/sources.list.d/lodge-bookworm-backports.sources)"
        cat > /etc/apt/sources.list.d/lodge-bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt_updated=false
    fi
    log "installing qemu-system-x86 from bookworm-backports"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -t bookworm-backports qemu-system-x86 qemu-utils >/dev/null
fi
missing=()
for p in debootstrap e2fsprogs qemu-utils zstd; do have "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

base=${LODGE_VM_CACHE:-/var/tmp/lodge-vm}
key=$(sha256sum "$here/build.sh" | cut -c1-16)
dir=$base/$key
if [ -s "$dir/done" ]; then
    log "cached: $dir"
    echo "$dir"
    exit 0
fi

mkdir -p "$base"
exec 9>"$base/.lock"
flock 9
if [ -s "$dir/done" ]; then echo "$dir"; exit 0; fi
started=$(date +%s)
for old in "$base"/[0-9a-f]*/; do
    old=${old%/}
    [[ $(basename "$old") =~ ^[0-9a-f]{16}$ ]] && [ "$old" != "$dir" ] || continue
    log "removing the old build $old"
    rm -rf --one-file-system "$old"
done
rm -rf --one-file-system "$dir"
mkdir -p "$dir"
root=$dir/rootfs
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

log "debootstrap bookworm (minbase + systemd) into $root"
# Downloaded packages are kept for the next build (debootstrap's and apt's).
debs=$base/debs
mkdir -p "$debs/partial"
# In a private mount namespace, so that the /proc it mounts in the target never outlives it.
unshare -m --propagation private debootstrap --variant=minbase --cache-dir="$debs" \
    --include=systemd,systemd-sysv,dbus,udev,iproute2,kmod,initramfs-tools,procps,util-linux,busybox-static,zstd \
    bookworm "$root" "$mirror" >"$dir/debootstrap.log" 2>&1 \
    || { tail -30 "$dir/debootstrap.log" >&2; exit 1; }

cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
# A small initramfs: only the modules to reach the root disk and the 9p share.
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk ext4 9p 9pnet_virtio >> "$root/etc/initramfs-tools/modules"

log "installing docker.io, apparmor, fuse3, iptables and the 6.1 and 6.12 kernels in the guest"
# Inside a private mount namespace: /proc, /sys and /dev go away with it.
unshare -m --propagation private sh -ec '
    r=$1
    mount -t proc proc "$r/proc"
    mount --rbind /sys "$r/sys"
    mount --rbind /dev "$r/dev"
    mount --bind "$2" "$r/var/cache/apt/archives"
    chroot "$r" sh -ec "
        export DEBIAN_FRONTEND=noninteractive LC_ALL=C
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends \
            docker.io apparmor fuse3 iptables ca-certificates libseccomp2 \
            linux-image-amd64 linux-image-6.12-amd64
    "
' sh "$root" "$debs" >"$dir/apt.log" 2>&1 || { tail -40 "$dir/apt.log" >&2; exit 1; }
rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root/var/lib/apt/lists/"*

log "configuring the guest (fstab, hostname, journal, lodge-vm-job.service)"
echo lodge-vm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 lodge-vm\n' > "$root/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$root/etc/fstab"
: > "$root/etc/resolv.conf"
mkdir -p "$root/var/log/journal"
chroot "$root" passwd -d root >/dev/null
# No network interface is given: nothing should wait for one.
chroot "$root" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1 || true

cat > "$root/usr/local/sbin/lodge-vm-job" <<'EOF'
#!/bin/bash
# Runs the job of tests/vm/run.sh (see tests/vm/build.sh) and powers off or reboots.
share=/run/lodge-vm/job payload=/run/lodge-vm/payload
mkdir -p "$share" "$payload"
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none lodgejob "$share"; then
    echo "lodge-vm-job: cannot mount the 9p share" > /dev/ttyS0
    systemctl poweroff
    exit 1
fi
[ -b /dev/vdb ] && mount -o ro /dev/vdb "$payload"
boot=$(cat "$share/boot" 2>/dev/null || echo 1)
echo "lodge-vm-job: boot $boot, running job.sh ($(uname -r))" > /dev/ttyS0
rm -f "$share/reboot-request"
cd "$share"
: > "$share/boot$boot.stdout"; : > "$share/boot$boot.stderr"
# The job's output also goes to the serial console, which run.sh logs.
tail -q -n +1 -F "$share/boot$boot.stdout" "$share/boot$boot.stderr" > /dev/ttyS0 2>/dev/null &
tailer=$!
LODGE_VM_BOOT=$boot LODGE_VM_SHARE=$share LODGE_VM_PAYLOAD=$payload \
    bash "$share/job.sh" > "$share/boot$boot.stdout" 2> "$share/boot$boot.stderr" < /dev/null
status=$?
sleep 1
kill "$tailer" 2>/dev/null
journalctl -b --no-pager -o short-monotonic > "$share/boot$boot.journal" 2>&1
echo "$status" > "$share/boot$boot.status.tmp"
sync
mv "$share/boot$boot.status.tmp" "$share/boot$boot.status"
echo "lodge-vm-job: boot $boot, job.sh exited $status" > /dev/ttyS0
if [ -e "$share/reboot-request" ]; then
    systemctl reboot
else
    systemctl poweroff
fi
EOF
chmod 755 "$root/usr/local/sbin/lodge-vm-job"
cat > "$root/etc/systemd/system/lodge-vm-job.service" <<'EOF'
[Unit]
Description=tests/vm job from the 9p share
After=multi-user.target docker.service

[Service]
Type=exec
ExecStart=/usr/local/sbin/lodge-vm-job
KillMode=process

[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable lodge-vm-job.service >/dev/null 2>&1

log "extracting the kernels and initramfs images"
k61=$(cd "$root/boot" && ls vmlinuz-6.1.* | sort -V | tail -1)
k612=$(cd "$root/boot" && ls vmlinuz-6.12.* | sort -V | tail -1)
cp "$root/boot/$k61" "$dir/vmlinuz-6.1"
cp "$root/boot/initrd.img-${k61#vmlinuz-}" "$dir/initrd-6.1"
cp "$root/boot/$k612" "$dir/vmlinuz-6.12"
cp "$root/boot/initrd.img-${k612#vmlinuz-}" "$dir/initrd-6.12"
{
    echo "kernel 6.1:  ${k61#vmlinuz-} ($(chroot "$root" dpkg-query -W -f='${Version}' "linux-image-${k61#vmlinuz-}"))"
    echo "kernel 6.12: ${k612#vmlinuz-} ($(chroot "$root" dpkg-query -W -f='${Version}' "linux-image-${k612#vmlinuz-}"))"
    echo "systemd:     $(chroot "$root" dpkg-query -W -f='${Version}' systemd)"
    echo "docker.io:   $(chroot "$root" dpkg-query -W -f='${Version}' docker.io)"
    echo "apparmor:    $(chroot "$root" dpkg-query -W -f='${Version}' apparmor)"
    echo "fuse3:       $(chroot "$root" dpkg-query -W -f='${Version}' fuse3)"
} > "$dir/versions"
# The guest boots from the disk image; /boot's copies are not needed there.
rm -f "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-*

log "making the ext4 root disk"
truncate -s 12G "$dir/root.img"
mkfs.ext4 -q -F -L lodge-vm-root -d "$root" "$dir/root.img"
rm -rf --one-file-system "$root"
date -u +%FT%TZ > "$dir/done"
cat "$dir/versions" >&2
log "built in $(( $(date +%s) - started )) s: $dir"
echo "$dir"
