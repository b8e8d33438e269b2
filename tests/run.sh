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
echo "== unit tests"
cargo test --workspace --exclude lodge-tests
echo "== integration tests (lodge-runc: $LODGE_RUNC)"
cargo test -p lodge-tests -- --test-threads=4
echo "== residue check"
bash tests/check-residue.sh
