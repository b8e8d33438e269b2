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

step "building lodge-runc, lodge-mgr and lodge-fs (release)"
cargo build --release -p lodge-runtime -p lodge-mgr -p lodge-fs
install -m 0755 target/release/lodge-runc /usr/local/bin/lodge-runc
install -m 0755 target/release/lodge-mgr /usr/local/bin/lodge-mgr
install -m 0755 target/release/lodge-fs /usr/local/bin/lodge-fs
echo "installed /usr/local/bin/lodge-runc: $(/usr/local/bin/lodge-runc --version | head -1)"

step "starting lodge-mgr (reserves lodge's block in /etc/subuid and /etc/subgid)"
if lodge-mgr status >/dev/null 2>&1; then
    echo "already running"
else
    mkdir -p /run/lodge /var/log/lodge
    nohup lodge-mgr >>/var/log/lodge/mgr.log 2>&1 &
    echo $! > /run/lodge/mgr.pid
    for _ in $(seq 100); do lodge-mgr status >/dev/null 2>&1 && break; sleep 0.1; done
fi
lodge-mgr status

step "starting lodge-fs (the containers' own /proc and /sys files, FUSE at /var/lib/lodge-fs)"
if lodge-fs status >/dev/null 2>&1; then
    echo "already running"
else
    nohup lodge-fs >>/var/log/lodge/fs.log 2>&1 &
    echo $! > /run/lodge/fs.pid
    for _ in $(seq 100); do lodge-fs status >/dev/null 2>&1 && break; sleep 0.1; done
fi
lodge-fs status

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
# runc's default config, not a terminal. lodge-runc makes it a system container: its own user
# namespace with an exclusive ID range from lodge-mgr (root inside is an unprivileged user
# outside), its files ID-mapped to that root, a delegated cgroup.
cat > "$bundle/config.json" <<'JSON'
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["sh", "-c", "echo \"hello from $(hostname): uid $(id -u) inside, mapped as: $(tr -s ' ' < /proc/self/uid_map), / owned by $(stat -c %U /), $(head -1 /proc/meminfo)\""],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": true
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "lodge",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
  ],
  "linux": {
    "resources": {"devices": [{"allow": false, "access": "rwm"}], "pids": {"limit": 64}, "memory": {"limit": 268435456}},
    "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
    "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }
}
JSON

step "running it: lodge-runc run --bundle $bundle quickstart"
lodge-runc run --bundle "$bundle" "quickstart-$$"
step "done"
