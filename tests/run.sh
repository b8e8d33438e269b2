#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, runs the unit tests and the black-box
# integration suite against the built lodge-runc, then checks the host was left as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: run as root (containers, cgroups and mounts need it)" >&2
    exit 1
fi
bash tests/setup.sh
echo "== build (release)"
cargo build --release --workspace --bins
export LODGE_RUNC="$PWD/target/release/lodge-runc"
export LODGE_MGR="$PWD/target/release/lodge-mgr"
export LODGE_FS="$PWD/target/release/lodge-fs"
echo "== unit tests"
cargo test --workspace --exclude lodge-tests
# lodge-runc registers every container with lodge-mgr: serve one for the run, on private
# subuid/subgid files so the host's are not edited (an already running lodge-mgr is used as is).
if ! [ -S /run/lodge/mgr.sock ] || ! "$LODGE_MGR" status >/dev/null 2>&1; then
    mgr_dir=/var/tmp/lodge-tests/mgr
    rm -rf "$mgr_dir"; mkdir -p "$mgr_dir"
    touch "$mgr_dir/subuid" "$mgr_dir/subgid"
    "$LODGE_MGR" --state-dir "$mgr_dir/state" --data-root "$mgr_dir/data" \
        --subuid "$mgr_dir/subuid" --subgid "$mgr_dir/subgid" \
        >"$mgr_dir/log" 2>&1 &
    mgr_pid=$!
    trap 'kill $mgr_pid 2>/dev/null; wait $mgr_pid 2>/dev/null; rm -rf /var/tmp/lodge-tests/mgr' EXIT
    for _ in $(seq 100); do "$LODGE_MGR" status >/dev/null 2>&1 && break; sleep 0.1; done
    "$LODGE_MGR" status
fi
if ! [ -S /run/lodge/fs.sock ] || ! "$LODGE_FS" status >/dev/null 2>&1; then
    fs_log=/var/tmp/lodge-tests/fs.log
    mkdir -p /var/tmp/lodge-tests
    "$LODGE_FS" >"$fs_log" 2>&1 &
    fs_pid=$!
    # `stop`: for good, even if a test left a container registered (SIGTERM would keep its
    # files mounted for a next lodge-fs).
    trap '"$LODGE_FS" stop >/dev/null 2>&1 || kill $fs_pid 2>/dev/null; wait $fs_pid 2>/dev/null; kill ${mgr_pid:-} 2>/dev/null; wait ${mgr_pid:-} 2>/dev/null; rm -rf /var/tmp/lodge-tests/mgr' EXIT
    for _ in $(seq 100); do "$LODGE_FS" status >/dev/null 2>&1 && break; sleep 0.1; done
    "$LODGE_FS" status
fi
echo "== integration tests (lodge-runc: $LODGE_RUNC)"
cargo test -p lodge-tests -- --test-threads=4
echo "== residue check"
bash tests/check-residue.sh
# Lodge on a stock Debian 12 host (systemd, pure cgroup v2, Docker's systemd driver, AppArmor),
# booted under qemu on kernels 6.1 and 6.12: what only such a host can show (tests/vm/lane.sh).
echo "== VM lane"
bash tests/vm/lane.sh
