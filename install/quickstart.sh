#!/usr/bin/env bash
# Installs lodge-runc on this host and runs its main job for now: a busybox container.
# (System containers with systemd come with later milestones; see README.md.)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "install/quickstart.sh: run as root" >&2
    exit 1
fi
step() { printf '\n== %s\n' "$*"; }

step "installing Debian packages (busybox-static, libseccomp-dev, pkg-config)"
need=()
for pkg in busybox-static libseccomp-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup, Rust >= 1.80)" >&2; exit 1; }

step "building lodge-runc (release)"
cargo build --release -p lodge-runtime
install -m 0755 target/release/lodge-runc /usr/local/bin/lodge-runc
echo "installed /usr/local/bin/lodge-runc: $(/usr/local/bin/lodge-runc --version | head -1)"

step "building a busybox bundle in /var/lib/lodge/quickstart"
bundle=/var/lib/lodge/quickstart
if [ ! -x "$bundle/rootfs/bin/sh" ]; then
    rm -rf --one-file-system "$bundle"
    mkdir -p "$bundle"/rootfs/{bin,etc,proc,sys,dev,tmp,root}
    cp /bin/busybox "$bundle/rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$bundle/rootfs/bin/$applet"
    done
    echo "root:x:0:0:root:/root:/bin/sh" > "$bundle/rootfs/etc/passwd"
fi
rm -f "$bundle/config.json"
lodge-runc spec --bundle "$bundle"
# Not a terminal; a user namespace so root inside is an unprivileged user outside.
python3 - "$bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", "echo \"hello from $(hostname): uid $(id -u) inside, mapped as: $(cat /proc/self/uid_map | tr -s ' ')\""]
c["hostname"] = "lodge"
c["linux"]["namespaces"].append({"type": "user"})
c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
json.dump(c, open(path, "w"), indent=2)
PY

step "running it: lodge-runc run --bundle $bundle quickstart"
lodge-runc run --bundle "$bundle" "quickstart-$$"
step "done"
