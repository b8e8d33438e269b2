#!/usr/bin/env bash
# Installs Lodge on this host: lodge-runc, lodge-mgr and lodge-fs; lodge-mgr and lodge-fs
# running (systemd units ordered before docker.service and containerd.service, or, where PID 1
# is not systemd, a small supervisor with pid files and logs); lodge-runc added to Docker's
# daemon.json (merged, never clobbered) and dockerd reloaded. Running it again changes nothing
# that is already right; install/uninstall.sh reverses it.
#
#   install/install.sh [--bin-dir DIR]    DIR: prebuilt binaries (default: cargo build --release)
#
# Paths can be moved with environment variables (the test suite installs into a scratch
# directory this way): LODGE_PREFIX (/usr/local), LODGE_RUN_DIR (/run/lodge), LODGE_LOG_DIR
# (/var/log/lodge), LODGE_STATE_DIR (/var/lib/lodge), LODGE_FS_MOUNT (/var/lib/lodge-fs),
# LODGE_SUBUID / LODGE_SUBGID (/etc/subuid, /etc/subgid), LODGE_DOCKER_CONFIG
# (/etc/docker/daemon.json), LODGE_SYSTEMD_DIR (/etc/systemd/system), LODGE_INIT (auto:
# "systemd" when PID 1 is systemd, "supervisor" otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "install/install.sh: run as root" >&2
    exit 1
fi
bin_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=$2; shift 2 ;;
        *) echo "install/install.sh: unknown argument $1 (usage: install.sh [--bin-dir DIR])" >&2; exit 2 ;;
    esac
done

prefix=${LODGE_PREFIX:-/usr/local}
run_dir=${LODGE_RUN_DIR:-/run/lodge}
log_dir=${LODGE_LOG_DIR:-/var/log/lodge}
state_dir=${LODGE_STATE_DIR:-/var/lib/lodge}
fs_mount=${LODGE_FS_MOUNT:-/var/lib/lodge-fs}
subuid=${LODGE_SUBUID:-/etc/subuid}
subgid=${LODGE_SUBGID:-/etc/subgid}
docker_config=${LODGE_DOCKER_CONFIG:-/etc/docker/daemon.json}
systemd_dir=${LODGE_SYSTEMD_DIR:-/etc/systemd/system}
if [ -z "${LODGE_INIT:-}" ]; then
    if [ -d /run/systemd/system ]; then LODGE_INIT=systemd; else LODGE_INIT=supervisor; fi
fi
step() { printf '== %s\n' "$*"; }

if [ -z "$bin_dir" ]; then
    command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup, Rust >= 1.87), or pass --bin-dir" >&2; exit 1; }
    for pkg in libseccomp-dev pkg-config fuse3; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="${need:-} $pkg"
    done
    if [ -n "${need:-}" ]; then
        step "installing Debian packages:$need"
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
    fi
    step "building lodge-runc, lodge-mgr and lodge-fs (cargo build --release)"
    cargo build --release -q -p lodge-runtime -p lodge-mgr -p lodge-fs
    bin_dir=target/release
fi

step "installing binaries into $prefix/bin"
mkdir -p "$prefix/bin" "$prefix/lib/lodge"
for b in lodge-runc lodge-mgr lodge-fs; do
    [ -x "$bin_dir/$b" ] || { echo "$bin_dir/$b: missing" >&2; exit 1; }
    if ! cmp -s "$bin_dir/$b" "$prefix/bin/$b"; then
        install -m 0755 "$bin_dir/$b" "$prefix/bin/$b.new"
        mv -f "$prefix/bin/$b.new" "$prefix/bin/$b"
        echo "   $prefix/bin/$b"
    fi
done
install -m 0755 install/supervise.sh "$prefix/lib/lodge/supervise"

mgr_cmd=("$prefix/bin/lodge-mgr" --socket "$run_dir/mgr.sock" --state-dir "$state_dir/mgr"
    --data-root "$state_dir" --subuid "$subuid" --subgid "$subgid")
