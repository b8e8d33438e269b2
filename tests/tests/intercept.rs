//! Syscall interception (lodge-fs's seccomp agent): procfs and sysfs mounted anywhere inside a
//! system container carry the container's emulation and masks, all the way down to an inner
//! runc's containers; the container's initial masks and read-only mounts cannot be undone in any
//! of its mount namespaces; openat2 with RESOLVE_NO_XDEV reaches emulated files.

use std::path::Path;

use lodge_tests::{field, unique_id, Bundle, PrivateFs, Running, Runtime, WORK};

/// `bundle` running as a system container, its rootfs writable, with a memory limit.
fn start(mut bundle: Bundle, memory_mib: u64) -> Running {
    bundle.edit(|c| {
        c["root"]["readonly"] = false.into();
        c["linux"]["resources"] = serde_json::json!({"memory": {"limit": memory_mib << 20}});
    });
    Running::system(bundle, "trap")
}

fn busybox(memory_mib: u64) -> Running {
    start(Bundle::new(&["sleep", "1000"]), memory_mib)
}

fn seconds(text: &str) -> f64 {
    text.split_whitespace().next().unwrap().parse().unwrap()
}

fn host_proc_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" - proc "))
        .count()
}

#[test]
fn a_new_procfs_inside_is_emulated_in_any_pid_and_user_namespace() {
    let c = busybox(256);
    new_filesystems_are_emulated(|script| c.sh(script));
}

#[test]
fn new_filesystems_are_emulated_where_the_kernel_cannot_mount_onto_detached_trees() {
    // Kernels before 6.15 (Debian 12's 6.1 and 6.12): lodge-fs assembles the tree in a staging
    // mount namespace of its own. `--staged-mounts` takes that path on this kernel too.
    let fs = PrivateFs::start(&["--staged-mounts"]);
    let rt = Runtime::system();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.edit(|c| {
        c["root"]["readonly"] = false.into();
        c["linux"]["resources"] = serde_json::json!({"memory": {"limit": 256u64 << 20}});
    });
    let id = unique_id("staged");
    fs.run_detached(&rt, &b, &id);
    new_filesystems_are_emulated(|script| rt.sh(&id, script));
    rt.ok(&["--fs-socket", &fs.socket(), "delete", "--force", &id]);
    rt.assert_no_residue(&id, &b);
    let log = std::fs::read_to_string(fs.dir.join("log")).unwrap_or_default();
    assert!(log.contains("staging mount namespace"), "{log}");
}

