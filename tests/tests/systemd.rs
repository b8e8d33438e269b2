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
    std::fs::write(
        b.rootfs().join("etc/systemd/system/lodge-hello.service"),
        "[Unit]\nDescription=Lodge hello\n[Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
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
    // A service starts and stops; journald has its story; logind runs.
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "systemctl start lodge-hello; echo started $(systemctl is-active lodge-hello); \
         systemctl stop lodge-hello; echo stopped $(systemctl is-active lodge-hello); \
         echo logged $(journalctl -u lodge-hello --no-pager | grep -c 'Started lodge-hello.service'); \
         echo journald $(systemctl is-active systemd-journald); \
         echo logind $(systemctl is-active systemd-logind); loginctl list-sessions --no-legend; echo loginctl $?",
    ]);
    assert_eq!(field(&out, "started"), "active", "{out}");
    assert_eq!(field(&out, "stopped"), "inactive", "{out}");
    assert_eq!(field(&out, "logged"), "1", "{out}");
    assert_eq!(field(&out, "journald"), "active", "{out}");
    assert_eq!(field(&out, "logind"), "active", "{out}");
    assert_eq!(field(&out, "loginctl"), "0", "{out}");
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
        // --memory 512m --cpus 2
        c["linux"]["resources"] = serde_json::json!({
            "memory": {"limit": 512u64 << 20},
            "cpu": {"quota": 200000, "period": 100000},
        });
    });
    // No registry is reachable: the inner image is the suite's busybox rootfs.
    lodge_tests::copy_busybox_rootfs(&b.rootfs().join("root/busybox-rootfs"));
    std::fs::create_dir_all(b.rootfs().join("root/ctx")).unwrap();
    std::fs::write(
        b.rootfs().join("root/ctx/Dockerfile"),
        "FROM busybox\nRUN echo built-inside > /built\nCMD [\"cat\", \"/built\"]\n",
    )
    .unwrap();
    let id = unique_id("dind");
    let state = boot(&rt, &b, &id);
    assert_eq!(state, "running");
    let sh = |script: &str| rt.sh(&id, script);
    let host_cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let text = sh(
        "for _ in $(seq 300); do docker info >/dev/null 2>&1 && break; sleep 0.2; done; \
         tar -C /root/busybox-rootfs -c . | docker import - busybox >/dev/null && \
         docker run --rm busybox sh -c 'echo inner $(id -u)' && \
         docker run --rm --network none busybox echo isolated && \
         docker info --format 'driver {{.Driver}}'; \
         echo outer_mem $(free -m | awk '/^Mem:/ {print $2}'); echo outer_cpus $(nproc); \
         docker run --rm busybox sh -c 'echo inner_mem $(grep MemTotal /proc/meminfo | tr -s \" \"); \
             echo inner_cpus $(grep -c ^processor /proc/cpuinfo); \
             echo inner_free $(free -m | awk \"/^Mem:/ {print \\$2}\"); echo inner_nproc $(nproc)'; \
         docker save busybox -o /root/bb.tar && docker rmi -f busybox >/dev/null && \
         docker load -i /root/bb.tar >/dev/null && docker run --rm busybox echo loaded; \
         docker build -q -t built /root/ctx >/dev/null && docker run --rm built",
    );
    assert_eq!(field(&text, "inner"), "0", "{text}");
    assert!(text.contains("isolated"), "{text}");
    assert_eq!(field(&text, "driver"), "overlay2", "{text}");
    assert_eq!(field(&text, "outer_mem"), "512", "{text}");
    assert_eq!(field(&text, "outer_cpus"), host_cpus.to_string(), "{text}");
    assert_eq!(field(&text, "inner_mem"), "MemTotal: 524288 kB", "{text}");
    assert_eq!(field(&text, "inner_cpus"), host_cpus.to_string(), "{text}");
    assert_eq!(
        field(&text, "inner_free"),
        "512",
        "busybox's free (sysinfo): {text}"
    );
    assert_eq!(field(&text, "inner_nproc"), host_cpus.to_string(), "{text}");
    assert!(text.contains("loaded"), "docker load: {text}");
    assert!(text.contains("built-inside"), "docker build: {text}");
    let volume = sh("grep -c ' /var/lib/docker ' /proc/self/mountinfo");
    assert_eq!(
        volume.trim(),
        "1",
        "the inner images on lodge-mgr's volume: {volume}"
    );
    // Bridge networking with a published port, reached from the system container.
    let text = sh(
        "docker run -d --name web -p 8080:80 busybox sh -c \
             'mkdir /www && echo hello-web > /www/index.html && httpd -f -p 80 -h /www' >/dev/null; \
         for _ in $(seq 50); do \
             /root/busybox-rootfs/bin/busybox wget -qO- http://127.0.0.1:8080/ 2>/dev/null && break; sleep 0.2; \
         done; docker rm -f web >/dev/null",
    );
    assert!(text.contains("hello-web"), "port publishing: {text}");
    // The inner images outlive a halt and a new start of the system container.
    rt.ok(&["kill", &id, "SIGRTMIN+3"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    let state = boot(&rt, &b, &id);
    assert_eq!(state, "running");
    let text = sh(
        "for _ in $(seq 300); do docker info >/dev/null 2>&1 && break; sleep 0.2; done; \
         docker images --format 'image {{.Repository}}'",
    );
    assert!(
        text.contains("image busybox") && text.contains("image built"),
        "{text}"
    );
    halt(&rt, &b, &id);
}