fs_cmd=("$prefix/bin/lodge-fs" --socket "$run_dir/fs.sock" --mountpoint "$fs_mount")
mkdir -p "$run_dir" "$log_dir" "$state_dir"

up() { # up NAME: waits until the daemon answers
    local bin=$prefix/bin/lodge-$1
    for _ in $(seq 100); do "$bin" --socket "$run_dir/$1.sock" status >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "lodge-$1 did not come up; see $log_dir/$1.log" >&2
    return 1
}

if [ "$LODGE_INIT" = systemd ]; then
    step "systemd units lodge-mgr.service and lodge-fs.service (before docker and containerd)"
    unit() { # unit NAME COMMAND...
        local name=$1; shift
        cat > "$systemd_dir/lodge-$name.service.new" <<UNIT
[Unit]
Description=Lodge $name (system containers)
Before=docker.service containerd.service
After=local-fs.target

[Service]
# Both tell systemd when their socket answers (sd_notify READY=1).
Type=notify
ExecStart=$*
Restart=on-failure
KillMode=process
Delegate=no

[Install]
WantedBy=multi-user.target
UNIT
        mv -f "$systemd_dir/lodge-$name.service.new" "$systemd_dir/lodge-$name.service"
    }
    unit mgr "${mgr_cmd[@]}"
    unit fs "${fs_cmd[@]}"
    # Containers of the cgroupfs driver are in no unit of systemd's (those of the systemd driver
    # are scopes): at shutdown this unit stops first of Lodge's, after Docker and containerd
    # (ordered before them), and halts what is left, systemd inits with SIGRTMIN+3.
    cat > "$systemd_dir/lodge-containers.service.new" <<UNIT
[Unit]
Description=Lodge system containers (halted at shutdown)
After=lodge-mgr.service lodge-fs.service
Wants=lodge-mgr.service lodge-fs.service
Before=docker.service containerd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
# (uninstall.sh stops it without halting anything: it leaves $run_dir/keep-containers)
ExecStop=/bin/sh -c '[ -e $run_dir/keep-containers ] || exec $prefix/bin/lodge-mgr --socket $run_dir/mgr.sock halt --timeout 10'
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
UNIT
    mv -f "$systemd_dir/lodge-containers.service.new" "$systemd_dir/lodge-containers.service"
    systemctl daemon-reload
    systemctl enable --now lodge-mgr.service lodge-fs.service lodge-containers.service
else
    step "starting lodge-mgr and lodge-fs under $prefix/lib/lodge/supervise (PID 1 is not systemd)"
    start() { # start NAME COMMAND...
        local name=$1; shift
        local pidfile=$run_dir/$name.supervisor.pid
        if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "   lodge-$name: already supervised (pid $(cat "$pidfile"))"
            return
        fi
        setsid "$prefix/lib/lodge/supervise" "$run_dir/$name" "$log_dir/$name.log" "$@" \
            </dev/null >/dev/null 2>&1 &
        echo "   lodge-$name: supervised, log $log_dir/$name.log"
    }
    start mgr "${mgr_cmd[@]}"
    start fs "${fs_cmd[@]}"
fi
up mgr
up fs

if [ -e "$docker_config" ] || command -v dockerd >/dev/null; then
    step "adding lodge-runc to $docker_config"
    "$prefix/bin/lodge-mgr" docker-runtime add --config "$docker_config" \
        --runtime-path "$prefix/bin/lodge-runc"
    # dockerd rereads its runtimes on SIGHUP (only for the real config: a moved one is not
    # the running dockerd's).
    if [ -z "${LODGE_DOCKER_CONFIG:-}" ] && pid=$(pidof dockerd 2>/dev/null); then
        # shellcheck disable=SC2086
        kill -HUP $pid && echo "   dockerd reloaded"
    fi
fi
step "installed: $("$prefix/bin/lodge-runc" --version | head -1)"