/// A procfs in new pid and user namespaces, one mounted beside /proc, and a sysfs: each with the
/// emulation and masks of the container (`sh` runs a script in it; its memory limit: 256 MiB).
fn new_filesystems_are_emulated(sh: impl Fn(&str) -> String) {
    let host_before = host_proc_mounts();
    for (what, unshare) in [
        ("pid namespace", "unshare -fp --mount-proc"),
        ("user namespace", "unshare -Urfpm --mount-proc"),
    ] {
        let out = sh(&format!(
            "{unshare} sh -c 'echo pid $$; echo mem $(grep MemTotal /proc/meminfo); \
             echo up $(cat /proc/uptime); echo procs $(ls /proc | grep -c \"^[0-9]\"); \
             echo timer $(wc -c < /proc/timer_list)'"
        ));
        assert_eq!(field(&out, "pid"), "1", "{what}: {out}");
        assert_eq!(field(&out, "mem"), "MemTotal: 262144 kB", "{what}: {out}");
        assert!(seconds(field(&out, "up")) < 60.0, "{what}: {out}");
        let procs: u32 = field(&out, "procs").parse().unwrap();
        assert!(procs < 10, "its own pids only: {what}: {out}");
        assert_eq!(field(&out, "timer"), "0", "masked: {what}: {out}");
    }
    // A procfs mounted in the container's own namespaces: the same tree as its /proc, and not
    // one helper mount besides (here or on the host).
    let out = sh(
        "before=$(grep -c . /proc/self/mountinfo); mkdir -p /mnt/p; \
         mount -t proc -o hidepid=2 proc /mnt/p; echo rc $?; \
         echo added $(( $(grep -c . /proc/self/mountinfo) - before )); \
         echo proc_tree $(awk '$5 == \"/proc\" || $5 ~ \"^/proc/\"' /proc/self/mountinfo | grep -c .); \
         echo options $(awk '$5 == \"/mnt/p\" {print $NF}' /proc/self/mountinfo); \
         echo mem $(grep MemTotal /mnt/p/meminfo); \
         echo 5 > /mnt/p/sys/kernel/panic; echo knob_rw $?; \
         mount -o remount,ro /mnt/p; echo remount_ro $?; \
         echo 6 > /mnt/p/sys/kernel/panic; echo knob_ro $? $(cat /mnt/p/sys/kernel/panic); \
         umount -l /mnt/p; echo umount $?",
    );
    assert_eq!(field(&out, "knob_rw"), "0", "{out}");
    assert_eq!(field(&out, "remount_ro"), "0", "{out}");
    assert_eq!(
        field(&out, "knob_ro"),
        "1 5",
        "a read-only procfs has read-only files: {out}"
    );
    assert_eq!(field(&out, "rc"), "0", "{out}");
    assert_eq!(field(&out, "added"), field(&out, "proc_tree"), "{out}");
    assert!(field(&out, "options").contains("hidepid"), "{out}");
    assert_eq!(field(&out, "mem"), "MemTotal: 262144 kB", "{out}");
    assert_eq!(field(&out, "umount"), "0", "{out}");
    assert_eq!(
        host_proc_mounts(),
        host_before,
        "a helper mount on the host"
    );
    // A new sysfs carries the emulated /sys files too.
    let out = sh("mkdir -p /mnt/s; mount -t sysfs sysfs /mnt/s; echo rc $?; \
         echo emulated $(awk '$5 ~ \"^/mnt/s/\"' /proc/self/mountinfo | grep -c lodge-fs); \
         echo firmware $(ls /mnt/s/firmware | wc -l); umount -l /mnt/s");
    assert_eq!(field(&out, "rc"), "0", "{out}");
    assert_ne!(
        field(&out, "emulated"),
        "0",
        "lodge-fs files on the new sysfs: {out}"
    );
    assert_eq!(field(&out, "firmware"), "0", "masked: {out}");
}

#[test]
fn initial_mounts_are_immutable_in_every_mount_namespace() {
    let c = busybox(64);
    let attempts = "mount -o remount,rw /proc/bus; echo remount_ro $?; \
         mount -o remount,rw,bind /sys; echo remount_sys $?; \
         umount /proc/timer_list; echo umount_mask $?; umount -l /proc/acpi; echo umount_dir_mask $?; \
         umount /proc; echo umount_proc $?; umount -l /sys; echo umount_sys $?; umount -l /; echo umount_root $?; \
         mkdir -p /mnt/a /mnt/b; mount --move /proc/acpi /mnt/a; echo move_mask $?; \
         mount --bind /proc /mnt/b; echo bind_proc $?; \
         mount --rbind /proc /mnt/b; echo rbind_proc $?; echo rbind_timer $(wc -c < /mnt/b/timer_list); \
         echo timer $(wc -c < /proc/timer_list); \
         mount -t tmpfs stacked /proc/bus; echo stack $?; \
         mount -o remount,ro,bind /dev/shm; echo rw_to_ro $?";
    for (what, wrap) in [
        ("the container's namespace", "sh -c"),
        ("a new mount namespace", "unshare -m sh -c"),
    ] {
        let out = c.sh(&format!("{wrap} '{attempts}'"));
        let eperm = [
            "remount_ro",
            "remount_sys",
            "umount_mask",
            "umount_dir_mask",
        ];
        for key in eperm {
            assert_ne!(field(&out, key), "0", "{what}: {key}: {out}");
        }
        assert!(out.contains("Operation not permitted"), "{what}: {out}");
        assert!(out.contains("Device or resource busy"), "{what}: {out}");
        for key in [
            "umount_proc",
            "umount_sys",
            "umount_root",
            "move_mask",
            "bind_proc",
        ] {
            assert_ne!(field(&out, key), "0", "{what}: {key}: {out}");
        }
        assert_eq!(field(&out, "rbind_proc"), "0", "{what}: {out}");
        assert_eq!(
            field(&out, "rbind_timer"),
            "0",
            "masked in the copy: {what}: {out}"
        );
        assert_eq!(field(&out, "timer"), "0", "{what}: {out}");
        assert_eq!(
            field(&out, "stack"),
            "0",
            "stacking is allowed: {what}: {out}"
        );
        assert_eq!(
            field(&out, "rw_to_ro"),
            "0",
            "rw → ro is allowed: {what}: {out}"
        );
    }
    // Still there after all that.
    let out = c
        .sh("echo timer $(wc -c < /proc/timer_list); grep -c ' /proc/bus ro' /proc/self/mountinfo");
    assert_eq!(field(&out, "timer"), "0", "{out}");
}

