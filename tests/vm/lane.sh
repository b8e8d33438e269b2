#!/usr/bin/env bash
# The VM test lane: Lodge on a stock Debian 12 host (systemd 252 as PID 1, pure cgroup v2,
# Docker 20.10 with its systemd cgroup driver, AppArmor), booted under qemu's TCG on Debian 12's
# 6.1 kernel and on 6.12 (bookworm-security). Builds the release binaries, stages them with
# install/ and the images into a job, runs tests/vm/guest-tests.sh in the guest on each kernel,
# prints the results and `N passed, N failed`, and exits non-zero on any failure.
#
#   bash tests/vm/lane.sh     (as root)
#
# LODGE_VM_LANE picks kernels and suites (default "6.12:full 6.1:full"): `full` adds the
# quickstart image (systemd + Docker inside), nested Docker and a timed reboot with it running;
# `lean` is the rest, in one boot (guest-tests.sh says which test is which). LODGE_VM_ONLY="NAME
# ..." runs only those tests (and install), for debugging.
# The guest image is cached in /var/tmp/lodge-vm (tests/vm/build.sh), the images in
# /var/tmp/lodge-tests/images (as tests/setup.sh), the job and its results in /var/tmp/lodge-vm/lane.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
if [ "$(id -u)" != 0 ]; then
    echo "tests/vm/lane.sh: run as root" >&2
    exit 1
fi
lane=${LODGE_VM_LANE:-6.12:full 6.1:full}
step() { printf '== lane: %s\n' "$*"; }
t_lane=$(date +%s)
timings=()
timed() { # timed LABEL CMD...
    local label=$1 t0 rc=0
    shift
    t0=$(date +%s)
    "$@" || rc=$?
    timings+=("$label: $(( $(date +%s) - t0 )) s")
    return $rc
}

missing=()
for p in libseccomp-dev pkg-config busybox-static debootstrap e2fsprogs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup, Rust >= 1.87)" >&2; exit 1; }

step "guest image (tests/vm/build.sh)"
timed "guest image" bash tests/vm/build.sh >/dev/null
step "cargo build --release --workspace --bins"
timed "cargo build" cargo build --release --workspace --bins
images=/var/tmp/lodge-tests/images
step "images ($images)"
timed "images" sh -c "bash install/images/build.sh busybox $images/busybox.tar &&
    bash install/images/build.sh debian $images/debian-bookworm-docker.tar \
        systemd,systemd-sysv,dbus,procps,iproute2,iptables,docker.io"

job=/var/tmp/lodge-vm/lane
step "staging the job in $job"
stage() {
    rm -rf "$job"
    mkdir -p "$job/payload/bin" "$job/payload/repo" "$job/payload/images"
    for b in lodge-runc lodge-mgr lodge-fs; do cp "target/release/$b" "$job/payload/bin/"; done
    cp -r install "$job/payload/repo/"
    cp "$images/busybox.tar" "$job/payload/images/"
    # The quickstart image without what only apt and people read (.debs debootstrap kept, apt's
    # lists, docs, man pages): `docker import` in the guest under TCG takes about 0.3 s per MB.
    local slim=/var/tmp/lodge-vm/debian-bookworm-docker-slim.tar
    if ! [ -s "$slim" ] || [ "$images/debian-bookworm-docker.tar" -nt "$slim" ]; then
        cp "$images/debian-bookworm-docker.tar" "$slim.tmp"
        tar --delete --wildcards -f "$slim.tmp" './var/cache/apt/archives/*.deb' \
            './var/lib/apt/lists/*' './usr/share/doc/*' './usr/share/man/*'
        mv "$slim.tmp" "$slim"
    fi
    cp "$slim" "$job/payload/images/debian-bookworm-docker.tar"
    local size=$(( $(du -sm "$job/payload" | cut -f1) * 11 / 10 + 64 ))
    truncate -s "${size}M" "$job/payload.img"
    mkfs.ext4 -q -F -L payload -d "$job/payload" "$job/payload.img"
    rm -rf "$job/payload"
    cp tests/vm/guest-tests.sh "$job/"
    printf '#!/bin/bash\nexec bash "$LODGE_VM_SHARE/guest-tests.sh"\n' > "$job/job.sh"
}
timed "staging" stage

total_pass=0 total_fail=0
for entry in $lane; do
    kernel=${entry%%:*} suite=${entry#*:}
    printf 'LODGE_VM_SUITE=%s\nLODGE_VM_ONLY="%s"\n' "$suite" "${LODGE_VM_ONLY:-}" > "$job/tests.conf"
    step "kernel $kernel, suite $suite (tests/vm/run.sh --kernel $kernel)"
    rc=0
    timed "kernel $kernel ($suite)" bash tests/vm/run.sh --kernel "$kernel" --timeout 1200 "$job" || rc=$?
    out=$job/out-$kernel
    for f in "$out"/boot*.stdout; do
        [ -e "$f" ] || continue
        echo "---- [$kernel] $(basename "$f")"
        sed "s/^/[$kernel] /" "$f"
        p=$(grep -c '^ok ' "$f" || true)
        n=$(grep -c '^FAIL ' "$f" || true)
        total_pass=$((total_pass + p)) total_fail=$((total_fail + n))
    done
    if [ "$rc" = 124 ] || [ "$rc" = 125 ]; then
        echo "FAIL [$kernel] vm: the guest did not finish (run.sh exit $rc; see $out/console-boot*.log)"
        total_fail=$((total_fail + 1))
    fi
    for f in "$out"/boot*.stderr; do
        [ -s "$f" ] && { echo "---- [$kernel] $(basename "$f") (tail)"; tail -15 "$f" | sed "s/^/[$kernel] /"; }
    done
    echo "---- [$kernel] logs: $out"
done

timings+=("lane in all: $(( $(date +%s) - t_lane )) s")
step "timings"
printf '   %s\n' "${timings[@]}"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
