#!/usr/bin/env bash
# The VM lane's tests, run as root inside the stock Debian 12 guest (tests/vm/lane.sh stages
# them; tests/vm/run.sh boots the guest): Lodge installed with install/install.sh on systemd 252,
# pure cgroup v2, Docker 20.10 with its systemd cgroup driver, and AppArmor.
#
# Each test prints `ok NAME (S s)` or `FAIL NAME: reason` followed by indented diagnostics; the
# last line is `N passed, N failed`. Environment (from the job runner): LODGE_VM_SHARE (the 9p
# share: tests.conf, results of the previous boot), LODGE_VM_PAYLOAD (bin/, repo/install/,
# images/), LODGE_VM_BOOT (1, 2). tests.conf sets LODGE_VM_SUITE: `full` runs everything over
# two boots (the second after a timed `systemctl reboot` with a system container running);
# `lean` skips the quickstart, nested Docker and reboot tests and runs in one boot.
set -uo pipefail
LODGE_VM_ONLY=""   # tests.conf may name the tests to run (debugging)
share=${LODGE_VM_SHARE:?} payload=${LODGE_VM_PAYLOAD:?} boot=${LODGE_VM_BOOT:-1}
LODGE_VM_SUITE=full
[ -f "$share/tests.conf" ] && . "$share/tests.conf"
bin=$payload/bin repo=$payload/repo images=$payload/images
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MIB256=268435456
passed=0 failed=0

# --- helpers ---------------------------------------------------------------------------------
die() { echo "REASON: $*"; exit 1; }
info() { echo "INFO: $*"; }
show() { # show CMD...: a diagnostic, indented
    echo "\$ $*"
    timeout 20 "$@" 2>&1 | head -n "${SHOW_LINES:-40}" | sed 's/^/  /'
}
lodge_diag() {
    show systemctl status --no-pager -n 0 lodge-fs.service lodge-mgr.service
    SHOW_LINES=15 show journalctl --no-pager -o short-monotonic -u lodge-fs.service -n 15
    SHOW_LINES=8 show journalctl --no-pager -o short-monotonic -u lodge-mgr.service -n 8
}
docker_diag() {
    SHOW_LINES=25 show journalctl --no-pager -o short-monotonic -u docker.service -n 25
    SHOW_LINES=10 show journalctl --no-pager -o short-monotonic -k -n 10
}
host_mounts() { # the host's mount table without lodge-fs's own mount
    grep -v ' /var/lib/lodge-fs ' /proc/self/mountinfo
}
memtotal() { awk '/^MemTotal:/ {print $2}'; }
# Runs the test function t_NAME in a subshell; prints its verdict and, on failure, its output.
run() {
    local name=$1 t0 log rc
    if [ -n "$LODGE_VM_ONLY" ] && [ "$name" != install ]; then
        case " $LODGE_VM_ONLY " in *" $name "*) ;; *) return 0 ;; esac
    fi
    t0=$(date +%s)
    log=$(mktemp)
    ( set -u; "t_$name" ) >"$log" 2>&1 </dev/null
    rc=$?
    local took=$(( $(date +%s) - t0 ))
    if [ $rc = 0 ]; then
        passed=$((passed + 1))
        echo "ok $name (${took} s)"
        grep '^INFO: ' "$log" | sed 's/^INFO: /    /'
    else
        failed=$((failed + 1))
        local reason
        reason=$(grep '^REASON: ' "$log" | tail -1 | sed 's/^REASON: //')
        echo "FAIL $name: ${reason:-exited $rc} (${took} s)"
        grep -v '^REASON: ' "$log" | sed 's/^/    /'
    fi
    rm -f "$log"
}
wait_docker() {
    for _ in $(seq 120); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
    return 1
}
busybox_image() { # lodge/busybox in the guest's Docker
    docker image inspect lodge/busybox >/dev/null 2>&1 ||
        docker import "$images/busybox.tar" lodge/busybox >/dev/null
}
# make_bundle DIR ARGS_JSON [EXTRA_TOP_LEVEL_JSON]: a busybox bundle with a 256 MiB memory limit
make_bundle() {
    local dir=$1 args=$2 extra=${3:-}
    rm -rf "$dir"
    mkdir -p "$dir/rootfs"
    tar -xf "$images/busybox.tar" -C "$dir/rootfs"
    cat > "$dir/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false, "user": {"uid": 0, "gid": 0}, "args": $args,
    "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "cwd": "/"
  },
  "root": {"path": "rootfs", "readonly": false},
  "hostname": "vmlane",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
  ],
  $extra
  "linux": {
    "resources": {"memory": {"limit": $MIB256}},
    "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
    "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }
}
JSON
}
# Inside a container, as its root: a child cgroup, a process moved into it, a controller enabled.
CHILD_CGROUP_SCRIPT='
set -e
mkdir /sys/fs/cgroup/child
sleep 300 </dev/null >/dev/null 2>&1 &
p=$!
echo $p > /sys/fs/cgroup/child/cgroup.procs
grep -qx "0::/child" /proc/$p/cgroup || { echo "process not moved: $(cat /proc/$p/cgroup)"; exit 1; }
for c in memory pids; do
    grep -qw $c /sys/fs/cgroup/cgroup.subtree_control || echo +$c > /sys/fs/cgroup/cgroup.subtree_control