/// The Debian image with docker.io (and so runc) and perl; the suite's busybox rootfs copied in.
fn debian_with_busybox(args: &[&str]) -> Bundle {
    let mut b = Bundle::from_image(
        &Path::new(WORK).join("images/debian-bookworm-docker.tar"),
        args,
    );
    lodge_tests::copy_busybox_rootfs(&b.rootfs().join("root/busybox-rootfs"));
    // What the inner container prints.
    std::fs::write(
        b.rootfs().join("root/busybox-rootfs/probe.sh"),
        "echo mem $(grep MemTotal /proc/meminfo)\necho up $(cat /proc/uptime)\n\
         echo panic $(cat /proc/sys/kernel/panic)\necho cmdline $(wc -c < /proc/cmdline)\n\
         echo cpus $(cat /sys/devices/system/cpu/online)\n",
    )
    .unwrap();
    b.edit(|c| {
        // A mask of the outer container only: the inner runc does not mask /proc/cmdline.
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .push("/proc/cmdline".into());
    });
    b
}

#[test]
fn an_inner_runc_container_gets_the_outer_emulation_and_masks() {
    let c = start(debian_with_busybox(&["sleep", "1000"]), 512);
    // A knob written in the outer container is what the inner one reads; the host keeps its own.
    let host_panic = std::fs::read_to_string("/proc/sys/kernel/panic").unwrap();
    let out = c.sh(
        "echo 17 > /proc/sys/kernel/panic && mkdir -p /root/inner && cd /root/inner && \
         cp -a /root/busybox-rootfs rootfs && runc spec && \
         sed -i 's/\"terminal\": true/\"terminal\": false/; s/\"sh\"$/\"sh\", \"\\/probe.sh\"/' config.json && \
         runc run inner-$$ < /dev/null",
    );
    assert_eq!(field(&out, "mem"), "MemTotal: 524288 kB", "{out}");
    assert!(seconds(field(&out, "up")) < 60.0, "{out}");
    assert_eq!(field(&out, "panic"), "17", "{out}");
    assert_eq!(field(&out, "cmdline"), "0", "the outer mask: {out}");
    assert!(!field(&out, "cpus").is_empty(), "{out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/panic").unwrap(),
        host_panic
    );
}

