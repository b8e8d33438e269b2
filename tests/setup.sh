#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages (only what is missing).
set -euo pipefail
need=()
for pkg in busybox-static runc crun docker.io iptables libseccomp-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup, Rust >= 1.80)" >&2; exit 1; }