done
test -e /sys/fs/cgroup/child/memory.max || { echo "memory not enabled for child: $(cat /sys/fs/cgroup/cgroup.subtree_control)"; exit 1; }
kill $p
echo child-cgroup-ok'
cgroup_diag_in() { # cgroup_diag_in EXEC_PREFIX...: the container's cgroup view
    show "$@" sh -c 'cat /proc/self/cgroup; ls -la /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.controllers /sys/fs/cgroup/cgroup.subtree_control; grep cgroup /proc/self/mountinfo'
}
lodge() { timeout "${T:-60}" lodge-runc "$@"; }
# lodge_run_d [GLOBAL_FLAGS...] BUNDLE ID: `lodge-runc run -d`; the container's stdio goes to
# /root/bundles/ID.log (a pipe would be held open by it), which is printed on failure.
lodge_run_d() {
    local id=${*: -1} bundle=${*: -2:1}
    local flags=("${@:1:$#-2}")
    if ! lodge "${flags[@]}" run -d --bundle "$bundle" "$id" >"/root/bundles/$id.log" 2>&1 </dev/null; then
        cat "/root/bundles/$id.log"
        return 1
    fi
}

# qs_wait_booted T0: the quickstart container's `systemctl is-system-running` once it has left
# the starting states (or 400 s after T0, in SECONDS).
qs_wait_booted() {
    local t0=$1 state=""
    for _ in $(seq 600); do
        state=$(qs_exec systemctl is-system-running 2>/dev/null)
        case "$state" in initializing | starting | offline | "") sleep 1 ;; *) break ;; esac
        [ $((SECONDS - t0)) -lt 400 ] || break
    done
    echo "$state"
}

# --- boot 1 ------------------------------------------------------------------------------------
t_install() {
    local out
    out=$(timeout 180 bash "$repo/install/install.sh" --bin-dir "$bin" 2>&1) || {
        echo "$out" | tail -30
        lodge_diag
        die "install/install.sh failed"
    }
    echo "$out" | sed 's/^/install: /' | tail -20
    local s
    for u in lodge-mgr.service lodge-fs.service; do
        s=$(systemctl is-active "$u")
        [ "$s" = active ] || { lodge_diag; die "$u is $s"; }
    done
    local rt=""
    for _ in $(seq 20); do
        rt=$(docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>&1)
        case " $rt " in *" lodge-runc "*) break ;; esac
        sleep 0.5
    done
    case " $rt " in *" lodge-runc "*) ;; *)
        show cat /etc/docker/daemon.json; docker_diag; die "docker info lists the runtimes: $rt" ;;
    esac
    info "$(lodge-runc --version | head -1); docker runtimes: $rt"
}

t_docker_default_apparmor() {
    busybox_image || die "docker import of busybox failed"
    local out
    out=$(timeout 120 docker run --rm --runtime=lodge-runc lodge/busybox true 2>&1) || {
        echo "$out"; docker_diag; lodge_diag; die "docker run (docker-default AppArmor profile): $(echo "$out" | tail -1)"
    }
    out=$(timeout 120 docker run --rm --runtime=lodge-runc --security-opt apparmor=unconfined lodge/busybox true 2>&1) || {
        echo "$out"; docker_diag; die "docker run --security-opt apparmor=unconfined: $(echo "$out" | tail -1)"
    }
    local attr='cat /proc/self/attr/apparmor/current 2>/dev/null || cat /proc/self/attr/current'
    out=$(timeout 120 docker run --rm --runtime=lodge-runc lodge/busybox sh -c "$attr" 2>&1) || {
        echo "$out"; die "docker run ... cat /proc/self/attr/current: $(echo "$out" | tail -1)"
    }
    # A system container runs without Docker's default profile, which forbids the mounts
    # systemd and Docker inside need (docs/security.md).
    local label=$out
    case "$label" in unconfined*) ;; *)
        die "a system container's AppArmor label is '$label', not unconfined (docker-default is left off)" ;;
    esac
    # A plain container (--no-syscont) gets the profile its spec names, as with runc.
    local b=/root/bundles/aa
    make_bundle $b '["sh", "-c", "cat /proc/self/attr/apparmor/current 2>/dev/null || cat /proc/self/attr/current"]'
    sed -i 's/"terminal": false,/"terminal": false, "apparmorProfile": "docker-default",/' $b/config.json
    out=$(cd $b && lodge --no-syscont run aa 2>&1 </dev/null)
    lodge --no-syscont delete -f aa >/dev/null 2>&1
    case "$out" in "docker-default (enforce)"*) ;; *)
        show sh -c 'grep docker /sys/kernel/security/apparmor/profiles'
        die "a plain container's AppArmor label is '$out', not docker-default (enforce)" ;;
    esac
    # A profile that is not loaded: a clear error, as runc gives.
    sed -i 's/"apparmorProfile": "docker-default"/"apparmorProfile": "lodge-no-such-profile"/' $b/config.json
    out=$(cd $b && lodge --no-syscont run aa2 2>&1 </dev/null) && die "a missing AppArmor profile was accepted: $out"
    lodge --no-syscont delete -f aa2 >/dev/null 2>&1
    case "$out" in *lodge-no-such-profile*aa-status*) ;; *)
        die "the error for a missing AppArmor profile does not name it: $out" ;;
    esac
    rm -rf $b
    local unconfined
    unconfined=$(timeout 120 docker run --rm --runtime=lodge-runc --security-opt apparmor=unconfined lodge/busybox sh -c "$attr" 2>&1)
    info "system container: '$label'; with apparmor=unconfined: '$unconfined'"
}

