//! Escape attempts from a system container's root, which holds every capability inside its user
//! namespace and a seccomp profile that allows mount, unshare and the rest (syscont.rs). Each
//! attempt must fail, and the host must be unchanged. Where an attempt writes a host knob it
//! writes back the value the knob already has, so even a broken runtime changes nothing.

use std::process::Command;

use lodge_tests::{field, remove_tree, unique_id, Bundle, Running, Runtime, WORK};

/// A system container running `sleep`, its rootfs writable, after `edit` of its config.
fn start_with(edit: impl FnOnce(&mut serde_json::Value)) -> Running {
    let mut bundle = Bundle::new(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["root"]["readonly"] = false.into();
        edit(c);
    });
    Running::system(bundle, "escape")
}

fn start() -> Running {
    start_with(|_| {})
}

/// (host start, size) of the container's uid range.
fn uid_map(c: &Running) -> (u64, u64) {
    let out = c.sh("cat /proc/self/uid_map");
    let f: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (f[1], f[2])
}

#[test]
fn root_has_every_capability_yet_cannot_reach_the_host() {
    let c = start();
    assert!(
        c.sh("grep CapEff /proc/self/status").contains(&format!(
            "{:016x}",
            (1u64
                << (std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                    .unwrap()
                    .trim()
                    .parse::<u32>()
                    .unwrap()
                    + 1))
                - 1
        )),
        "the attempts below run with every capability"
    );

    // Device nodes: a block device (the host's disk) and /dev/mem.
    let out = c.sh("mknod /tmp/disk b 8 0; echo rc=$?; mknod /tmp/mem c 1 1; echo rc=$?");
    assert_eq!(out.matches("rc=1").count(), 2, "mknod: {out}");

    // Kernel modules: EPERM (no CAP_SYS_MODULE over the host); on a kernel built without
    // module support (this CI machine's) the syscall does not exist at all.
    let modules = std::path::Path::new("/proc/modules").exists();
    let out = c.sh("printf 'not a module' > /tmp/m.ko; insmod /tmp/m.ko; echo rc=$?");
    let refused = if modules {
        "not permitted"
    } else {
        "does not support"
    };
    assert!(
        !out.contains("rc=0") && out.contains(refused),
        "insmod: {out}"
    );

    // Host sysctls, even after remounting /proc/sys read-write: the classic core_pattern escape.
    let core = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let script = format!(
        "mount -o remount,rw /proc/sys 2>/dev/null; printf '%s' '{}' > /proc/sys/kernel/core_pattern; echo rc=$?",
        core.trim_end()
    );
    let out = c.sh(&script);
    assert!(out.contains("rc=1"), "core_pattern: {out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core
    );

    // Host /sys knobs, even after remounting /sys read-write.
    let thp = "/sys/kernel/mm/transparent_hugepage/enabled";
    if let Ok(now) = std::fs::read_to_string(thp) {
        let selected = now
            .split_whitespace()
            .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
            .unwrap_or("never")
            .to_string();
        let out = c.sh(&format!(
            "mount -o remount,rw /sys 2>/dev/null; echo {selected} > {thp}; echo rc=$?"
        ));
        assert!(out.contains("rc=1"), "{thp}: {out}");
        assert_eq!(std::fs::read_to_string(thp).unwrap(), now);
    }

    // Host files through mounts: a fresh procfs, the root bound elsewhere, /proc/1/root, the
    // host's disk. The secret is readable only by host root.
    let secret_dir = std::path::Path::new(WORK).join(unique_id("secret"));
    std::fs::create_dir_all(&secret_dir).unwrap();
    let secret = secret_dir.join("secret");
    std::fs::write(&secret, "host-secret").unwrap();
    let s = secret.display();
    let script = format!(
        "cat /proc/1/root{s}; mkdir -p /tmp/p /tmp/r /tmp/d; mount -t proc proc /tmp/p && cat /tmp/p/1/root{s}; \
         mount --bind / /tmp/r && cat /tmp/r{s}; mount -t ext4 /dev/vda /tmp/d; mount -t ext4 /dev/sda /tmp/d; \
         cat /tmp/d{s}; echo done"
    );
    let out = c.sh(&script);
    assert!(out.contains("done"), "{out}");
    assert!(!out.contains("host-secret"), "a host file leaked: {out}");
    remove_tree(&secret_dir);

    // Host processes: invisible, so neither signals nor ptrace reach them.
    let mut host = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = host.id();
    let out = c.sh(&format!(
        "kill -9 {pid}; echo rc=$?; cat /proc/{pid}/environ; echo rc=$?"
    ));
    assert_eq!(out.matches("rc=1").count(), 2, "{out}");
    // Nor a procfs for another pid namespace (procfs's pidns option, which lodge-fs's agent
    // would resolve with its own privileges).
    let out = c.sh(&format!(
        "mkdir -p /tmp/q; mount -t proc -o pidns=/proc/1/ns/pid proc /tmp/q; echo rc=$?; \
         test -e /tmp/q/{pid} && echo visible; umount /tmp/q 2>/dev/null; true"
    ));
    assert!(!out.contains("visible") && !out.contains("rc=0"), "{out}");
    assert!(host.try_wait().unwrap().is_none(), "the host process lives");
    let _ = host.kill();
    let _ = host.wait();

    // Read-only mounts stay read-only and masks stay in place, here and in a new mount
    // namespace (lodge-fs's seccomp agent; tests/tests/intercept.rs has the rest).
    for wrap in ["sh -c", "unshare -m sh -c"] {
        let out = c.sh(&format!(
            "{wrap} 'mount -o remount,rw /proc/bus; echo remount $?; \
             mount -o remount,rw,bind /sys; echo remount_sys $?; \
             umount /proc/timer_list; echo unmask $?; umount -l /sys/firmware; echo unmask_dir $?; \
             echo timer $(wc -c < /proc/timer_list); echo firmware $(ls /sys/firmware | wc -l)'"
        ));
        for key in ["remount", "remount_sys", "unmask", "unmask_dir"] {
            assert_ne!(field(&out, key), "0", "{wrap}: {key}: {out}");
        }
        assert_eq!(field(&out, "timer"), "0", "{wrap}: {out}");
        assert_eq!(field(&out, "firmware"), "0", "{wrap}: {out}");
    }

    // Unmasking /proc/kcore (host memory) gives nothing to read.
    let out =
        c.sh("umount /proc/kcore 2>/dev/null; head -c 16 /proc/kcore > /dev/null; echo rc=$?");
    assert!(out.contains("rc=1"), "/proc/kcore: {out}");

    // The runtime's binary on the host.
    let runtime = lodge_tests::runtime_bin();
    let out = c.sh(&format!("printf x >> {} ; echo rc=$?", runtime.display()));
    assert!(out.contains("rc=1"), "runtime binary: {out}");
}

