#!/usr/bin/env bash
# Reverses install/install.sh: lodge-runc out of Docker's daemon.json (the rest of the file
# kept) and dockerd reloaded; lodge-mgr and lodge-fs stopped (units removed, or supervisors
# stopped); the binaries removed. lodge-mgr's state and volumes under LODGE_STATE_DIR, and its
# block in /etc/subuid and /etc/subgid, stay (a reinstall finds its containers' ranges again)
# unless --purge. The same environment variables as install.sh move the paths.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    echo "install/uninstall.sh: run as root" >&2
    exit 1
fi
purge=false
[ "${1:-}" = --purge ] && purge=true
prefix=${LODGE_PREFIX:-/usr/local}
run_dir=${LODGE_RUN_DIR:-/run/lodge}
state_dir=${LODGE_STATE_DIR:-/var/lib/lodge}
fs_mount=${LODGE_FS_MOUNT:-/var/lib/lodge-fs}
docker_config=${LODGE_DOCKER_CONFIG:-/etc/docker/daemon.json}
subuid=${LODGE_SUBUID:-/etc/subuid}
subgid=${LODGE_SUBGID:-/etc/subgid}
systemd_dir=${LODGE_SYSTEMD_DIR:-/etc/systemd/system}
step() { printf '== %s\n' "$*"; }

if [ -x "$prefix/bin/lodge-mgr" ] && [ -e "$docker_config" ]; then
    step "removing lodge-runc from $docker_config"
    "$prefix/bin/lodge-mgr" docker-runtime remove --config "$docker_config"
    if [ -z "${LODGE_DOCKER_CONFIG:-}" ] && pid=$(pidof dockerd 2>/dev/null); then
        # shellcheck disable=SC2086
        kill -HUP $pid && echo "   dockerd reloaded"
    fi
fi

# Its stop halts every container at shutdown; here it is stopped without halting any.
if [ -e "$systemd_dir/lodge-containers.service" ]; then
    step "removing lodge-containers.service"
    mkdir -p "$run_dir" && touch "$run_dir/keep-containers"
    systemctl disable --now lodge-containers.service 2>/dev/null || true
    rm -f "$systemd_dir/lodge-containers.service" "$run_dir/keep-containers"
    systemctl daemon-reload 2>/dev/null || true
fi
for name in mgr fs; do
    if [ -e "$systemd_dir/lodge-$name.service" ]; then
        step "removing lodge-$name.service"
        systemctl disable --now "lodge-$name.service" 2>/dev/null || true
        rm -f "$systemd_dir/lodge-$name.service"
        systemctl daemon-reload 2>/dev/null || true
    fi
    pidfile=$run_dir/$name.supervisor.pid
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        step "stopping lodge-$name's supervisor"
        sup=$(cat "$pidfile")
        kill -TERM "$sup"
        for _ in $(seq 100); do kill -0 "$sup" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$run_dir/$name.pid" "$run_dir/$name.supervisor.pid"
done
# lodge-fs stopped by a signal leaves registered containers' files mounted, held by its keeper,
# for the next lodge-fs: let go of them for good.
if [ -x "$prefix/bin/lodge-fs" ]; then
    "$prefix/bin/lodge-fs" --socket "$run_dir/fs.sock" --mountpoint "$fs_mount" stop >/dev/null 2>&1 || true
fi
pkill -f "lodge-fs keeper --keeper-socket $run_dir/fs-keeper.sock" 2>/dev/null || true
rm -f "$run_dir/fs-state.json" "$run_dir/fs-keeper.sock"
umount -l "$fs_mount" 2>/dev/null || true
rmdir "$fs_mount" 2>/dev/null || true

# lodge-runc's default parent cgroup (/lodge/<id>), once its last container is deleted; and any
# keeper scope systemd still lists.
for dir in /sys/fs/cgroup/lodge /sys/fs/cgroup/*/lodge; do
    [ -d "$dir" ] && rmdir "$dir" 2>/dev/null || true
done
if [ -d /run/systemd/system ]; then
    systemctl reset-failed 'lodge-fs-keeper-*.scope' 2>/dev/null || true
fi

step "removing binaries from $prefix/bin"
rm -f "$prefix/bin/lodge-runc" "$prefix/bin/lodge-mgr" "$prefix/bin/lodge-fs"
rm -rf "$prefix/lib/lodge"
rmdir "$run_dir" 2>/dev/null || true
if $purge; then
    step "removing lodge-mgr's state and volumes ($state_dir)"
    rm -rf --one-file-system "$state_dir"
    for f in "$subuid" "$subgid"; do
        [ -e "$f" ] && sed -i '/^lodge:/d' "$f"
    done
fi
step "uninstalled"
