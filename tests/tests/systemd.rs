//! systemd as a system container's init, through lodge-runc: it boots to "running" with no
//! failed unit, sees its own memory (lodge-fs) and its own cgroup (init.scope), and halts on
//! SIGRTMIN+3 like on a VM.

use std::path::Path;
use std::time::{Duration, Instant};

use lodge_tests::{field, unique_id, Bundle, Runtime, WORK};

#[test]
fn systemd_boots_in_a_system_container() {
    let rt = Runtime::system();
    let mut b = Bundle::from_image(
        &Path::new(WORK).join("images/debian-bookworm-systemd.tar"),
        &["/sbin/init"],
    );
    b.edit(|c| {
        c["root"]["readonly"] = false.into();
        c["hostname"] = "lodge-systemd".into();
        c["linux"]["resources"] = serde_json::json!({"memory": {"limit": 512u64 << 20}});
    });
    let id = unique_id("systemd");
    let state = boot(&rt, &b, &id);
    let failed = rt.run(&[
        "exec",
        &id,
        "systemctl",
        "--failed",
        "--no-legend",
        "--no-pager",
    ]);
    assert_eq!(
        state,
        "running",
        "failed units: {}",
        String::from_utf8_lossy(&failed.stdout)
    );
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo mem $(free -m | awk '/^Mem:/ {print $2}'); echo cgroup $(grep ^0:: /proc/1/cgroup); \
         echo virt $(systemd-detect-virt); echo journal $(journalctl -b --no-pager | grep -c 'Startup finished')",
    ]);
    assert_eq!(field(&out, "mem"), "512", "{out}");
    assert_eq!(field(&out, "cgroup"), "0::/init.scope", "{out}");
    assert_eq!(field(&out, "virt"), "container-other", "{out}");
    // (The boot id is the host's, so an earlier boot of the same rootfs may count too.)
    assert!(
        field(&out, "journal").parse::<u32>().unwrap() >= 1,
        "journald logged the boot: {out}"
    );
    // systemd halts on SIGRTMIN+3, as `docker stop` with STOPSIGNAL does.
    halt(&rt, &b, &id);
}

/// Boots the image's systemd and waits until it says how the boot went.
fn boot(rt: &Runtime, b: &Bundle, id: &str) -> String {
    rt.ok(&["run", "-d", "--bundle", b.path(), id]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = rt.run(&["exec", id, "systemctl", "is-system-running"]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // "offline": systemctl could not reach systemd yet (its private socket is not up).
        let booting = matches!(state.as_str(), "initializing" | "starting" | "offline" | "");
        if !booting || Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Halts systemd (SIGRTMIN+3) and deletes the container.
fn halt(rt: &Runtime, b: &Bundle, id: &str) {
    rt.ok(&["kill", id, "SIGRTMIN+3"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.status(id) != "stopped" {
        assert!(Instant::now() < deadline, "systemd did not halt");
        std::thread::sleep(Duration::from_millis(200));
    }
    rt.ok(&["delete", id]);
    rt.assert_no_residue(id, b);
}

#[test]
fn docker_runs_inside_a_system_container() {
    let rt = Runtime::system();
    let mut b = Bundle::from_image(
        &Path::new(WORK).join("images/debian-bookworm-docker.tar"),
        &["/sbin/init"],
    );
    b.edit(|c| {
        c["root"]["readonly"] = false.into();
        // Inner images on a host-backed volume (lodge-mgr), not in the container's own layer.
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("LODGE_SPECIAL_VOLUMES=TRUE".into());
        c["linux"]["resources"] = serde_json::json!({"memory": {"limit": 1u64 << 30}});
    });
    // No registry is reachable: the inner image is the suite's busybox rootfs.
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(lodge_tests::busybox_template())
        .arg(b.rootfs().join("root/busybox-rootfs"))
        .status()
        .unwrap();
    assert!(st.success());
    let id = unique_id("dind");
    let state = boot(&rt, &b, &id);
    assert_eq!(state, "running");
    let out = rt.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "tar -C /root/busybox-rootfs -c . | docker import - busybox >/dev/null && \
         docker run --rm busybox sh -c 'echo inner $(id -u)' && \
         docker run --rm --network none busybox echo isolated && \
         docker info --format 'driver {{.Driver}}'",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(field(&text, "inner"), "0", "{text}");
    assert!(text.contains("isolated"), "{text}");
    assert_eq!(field(&text, "driver"), "overlay2", "{text}");
    halt(&rt, &b, &id);
}
