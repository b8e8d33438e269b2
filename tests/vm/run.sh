#!/usr/bin/env bash
# Boots the stock Debian 12 guest (tests/vm/build.sh, built first if needed) under qemu's TCG and
# runs a job in it; brings back its output and the logs.
#
#   tests/vm/run.sh [--kernel 6.1|6.12] [--timeout SECONDS] [--max-boots N] [--out DIR] JOB_DIR
#
# JOB_DIR holds job.sh (run as root in the guest by `bash job.sh`, cwd the share) and any small
# files it needs; a larger payload goes in as a second disk: JOB_DIR/payload.img (ext4), or a
# directory JOB_DIR/payload/ that is made into one. In the guest the share (read-write, 9p) is
# $LODGE_VM_SHARE and the payload (read-only) $LODGE_VM_PAYLOAD; $LODGE_VM_BOOT counts boots.
#
# Results go to OUT (default JOB_DIR/out-KERNEL, emptied first), which is also the share:
#   bootN.stdout bootN.stderr bootN.status   the job's output and exit status in boot N
#   bootN.journal                            the guest's journal of boot N
#   console-bootN.log                        the serial console (kernel, systemd, the job)
#   bootN.shutdown-seconds                   from the job's end to qemu's exit (host clock)
# A job that leaves a file `reboot-request` in the share gets the guest rebooted (systemctl
# reboot, timed) and booted again on the same disk (a per-run qcow2 overlay on the cached image,
# deleted afterwards), up to --max-boots (default 2).
#
# Exit status: 0 when every boot's job exited 0; the job's status otherwise; 124 when a boot
# exceeded --timeout (qemu killed); 125 when the guest did not run the job.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernel=6.12 timeout=900 max_boots=2 out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kernel=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --max-boots) max_boots=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# = 1 ] || { echo "usage: tests/vm/run.sh [--kernel 6.1|6.12] [--timeout S] [--max-boots N] [--out DIR] JOB_DIR" >&2; exit 2; }
job=$(cd "$1" && pwd)
case "$kernel" in 6.1 | 6.12) ;; *) echo "run.sh: --kernel 6.1 or 6.12" >&2; exit 2 ;; esac
[ -f "$job/job.sh" ] || { echo "run.sh: $job/job.sh missing" >&2; exit 2; }
log() { printf '== vm-run[%s]: %s\n' "$kernel" "$*" >&2; }

image=$(bash "$here/build.sh" | tail -1)
[ -s "$image/done" ] || { echo "run.sh: no guest image ($image)" >&2; exit 1; }

out=${out:-$job/out-$kernel}
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
# The share: the job's small files (not the payload, not other runs' results).
for f in "$job"/*; do
    case "$(basename "$f")" in payload | payload.img | out-*) continue ;; esac
    [ "$f" = "$out" ] && continue
    cp -r "$f" "$out/"
done

work=$(mktemp -d /var/tmp/lodge-vm/run.XXXXXX)
qemu_pid=""
cleanup() {
    [ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
qemu-img create -q -f qcow2 -F raw -b "$image/root.img" "$work/root.qcow2"
payload_args=()
if [ -f "$job/payload.img" ]; then
    payload_args=(-drive "file=$job/payload.img,if=virtio,format=raw,readonly=on")
elif [ -d "$job/payload" ]; then
    size=$(( $(du -sm "$job/payload" | cut -f1) * 11 / 10 + 64 ))
    truncate -s "${size}M" "$work/payload.img"
    mkfs.ext4 -q -F -L payload -d "$job/payload" "$work/payload.img"
    payload_args=(-drive "file=$work/payload.img,if=virtio,format=raw,readonly=on")
fi

status=0
for boot in $(seq "$max_boots"); do
    echo "$boot" > "$out/boot"
    rm -f "$out/reboot-request"
    console=$out/console-boot$boot.log
    log "boot $boot (kernel $(basename "$(readlink -f "$image/vmlinuz-$kernel")"), timeout ${timeout}s, console $console)"
    started=$(date +%s)
    qemu-system-x86_64 \
        -accel tcg,thread=multi -cpu max -smp 2 -m 4096 \
        -kernel "$image/vmlinuz-$kernel" -initrd "$image/initrd-$kernel" \
        -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 apparmor=1 security=apparmor panic=-1 systemd.show_status=1" \
        -drive "file=$work/root.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap" \
        "${payload_args[@]}" \
        -virtfs "local,path=$out,mount_tag=lodgejob,security_model=none,id=lodgejob" \
        -nic none -display none -monitor none -serial "file:$console" -no-reboot \
        </dev/null >"$out/qemu-boot$boot.log" 2>&1 &
    qemu_pid=$!
    job_done=""
    while kill -0 "$qemu_pid" 2>/dev/null; do
        now=$(date +%s)
        if [ -z "$job_done" ] && [ -e "$out/boot$boot.status" ]; then
            job_done=$now
            log "boot $boot: job exited $(cat "$out/boot$boot.status") after $(( now - started )) s; waiting for the guest to go down"
        fi
        if [ $(( now - started )) -ge "$timeout" ]; then
            kill -9 "$qemu_pid" 2>/dev/null; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=""
            log "TIMEOUT: boot $boot still running after ${timeout}s; qemu killed. Console tail:"
            tail -40 "$console" >&2
            [ -s "$out/boot$boot.stdout" ] && { log "job stdout tail:"; tail -20 "$out/boot$boot.stdout" >&2; }
            exit 124
        fi
        sleep 1
    done
    qemu_status=0
    wait "$qemu_pid" || qemu_status=$?
    qemu_pid=""
    ended=$(date +%s)
    if ! [ -e "$out/boot$boot.status" ]; then
        log "boot $boot: qemu exited ($qemu_status) after $(( ended - started )) s without the job finishing. qemu: $(tail -3 "$out/qemu-boot$boot.log"). Console tail:"
        tail -40 "$console" >&2
        exit 125
    fi
    job_done=${job_done:-$ended}
    echo $(( ended - job_done )) > "$out/boot$boot.shutdown-seconds"
    log "boot $boot: $(( ended - started )) s in all; the guest went down $(( ended - job_done )) s after the job ended"
    s=$(cat "$out/boot$boot.status")
    [ "$s" = 0 ] || status=$s
    [ -e "$out/reboot-request" ] || break
    if [ "$boot" = "$max_boots" ]; then
        log "the job asked for another boot, but --max-boots is $max_boots"
        status=${status/#0/1}
    fi
done
exit "$status"