#[test]
fn system_containers_have_disjoint_ranges_and_cannot_read_each_other() {
    // A host directory shared into A holds a file private to B's root.
    let dir = std::path::Path::new(WORK).join(unique_id("cross"));
    std::fs::create_dir_all(&dir).unwrap();
    let shared = dir.display().to_string();
    let a = start_with(|c| {
        c["mounts"].as_array_mut().unwrap().push(
            serde_json::json!({"destination": "/shared", "type": "bind", "source": shared, "options": ["rbind"]}),
        )
    });
    let b = start();
    let (ra, sa) = uid_map(&a);
    let (rb, sb) = uid_map(&b);
    assert!(
        ra + sa <= rb || rb + sb <= ra,
        "ranges overlap: {ra}+{sa} and {rb}+{sb}"
    );
    let file = dir.join("b-private");
    std::fs::write(&file, "b-secret").unwrap();
    std::os::unix::fs::chown(&file, Some(rb as u32), Some(rb as u32)).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = a.sh("ls -n /shared; cat /shared/b-private; echo rc=$?");
    assert!(out.contains("b-private"), "A sees the file: {out}");
    assert!(
        out.contains("rc=1") && !out.contains("b-secret"),
        "A's root reads B's file: {out}"
    );
    drop(a);
    drop(b);
    remove_tree(&dir);
}

/// The kernel itself locks a system container's initial mounts (lodge-runc moves init into a
/// copy of its mount namespace made across user namespaces), so the masks hold even without
/// lodge-fs's agent, and a racing thread cannot slip a call past the agent's checks either.
#[test]
fn the_kernel_locks_the_initial_mounts_without_the_agent() {
    let rt = Runtime::system();
    let mut bundle = Bundle::new(&["sleep", "1000"]);
    bundle.edit(|c| c["root"]["readonly"] = false.into());
    let id = unique_id("locked");
    rt.ok(&["--no-fs", "run", "-d", "--bundle", bundle.path(), &id]);
    let out = rt.sh(
        &id,
        "umount /proc/timer_list; echo unmask $?; umount -l /sys/firmware; echo unmask_dir $?; \
         mount -o remount,rw /proc/bus; echo remount $?; mkdir -p /tmp/p; \
         mount -t proc proc /tmp/p; echo procfs $?; mount --bind /proc /tmp/p; echo bind $?; \
         mount -t tmpfs own /tmp/p && umount /tmp/p; echo own $?; echo timer $(wc -c < /proc/timer_list)",
    );
    rt.ok(&["delete", "--force", &id]);
    rt.assert_no_residue(&id, &bundle);
    for key in ["unmask", "unmask_dir", "remount", "procfs", "bind"] {
        assert_ne!(field(&out, key), "0", "{key}: {out}");
    }
    assert_eq!(field(&out, "own"), "0", "its own mounts are its own: {out}");
    assert_eq!(field(&out, "timer"), "0", "{out}");
}
