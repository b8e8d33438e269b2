#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages (only what is missing).
set -euo pipefail
need=()
for pkg in busybox-static runc crun docker.io podman iptables libseccomp-dev pkg-config fuse3; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup, Rust >= 1.87)" >&2; exit 1; }

# Images, built from Debian's packages once per machine (no image registry is reachable):
# Debian with procps for the Docker client checks, with systemd for the boot test, and with
# systemd and Docker for Docker inside a system container.
images=/var/tmp/lodge-tests/images
build=install/images/build.sh
bash $build debian $images/debian-bookworm-procps.tar procps
bash $build debian $images/debian-bookworm-systemd.tar systemd,systemd-sysv,dbus,procps
bash $build debian $images/debian-bookworm-docker.tar \
    systemd,systemd-sysv,dbus,procps,iproute2,iptables,docker.io