#[test]
fn openat2_without_crossing_mounts_reaches_emulated_files() {
    // A host file, root's and read-only to others, bound in read-write: only ownership guards it.
    let host_dir = Path::new(WORK).join(unique_id("o2"));
    std::fs::create_dir_all(&host_dir).unwrap();
    let host_file = host_dir.join("keep");
    std::fs::write(&host_file, "keep").unwrap();
    let mut b = debian_with_busybox(&["sleep", "1000"]);
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/hostfile", "type": "bind",
            "source": host_file.display().to_string(), "options": ["bind"]
        }))
    });
    let c = start(b, 128);
    // openat2(dirfd of /proc, path, {resolve: RESOLVE_NO_XDEV}) as runc ≥ 1.2 does; 437 is
    // openat2 on x86_64 and aarch64 alike.
    let perl = r#"use Fcntl; sysopen(my $d, "/proc", O_RDONLY|O_DIRECTORY) or die; for my $p (@ARGV) { my $path = $p; my $how = pack("QQQ", 0, 0, 1); my $fd = syscall(437, fileno($d), $path, $how, 24); if ($fd < 0) { print "$p error $!\n"; next } open(my $f, "<&=", $fd) or die; my $l = <$f>; chomp $l; print "$p $l\n" }"#;
    let out = c.sh(&format!(
        "hostname trap-host; perl -e '{perl}' sys/kernel/hostname uptime meminfo sys/kernel/panic"
    ));
    assert_eq!(field(&out, "sys/kernel/hostname"), "trap-host", "{out}");
    assert!(seconds(field(&out, "uptime")) < 60.0, "emulated: {out}");
    let mem: Vec<&str> = field(&out, "meminfo").split_whitespace().collect();
    assert_eq!(mem, ["MemTotal:", "131072", "kB"], "{out}");
    assert!(!field(&out, "sys/kernel/panic").contains("error"), "{out}");
    // O_WRONLY|O_TRUNC with RESOLVE_NO_XDEV on a file that is not lodge-fs's: the kernel's
    // answer, and the host file untouched (the agent looks before it opens).
    let trunc = r#"my ($p, $how) = ("/hostfile", pack("QQQ", 513, 0, 1)); my $fd = syscall(437, -100, $p, $how, 24); print "trunc ", ($fd < 0 ? "$!" : "opened"), "\n";"#;
    let out = c.sh(&format!("perl -e '{trunc}'"));
    assert_ne!(field(&out, "trunc"), "opened", "{out}");
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "keep");
    drop(c);
    std::fs::remove_dir_all(&host_dir).unwrap();
}

