#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages (only what is missing).
set -euo pipefail
need=()
for pkg in busybox-static runc crun docker.io iptables libseccomp-dev pkg-config fuse3; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup, Rust >= 1.80)" >&2; exit 1; }

# A Debian image for the Docker client checks: no image registry is reachable, so it is built
# from Debian's packages with debootstrap (once per machine) and `docker import`ed by the tests.
debian_image=/var/tmp/lodge-tests/images/debian-bookworm-procps.tar
if ! [ -s "$debian_image" ]; then
    dpkg-query -W -f='${Status}' debootstrap 2>/dev/null | grep -q "install ok installed" || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    }
    echo "== building $debian_image (debootstrap --variant=minbase --include=procps bookworm)"
    mkdir -p "$(dirname "$debian_image")"
    tmp=$(mktemp -d /var/tmp/lodge-debootstrap.XXXXXX)
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    debootstrap --variant=minbase --include=procps bookworm "$tmp" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    chmod 755 "$tmp" # mktemp's 0700 would become the image's /
    tar -C "$tmp" -cf "$debian_image.tmp" .
    mv "$debian_image.tmp" "$debian_image"
    rm -rf --one-file-system "$tmp"
fi

# Debian images with systemd (the boot test) and with systemd and Docker (Docker inside a system
# container), built the same way, once per machine.
build_image() { # build_image FILE PACKAGES
    [ -s "$1" ] && return 0
    echo "== building $1 (debootstrap --variant=minbase --include=$2 bookworm)"
    tmp=$(mktemp -d /var/tmp/lodge-debootstrap.XXXXXX)
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    debootstrap --variant=minbase --include="$2" bookworm "$tmp" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    chmod 755 "$tmp"
    tar -C "$tmp" -cf "$1.tmp" .
    mv "$1.tmp" "$1"
    rm -rf --one-file-system "$tmp"
}
build_image /var/tmp/lodge-tests/images/debian-bookworm-systemd.tar systemd,systemd-sysv,dbus,procps
build_image /var/tmp/lodge-tests/images/debian-bookworm-docker.tar systemd,systemd-sysv,dbus,procps,docker.io,iptables
