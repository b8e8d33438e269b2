#!/usr/bin/env bash
# Installs Lodge (install/install.sh) and runs its main job: a system container booting systemd,
# with Docker inside it. The Debian image is built from Debian's packages the first time (a few
# minutes) and kept in /var/lib/lodge/images. The container keeps running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "install/quickstart.sh: run as root" >&2
    exit 1
fi
step() { printf '\n== %s\n' "$*"; }
started=$(date +%s)

step "installing Lodge"
bash install/install.sh
export PATH=/usr/local/bin:$PATH

images=/var/lib/lodge/images
step "building the images (cached in $images)"
bash install/images/build.sh debian $images/debian-bookworm-docker.tar \
    systemd,systemd-sysv,dbus,procps,iproute2,iptables,docker.io
bash install/images/build.sh busybox $images/busybox.tar

bundle=/var/lib/lodge/quickstart
id=quickstart
lodge-runc delete --force "$id" >/dev/null 2>&1 || true
if ! [ -x "$bundle/rootfs/sbin/init" ]; then
    step "unpacking the image into $bundle/rootfs"
    rm -rf --one-file-system "$bundle"
    mkdir -p "$bundle/rootfs/root/busybox"
    tar -xf $images/debian-bookworm-docker.tar -C "$bundle/rootfs"
    tar -xf $images/busybox.tar -C "$bundle/rootfs/root/busybox"
fi
# A plain OCI config: lodge-runc turns it into a system container (its own user namespace with an
# exclusive ID range, the rootfs ID-mapped to its root, delegated cgroups, lodge-fs's /proc and
# /sys files, systemd's needs); LODGE_SPECIAL_VOLUMES puts /var/lib/docker on a lodge-mgr volume.
cat > "$bundle/config.json" <<'JSON'
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["/sbin/init"],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LODGE_SPECIAL_VOLUMES=TRUE"],
    "cwd": "/"
  },
  "root": {"path": "rootfs", "readonly": false},
  "hostname": "lodge-quickstart",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
  ],
  "linux": {
    "resources": {"memory": {"limit": 1073741824}, "pids": {"limit": 4096}},
    "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
    "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }
}
JSON

step "starting the system container: lodge-runc run -d --bundle $bundle $id"
lodge-runc run -d --bundle "$bundle" "$id"
echo "   inside, root is host uid $(lodge-runc exec "$id" cat /proc/self/uid_map | awk '{print $2}') (an exclusive range of $(lodge-runc exec "$id" cat /proc/self/uid_map | awk '{print $3}') IDs)"

step "waiting for systemd"
state=""
for _ in $(seq 600); do
    state=$(lodge-runc exec "$id" systemctl is-system-running 2>/dev/null || true)
    case "$state" in initializing | starting | offline | "") sleep 0.2 ;; *) break ;; esac
done
echo "   systemctl is-system-running: $state"
[ "$state" = running ] || lodge-runc exec "$id" systemctl --failed --no-pager || true

step "Docker inside: importing busybox and running it"
lodge-runc exec "$id" sh -c '
    for _ in $(seq 300); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
    echo "   inner dockerd: $(docker info --format "{{.ServerVersion}}, storage driver {{.Driver}}")"
    docker image inspect busybox >/dev/null 2>&1 || tar -C /root/busybox -c . | docker import - busybox >/dev/null
    docker run --rm busybox sh -c "echo \"   hello from an inner container: uid \$(id -u), \$(grep MemTotal /proc/meminfo | tr -s \" \")\""
'

step "done in $(( $(date +%s) - started )) s"
cat <<EOF
The system container keeps running:
   lodge-runc exec -t $id bash                 a shell inside (systemd, Docker, free, nproc, …)
   lodge-runc kill $id SIGRTMIN+3; lodge-runc delete $id      halt it, as a VM
Uninstall: install/uninstall.sh
EOF