t_bundle_on_shared_mount() {
    local b=/root/bundles/x before during after
    make_bundle $b '["sleep", "100000"]'
    info "/ propagation: $(findmnt -no PROPAGATION /), /root on $(findmnt -no TARGET -T /root)"
    lodge delete -f x >/dev/null 2>&1
    before=$(host_mounts)
    local out
    out=$(lodge_run_d $b x) || {
        echo "$out"; lodge_diag; die "lodge-runc run -d: $(echo "$out" | tail -1)"
    }
    sleep 1
    during=$(host_mounts)
    local state
    state=$(lodge state x 2>&1)
    echo "$state" | grep -q '"status": *"running"' || { echo "$state"; die "container not running after run -d"; }
    local pid
    pid=$(echo "$state" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' | head -1)
    local mem
    mem=$(lodge exec x cat /proc/meminfo 2>&1 | memtotal)
    local cg
    cg=$(lodge exec x sh -c "$CHILD_CGROUP_SCRIPT" 2>&1)
    local host_cg
    host_cg=$(sed -n 's/^0:://p' "/proc/$pid/cgroup")
    local host_cg_dir=/sys/fs/cgroup$(dirname "$host_cg")
    info "init pid $pid in host cgroup $host_cg; memory.max of its parent: $(cat "/sys/fs/cgroup$(dirname "$host_cg")/memory.max" 2>&1)"
    local mounts_during_ok=true
    [ "$(echo "$before" | wc -l)" = "$(echo "$during" | wc -l)" ] || mounts_during_ok=false
    lodge delete -f x >/dev/null 2>&1 || show lodge-runc delete -f x
    sleep 1
    after=$(host_mounts)
    [ -n "$host_cg" ] && [ -e "$host_cg_dir" ] && die "the container's cgroup $host_cg_dir is still there after delete"
    $mounts_during_ok || {
        echo "mounts the host gained while the container ran ($(echo "$before" | wc -l) -> $(echo "$during" | wc -l)):"
        diff <(echo "$before" | cut -d' ' -f5- | sort) <(echo "$during" | cut -d' ' -f5- | sort) | grep '^>' | head -30
        die "the host's mountinfo gained $(( $(echo "$during" | wc -l) - $(echo "$before" | wc -l) )) mounts from the container"
    }
    [ "$(echo "$before" | wc -l)" = "$(echo "$after" | wc -l)" ] || {
        diff <(echo "$before" | cut -d' ' -f5- | sort) <(echo "$after" | cut -d' ' -f5- | sort) | head -30
        die "the host's mountinfo has $(( $(echo "$after" | wc -l) - $(echo "$before" | wc -l) )) more mounts after delete"
    }
    [ "$mem" = 262144 ] || { lodge_diag; die "MemTotal in the container is '$mem' kB, not 262144"; }
    case "$cg" in *child-cgroup-ok*) ;; *)
        echo "$cg"; die "child cgroup in the container: $(echo "$cg" | tail -1)" ;;
    esac
    # The same bundle again.
    out=$(lodge_run_d $b x) || {
        echo "$out"; lodge_diag; die "second lodge-runc run -d of the same bundle: $(echo "$out" | tail -1)"
    }
    out=$(lodge exec x echo again 2>&1)
    lodge delete -f x >/dev/null 2>&1
    [ "$out" = again ] || die "exec in the second run: $out"
    [ "$(host_mounts | wc -l)" = "$(echo "$before" | wc -l)" ] || die "mounts left after the second run"
}