#[test]
fn knobs_trap_sysfs_chown_and_trusted_overlay_xattrs() {
    let chown = "chown 0:0 /sys; echo sys $?; chown 0:0 /sys/kernel; echo below $?";
    let plain = busybox(64);
    let out = plain.sh(chown);
    assert_ne!(field(&out, "sys"), "0", "{out}");
    drop(plain);
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.edit(|c| {
        let env = c["process"]["env"].as_array_mut().unwrap();
        env.push("LODGE_IGNORE_SYSFS_CHOWN=TRUE".into());
    });
    let knob = start(b, 64);
    let out = knob.sh(chown);
    assert_eq!(field(&out, "sys"), "0", "ignored: {out}");
    assert_ne!(field(&out, "below"), "0", "only /sys itself: {out}");
    drop(knob);

    if !cfg!(target_arch = "x86_64") {
        return; // the perl below uses x86_64's syscall numbers
    }
    // setxattr (188) and getxattr (191) of trusted.* names, which only host root may set.
    let perl = r#"my ($p, $name) = ("/root/d", shift); my $v = "y"; my $s = syscall(188, $p, $name, $v, 1, 0); print "set ", ($s == 0 ? "ok" : "$!"), "\n"; my $buf = "\0" x 16; my $n = syscall(191, $p, $name, $buf, 16); print "get ", ($n > 0 ? substr($buf, 0, $n) : "$!"), "\n";"#;
    let script = format!("mkdir -p /root/d; perl -e '{perl}' trusted.overlay.opaque");
    let without = start(debian_with_busybox(&["sleep", "1000"]), 128);
    let out = without.sh(&script);
    assert_ne!(field(&out, "set"), "ok", "{out}");
    drop(without);
    let mut b = debian_with_busybox(&["sleep", "1000"]);
    b.edit(|c| {
        let env = c["process"]["env"].as_array_mut().unwrap();
        env.push("LODGE_ALLOW_TRUSTED_XATTR=TRUE".into());
    });
    let with = start(b, 128);
    let out = with.sh(&script);
    assert_eq!(field(&out, "set"), "ok", "{out}");
    assert_eq!(field(&out, "get"), "y", "{out}");
    // On the host, the directory really has it.
    let dir = std::ffi::CString::new(
        with.bundle
            .rootfs()
            .join("root/d")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let mut buf = [0u8; 8];
    // SAFETY: valid C strings and a buffer of 8 bytes.
    let n = unsafe {
        libc::getxattr(
            dir.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(n, 1);
    assert_eq!(buf[0], b'y');
    // Other trusted names stay refused.
    let out = with.sh(&format!(
        "mkdir -p /root/d; perl -e '{perl}' trusted.overlay.redirect"
    ));
    assert_ne!(field(&out, "set"), "ok", "{out}");
}

#[test]
fn sysinfo_reports_the_containers_memory_and_uptime() {
    let c = busybox(256);
    // busybox's free and uptime read sysinfo(2), not /proc.
    let out = c.sh(
        "echo total $(free -m | awk '/^Mem:/ {print $2}'); echo swap $(free -m | awk '/^Swap:/ {print $2}'); \
         echo up $(uptime | sed 's/.* up \\([^,]*\\),.*/\\1/')",
    );
    assert_eq!(field(&out, "total"), "256", "{out}");
    assert_eq!(field(&out, "swap"), "0", "{out}");
    assert_eq!(field(&out, "up"), "0 min", "the container's age: {out}");
}

/// The agent's path for kernels without statmount(2) (before 6.8): the caller's whole mount
/// table, read from /proc. A private lodge-fs runs it.
#[test]
fn immutability_holds_on_the_mountinfo_path_too() {
    let fs = PrivateFs::start(&["--no-statmount"]);
    let rt = Runtime::system();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.edit(|c| c["root"]["readonly"] = false.into());
    let id = unique_id("old");
    let fs_socket = fs.socket();
    fs.run_detached(&rt, &b, &id);
    let out = rt.sh(
        &id,
        "umount /proc/timer_list; echo unmask $?; mount -o remount,rw /proc/bus; echo remount $?; \
         umount /proc; echo proc $?; mkdir -p /mnt/p && mount -t proc proc /mnt/p && \
         echo masked $(wc -c < /mnt/p/timer_list); umount -l /mnt/p",
    );
    rt.ok(&["--fs-socket", &fs_socket, "delete", "--force", &id]);
    rt.assert_no_residue(&id, &b);
    drop(fs);
    assert_ne!(field(&out, "unmask"), "0", "{out}");
    assert_ne!(field(&out, "remount"), "0", "{out}");
    assert_ne!(field(&out, "proc"), "0", "{out}");
    assert!(out.contains("Device or resource busy"), "{out}");
    assert_eq!(field(&out, "masked"), "0", "{out}");
}

#[test]
fn a_struct_running_into_an_unmapped_page_gets_efault_and_the_agent_lives_on() {
    // mount_setattr's mount_attr and openat2's open_how start 8 bytes before an unmapped page:
    // the kernel answers EFAULT, and so must the agent (a short read once took lodge-fs down).
    let mut b = Bundle::from_image(
        &Path::new(WORK).join("images/debian-bookworm-procps.tar"),
        &["sleep", "1000"],
    );
    b.edit(|c| c["root"]["readonly"] = false.into());
    let c = Running::system(b, "efault");
    let script = r#"
        my $m = syscall(9, 0, 8192, 3, 0x22, -1, 0);
        syscall(11, $m + 4096, 4096) == 0 or die "munmap: $!";
        my $edge = $m + 4096 - 8;
        my ($proc, $knob) = ("/proc", "/proc/sys/kernel/panic");
        $! = 0; my $r = syscall(442, -100, $proc, 0, $edge, 32);
        print "mount_setattr $r ", $! + 0, "\n";
        $! = 0; $r = syscall(437, -100, $knob, $edge, 24);
        print "openat2 $r ", $! + 0, "\n";
    "#;
    // Bounded: with the agent gone the call would wait for an answer for good.
    let out = c.rt.sh(&c.id, &format!("timeout 20 perl -e '{script}'"));
    assert_eq!(field(&out, "mount_setattr"), "-1 14", "EFAULT: {out}");
    assert_eq!(field(&out, "openat2"), "-1 14", "EFAULT: {out}");
    // The agent still answers: a trapped call of another process goes through it.
    let out = c.sh("mkdir -p /mnt/p && mount -t proc proc /mnt/p; echo rc $?; umount /mnt/p");
    assert_eq!(field(&out, "rc"), "0", "{out}");
    assert!(c.rt.run(&["exec", &c.id, "true"]).status.success());
}