t_systemd_cgroup() {
    local b=/root/bundles/sd unit=lodge-test1.scope
    local dir=/sys/fs/cgroup/system.slice/$unit
    make_bundle $b '["sleep", "100000"]' '"cgroupsPath": "system.slice:lodge:test1",'
    lodge --systemd-cgroup delete -f test1 >/dev/null 2>&1
    local out
    out=$(lodge_run_d --systemd-cgroup $b test1) || {
        echo "$out"; lodge_diag; die "lodge-runc --systemd-cgroup run -d: $(echo "$out" | tail -1)"
    }
    local problems=()
    local delegate
    delegate=$(systemctl show $unit -p Delegate 2>&1)
    [ "$delegate" = Delegate=yes ] || problems+=("systemctl show $unit -p Delegate: $delegate")
    local max
    max=$(cat $dir/memory.max 2>&1)
    [ "$max" = $MIB256 ] || problems+=("$dir/memory.max: $max")
    local mem
    mem=$(lodge exec test1 cat /proc/meminfo 2>&1 | memtotal)
    [ "$mem" = 262144 ] || problems+=("MemTotal in the container: '$mem' kB")
    local cg
    cg=$(lodge exec test1 sh -c "$CHILD_CGROUP_SCRIPT" 2>&1)
    case "$cg" in *child-cgroup-ok*) ;; *) problems+=("child cgroup: $(echo "$cg" | tail -1)") ;; esac
    if [ ${#problems[@]} -gt 0 ]; then
        show systemctl status --no-pager $unit
        show sh -c "ls $dir; cat $dir/cgroup.procs $dir/cgroup.subtree_control"
        echo "$cg"
        cgroup_diag_in lodge-runc exec test1
    fi
    out=$(lodge --systemd-cgroup delete -f test1 2>&1) || problems+=("delete -f: $out")
    sleep 1
    local left
    left=$(systemctl list-units --all --no-legend "$unit" 2>&1)
    [ -z "$left" ] || problems+=("after delete: $left")
    [ -e $dir ] && problems+=("after delete: $dir still exists")
    [ ${#problems[@]} = 0 ] || die "$(IFS=';'; echo "${problems[*]}")"
    info "Delegate=yes, memory.max $max, MemTotal $mem kB, child cgroup made, scope gone after delete"
}

t_docker_memory_limit() {
    busybox_image || die "docker import of busybox failed"
    local cid out
    cid=$(timeout 120 docker run -d --runtime=lodge-runc -m 256m lodge/busybox sleep 100000 2>&1) || {
        echo "$cid"; docker_diag; die "docker run -d -m 256m: $(echo "$cid" | tail -1)"
    }
    local problems=()
    local mem
    mem=$(timeout 30 docker exec "$cid" cat /proc/meminfo 2>&1 | memtotal)
    [ "$mem" = 262144 ] || problems+=("MemTotal in the container: '$mem' kB")
    local scope=/sys/fs/cgroup/system.slice/docker-$cid.scope
    local max
    max=$(cat "$scope/memory.max" 2>&1)
    [ "$max" = $MIB256 ] || problems+=("$scope/memory.max: $max")
    if [ ${#problems[@]} -gt 0 ]; then
        show docker inspect -f '{{.HostConfig.CgroupParent}} {{.State.Pid}}' "$cid"
        show sh -c "cat /proc/\$(docker inspect -f '{{.State.Pid}}' $cid)/cgroup"
        show sh -c "ls $scope; systemctl status --no-pager docker-$cid.scope"
    fi
    timeout 60 docker rm -f "$cid" >/dev/null 2>&1
    [ ${#problems[@]} = 0 ] || die "$(IFS=';'; echo "${problems[*]}")"
    info "MemTotal $mem kB, docker-<id>.scope memory.max $max"
}

# (Beyond the list) systemd rewrites a unit's cgroup attributes on daemon-reload: a limit
# written only through cgroupfs would be lost.
t_limits_survive_daemon_reload() {
    busybox_image || die "docker import of busybox failed"
    local cid
    cid=$(timeout 120 docker run -d --runtime=lodge-runc -m 256m lodge/busybox sleep 100000 2>&1) || {
        echo "$cid"; die "docker run -d -m 256m: $(echo "$cid" | tail -1)"
    }
    local scope=/sys/fs/cgroup/system.slice/docker-$cid.scope
    local before after mem
    before=$(cat "$scope/memory.max" 2>&1)
    systemctl daemon-reload
    sleep 1
    after=$(cat "$scope/memory.max" 2>&1)
    mem=$(timeout 30 docker exec "$cid" cat /proc/meminfo 2>&1 | memtotal)
    [ "$after" = $MIB256 ] || show systemctl show "docker-$cid.scope" -p MemoryMax -p Delegate -p DelegateControllers
    timeout 60 docker rm -f "$cid" >/dev/null 2>&1
    [ "$after" = $MIB256 ] || die "memory.max of docker-<id>.scope was $before, after systemctl daemon-reload $after (MemTotal inside then: $mem kB)"
    [ "$mem" = 262144 ] || die "MemTotal after daemon-reload: $mem kB"
}

t_nested_proc() {
    busybox_image || die "docker import of busybox failed"
    local out
    out=$(timeout 120 docker run --rm --runtime=lodge-runc -m 256m lodge/busybox \
        unshare -m -p -f --mount-proc sh -c 'cat /proc/meminfo' 2>&1)
    local rc=$?
    local mem
    mem=$(echo "$out" | memtotal)
    [ $rc = 0 ] || { echo "$out"; lodge_diag; die "unshare -m -p -f --mount-proc in a system container: $(echo "$out" | tail -1)"; }
    [ "$mem" = 262144 ] || { echo "$out" | head -5; die "MemTotal under unshare --mount-proc: '$mem' kB, not 262144 (the container's limit)"; }
    info "MemTotal under unshare --mount-proc: $mem kB"
}

t_fs_restart_after_failed_start() {
    busybox_image || die "docker import of busybox failed"
    local b=/root/bundles/bad out
    make_bundle $b '["/does-not-exist"]'
    if out=$(lodge_run_d $b bad); then
        lodge delete -f bad >/dev/null 2>&1
        die "lodge-runc run of a bundle whose process does not exist succeeded"
    fi
    info "failed start (lodge-runc, no such program): $(echo "$out" | tail -1)"
    lodge delete -f bad >/dev/null 2>&1
    # A program that is there but cannot be executed: execve fails after the namespaces, the
    # seccomp filter and lodge-fs's registration are all set up.
    make_bundle $b '["/bin/not-elf"]'
    printf 'not an ELF file\n' > $b/rootfs/bin/not-elf
    chmod 755 $b/rootfs/bin/not-elf
    if out=$(lodge_run_d $b bad); then
        lodge delete -f bad >/dev/null 2>&1
        die "lodge-runc run of a bundle whose program is not executable succeeded"
    fi
    info "failed start (lodge-runc, exec format error): $(echo "$out" | tail -1)"
    lodge delete -f bad >/dev/null 2>&1
    out=$(timeout 120 docker run --rm --runtime=lodge-runc lodge/busybox /does-not-exist 2>&1) &&
        die "docker run of a missing program succeeded"
    info "failed start (docker): $(echo "$out" | tail -1 | cut -c1-200)"
    local t0=$SECONDS
    if ! timeout 20 systemctl restart lodge-fs.service; then
        show pgrep -af lodge-fs
        lodge_diag
        die "systemctl restart lodge-fs did not complete within 20 s after a failed start"
    fi
    info "systemctl restart lodge-fs after the failed starts: $((SECONDS - t0)) s"
    # (Type=simple: systemctl returns before lodge-fs listens; give it 10 s to answer.)
    t0=$SECONDS
    local answered=false
    for _ in $(seq 50); do
        out=$(timeout 10 lodge-fs status 2>&1) && { answered=true; break; }
        sleep 0.2
    done
    $answered || { echo "$out"; lodge_diag; die "lodge-fs status after the restart: $(echo "$out" | head -1)"; }
    info "lodge-fs status answered $((SECONDS - t0)) s after systemctl restart returned: $out"
    # A running container's files across lodge-fs and lodge-mgr restarts.
    local cid
    cid=$(timeout 120 docker run -d --runtime=lodge-runc -m 256m lodge/busybox sleep 100000 2>&1) || {
        echo "$cid"; die "docker run -d: $(echo "$cid" | tail -1)"
    }
    local problems=() step
    for step in start "restart lodge-fs" "restart lodge-mgr"; do
        if [ "$step" != start ]; then
            t0=$SECONDS
            timeout 30 systemctl $step.service || problems+=("systemctl $step timed out or failed")
            info "systemctl $step with a container running: $((SECONDS - t0)) s"
        fi
        out=$(timeout 20 docker exec "$cid" cat /proc/uptime 2>&1) || problems+=("after $step: cat /proc/uptime: $out")
        local mem
        mem=$(timeout 20 docker exec "$cid" cat /proc/meminfo 2>&1 | memtotal)
        [ "$mem" = 262144 ] || problems+=("after $step: MemTotal '$mem' kB")
    done
    out=$(timeout 10 lodge-fs status 2>&1) || problems+=("lodge-fs status at the end: $out")
    if [ ${#problems[@]} -gt 0 ]; then lodge_diag; show pgrep -af lodge-; fi
    timeout 60 docker rm -f "$cid" >/dev/null 2>&1
    [ ${#problems[@]} = 0 ] || die "$(IFS=';'; echo "${problems[*]}")"
}

t_stop_clean() {
    # With no container left, stopping lodge-fs leaves nothing of it (no keeper, no mount).
    local running
    running=$(docker ps -q; lodge-runc list -q 2>/dev/null)
    [ -z "$running" ] || info "containers still there: $running"
    local t0=$SECONDS
    timeout 30 systemctl stop lodge-fs.service || { lodge_diag; die "systemctl stop lodge-fs did not finish in 30 s"; }
    info "systemctl stop lodge-fs: $((SECONDS - t0)) s"
    sleep 1
    local left mnt
    left=$(pgrep -af lodge-fs | grep -v "^$$ ")
    mnt=$(grep lodge-fs /proc/self/mountinfo)
    timeout 30 systemctl start lodge-fs.service
    [ "$(systemctl is-active lodge-fs.service)" = active ] || { lodge_diag; die "lodge-fs did not start again"; }
    if [ -n "$left" ]; then
        show systemctl status --no-pager lodge-fs.service
        die "processes left after systemctl stop lodge-fs: $(echo "$left" | tr '\n' ';')"
    fi
    [ -z "$mnt" ] || die "mount left after systemctl stop lodge-fs: $mnt"
}

QS=qs
qs_exec() { timeout "${T:-60}" docker exec "$QS" "$@"; }
t_quickstart() {
    local out t0=$SECONDS
    if ! docker image inspect lodge/quickstart >/dev/null 2>&1; then
        out=$(timeout 300 docker import "$images/debian-bookworm-docker.tar" lodge/quickstart 2>&1) ||
            die "docker import of the quickstart image: $out"
        info "docker import of the quickstart image: $((SECONDS - t0)) s"
    fi
    timeout 60 docker rm -f $QS >/dev/null 2>&1
    t0=$SECONDS
    out=$(timeout 180 docker run -d --runtime=lodge-runc --name $QS -m 1g --stop-signal SIGRTMIN+3 \
        -e LODGE_SPECIAL_VOLUMES=TRUE lodge/quickstart /sbin/init 2>&1) || {
        echo "$out"; docker_diag; lodge_diag; die "docker run -d of the quickstart image: $(echo "$out" | tail -1)"
    }
    local state
    state=$(qs_wait_booted "$t0")
    info "is-system-running '$state' after $((SECONDS - t0)) s"
    local cid
    cid=$(docker inspect -f '{{.Id}}' $QS)
    info "docker-<id>.scope: $(systemctl show "docker-$cid.scope" -p Delegate -p DefaultDependencies -p Conflicts -p KillMode -p TimeoutStopUSec -p MemoryMax | tr '\n' ' ')"
    if [ "$state" != running ]; then
        show docker ps -a
        show docker logs --tail 20 $QS
        show docker exec $QS systemctl --failed --no-pager
        show docker exec $QS sh -c 'for u in $(systemctl --failed --plain --no-legend | cut -d" " -f1); do journalctl -u $u -n 8 --no-pager; done'
        show docker exec $QS systemctl list-jobs --no-pager
        die "systemctl is-system-running in the quickstart container: '$state'"
    fi
    t0=$SECONDS
    out=$(qs_exec sh -c 'for _ in $(seq 300); do docker info >/dev/null 2>&1 && break; sleep 1; done; docker info --format "{{.ServerVersion}} {{.Driver}} {{.CgroupDriver}} {{.CgroupVersion}}"' 2>&1)
    info "inner dockerd: $out ($((SECONDS - t0)) s)"
    out=$(timeout 120 docker exec -i $QS docker import - inner-busybox < "$images/busybox.tar" 2>&1) || {
        echo "$out"; die "docker import inside: $(echo "$out" | tail -1)"
    }
    out=$(T=180 qs_exec docker run --rm inner-busybox echo inner-ran 2>&1)
    [ "$(echo "$out" | tail -1)" = inner-ran ] || {
        echo "$out"
        show docker exec $QS journalctl -u docker -n 30 --no-pager
        die "docker run inside the quickstart container: $(echo "$out" | tail -1)"
    }
    info "inner docker run: ok ($((SECONDS - t0)) s with the import)"
}

# f's second half: /proc inside Docker inside a system container (the "error mounting proc"
# failure of kernels before 6.15), with the container's limits.
t_nested_docker_proc() {
    docker inspect $QS >/dev/null 2>&1 || die "no quickstart container (t_quickstart failed)"
    local out mem
    out=$(T=180 qs_exec docker run --rm inner-busybox cat /proc/meminfo 2>&1) || {
        echo "$out"; show docker exec $QS journalctl -u docker -u containerd -n 20 --no-pager
        die "inner docker run ... cat /proc/meminfo: $(echo "$out" | tail -1)"
    }
    mem=$(echo "$out" | memtotal)
    [ "$mem" = 1048576 ] || die "inner container's MemTotal $mem kB, not 1048576 (the system container's 1 GiB)"
    # (Not required: an inner container's own, lower limit is not what Lodge's files show.)
    out=$(T=180 qs_exec docker run --rm -m 128m inner-busybox cat /proc/meminfo 2>&1)
    info "an inner container with -m 128m sees MemTotal $(echo "$out" | memtotal) kB"
}

# --- boot 2: after `systemctl reboot` with the quickstart container running -------------------
t_stop_clean_reboot() {
    local secs
    secs=$(cat "$share/boot1.shutdown-seconds" 2>/dev/null) || die "no boot1.shutdown-seconds from the runner"
    info "the guest went down $secs s after the job ended (systemctl reboot with the quickstart container running)"
    local cid
    cid=$(docker inspect -f '{{.Id}}' $QS 2>/dev/null)
    if [ -n "$cid" ]; then
        info "the quickstart container then: $(docker inspect -f '{{.State.Status}}, exit code {{.State.ExitCode}}, finished {{.State.FinishedAt}}' $QS)"
        journalctl -b -1 --no-pager -o short-monotonic | grep -F "${cid:0:12}" |
            grep -iE 'stop|kill|exit|timed out' | tail -6 | sed 's/^/INFO:   /'
    fi
    if [ "$secs" -ge 60 ]; then
        SHOW_LINES=30 show sh -c "journalctl -b -1 --no-pager -o short-monotonic | grep -iE 'timed out|stop job|sigkill|killing|lodge|Failed to|qs|docker-' | tail -30"
        SHOW_LINES=20 show sh -c "grep -aE 'stop job|Stopping|timed out|Killing' '$share/console-boot1.log' | tail -20"
        die "shutdown took $secs s (the 90 s stop timeout?)"
    fi
}

# At the host's shutdown the system container is halted by its stop signal (Docker's stop,
# SIGRTMIN+3), not SIGKILLed when its scope's stop times out.
t_shutdown_halts_container() {
    docker inspect $QS >/dev/null 2>&1 || die "no quickstart container"
    local code
    code=$(docker inspect -f '{{.State.ExitCode}}' $QS)
    [ "$code" != 137 ] || {
        die "the quickstart container was SIGKILLed at the host's shutdown (exit code 137; the previous boot's journal is in stop_clean_reboot's output)"
    }
}

t_reboot() {
    wait_docker || die "dockerd not answering after the reboot"
    local s
    for u in lodge-mgr.service lodge-fs.service lodge-containers.service; do
        s=$(systemctl is-active "$u")
        [ "$s" = active ] || { lodge_diag; die "$u is $s after the reboot"; }
    done
    docker inspect $QS >/dev/null 2>&1 || die "the quickstart container is gone after the reboot"
    info "before docker start: $(docker inspect -f '{{.State.Status}} exit {{.State.ExitCode}} {{.State.Error}}' $QS)"
    local out t0=$SECONDS
    out=$(timeout 180 docker start $QS 2>&1) || {
        echo "$out"; docker_diag; lodge_diag; die "docker start after the reboot: $(echo "$out" | tail -1)"
    }
    local state
    state=$(qs_wait_booted "$t0")
    info "after docker start: is-system-running '$state' in $((SECONDS - t0)) s"
    if [ "$state" != running ]; then
        show docker ps -a
        show docker exec $QS systemctl --failed --no-pager
        die "systemctl is-system-running after docker start: '$state'"
    fi
}

# The inner Docker's images were on a lodge-mgr volume: they survive the host's reboot.
t_reboot_inner_images() {
    docker inspect $QS >/dev/null 2>&1 || die "no quickstart container"
    local out
    out=$(T=240 qs_exec sh -c 'for _ in $(seq 200); do docker info >/dev/null 2>&1 && break; sleep 1; done; docker images --format "image {{.Repository}}"' 2>&1)
    case "$out" in *"image inner-busybox"*) ;; *)
        echo "$out"; show lodge-mgr list; die "inner images after the reboot: $(echo "$out" | tail -1)" ;;
    esac
}

# `docker stop` of the quickstart container (stop signal SIGRTMIN+3): systemd inside halts. The
# time is reported; only a halt that needs Docker's SIGKILL even after 60 s fails.
t_quickstart_docker_stop() {
    docker inspect $QS >/dev/null 2>&1 || die "no quickstart container"
    local t0=$SECONDS out
    out=$(timeout 120 docker stop -t 60 $QS 2>&1) || { echo "$out"; die "docker stop: $out"; }
    local took=$((SECONDS - t0)) code
    code=$(docker inspect -f '{{.State.ExitCode}}' $QS)
    info "docker stop -t 60: $took s, exit code $code"
    [ "$code" != 137 ] || {
        show sh -c "journalctl --no-pager -o short-monotonic -n 15 | grep -v lodge-vm-job"
        die "systemd in the container did not halt on SIGRTMIN+3 within 60 s (SIGKILLed, exit 137)"
    }
}

t_uninstall() {
    local out
    # A container run by lodge-runc itself in this boot too (its cgroupfs parent), gone before.
    make_bundle /root/bundles/u '["sleep", "100000"]'
    lodge_run_d /root/bundles/u u >/dev/null && lodge delete -f u >/dev/null 2>&1
    timeout 120 docker rm -f $(docker ps -aq) >/dev/null 2>&1
    for c in $(lodge-runc list -q 2>/dev/null); do lodge delete -f "$c" >/dev/null 2>&1; done
    out=$(timeout 120 bash "$repo/install/uninstall.sh" 2>&1) || { echo "$out"; die "install/uninstall.sh failed: $(echo "$out" | tail -1)"; }
    sleep 1
    local problems=() m c u
    # (/run/lodge-vm and lodge-vm-job.service are the job runner's, not Lodge's.)
    m=$(grep -i lodge /proc/self/mountinfo | grep -v ' /run/lodge-vm/')
    [ -z "$m" ] || problems+=("mounts: $(echo "$m" | cut -d' ' -f5,9,10 | tr '\n' ';')")
    c=$(find /sys/fs/cgroup -name '*lodge*' ! -name lodge-vm-job.service 2>/dev/null)
    [ -z "$c" ] || problems+=("cgroups: $(echo "$c" | tr '\n' ' ')")
    u=$( (systemctl list-units --all --no-legend --plain 'lodge*'; systemctl list-unit-files --no-legend 'lodge*') 2>&1 | grep -v -e '^$' -e '^lodge-vm-job.service')
    [ -z "$u" ] || problems+=("units: $(echo "$u" | tr '\n' ';')")
    local p
    p=$(pgrep -af 'lodge-(fs|mgr|runc)')
    [ -z "$p" ] || problems+=("processes: $(echo "$p" | tr '\n' ';')")
    local rt
    rt=$(docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>&1)
    case " $rt " in *" lodge-runc "*) problems+=("docker still lists lodge-runc") ;; esac
    if [ ${#problems[@]} -gt 0 ]; then
        echo "$out" | tail -15
        local unit
        for unit in $(systemctl list-units --all --no-legend --plain 'lodge*' | awk '{print $1}' | grep -v '^lodge-vm-job'); do
            SHOW_LINES=25 show systemctl status --no-pager -n 15 "$unit"
        done
        [ -n "$c" ] && show sh -c "for d in $(echo $c); do echo \$d: \$(ls \$d | head -5 | tr '\n' ' ') procs: \$(cat \$d/cgroup.procs | tr '\n' ' '); done"
        die "left after uninstall: $(IFS=';'; echo "${problems[*]}")"
    fi
}

# --- the run ------------------------------------------------------------------------------------
echo "# boot $boot, suite $LODGE_VM_SUITE: kernel $(uname -r), $(systemctl --version | head -1)"
wait_docker || echo "# dockerd is not answering"
echo "# docker $(docker info --format '{{.ServerVersion}}, cgroup driver {{.CgroupDriver}}, cgroup v{{.CgroupVersion}}, security {{.SecurityOptions}}' 2>&1)"
echo "# cgroup: $(findmnt -no FSTYPE /sys/fs/cgroup), v1 hierarchies: $(grep -c ' - cgroup ' /proc/self/mountinfo); AppArmor enabled: $(cat /sys/module/apparmor/parameters/enabled 2>&1); / propagation $(findmnt -no PROPAGATION /)"
if [ "$boot" = 1 ]; then
    run install
    run docker_default_apparmor
    run bundle_on_shared_mount
    run systemd_cgroup
    run docker_memory_limit
    run limits_survive_daemon_reload
    run nested_proc
    run fs_restart_after_failed_start
    run stop_clean
    if [ "$LODGE_VM_SUITE" = full ]; then
        run quickstart
        run nested_docker_proc
        # The quickstart container stays running through `systemctl reboot` (timed by run.sh).
        info_line="# rebooting with: $(docker ps --format '{{.Names}} {{.Status}}' | tr '\n' ' ')"
        echo "$info_line"
        touch "$share/reboot-request"
    else
        run uninstall
    fi
else
    run stop_clean_reboot
    run shutdown_halts_container
    run reboot
    run reboot_inner_images
    run quickstart_docker_stop
    run uninstall
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
