//! pause/resume, ps, update and events on a running container, and their failure paths.

use lodge_tests::{controller_dir, unique_id, Bundle, Runtime};
use serde_json::{json, Value};

fn running(rt: &Runtime, args: &[&str]) -> (String, Bundle) {
    let bundle = Bundle::new(args);
    let id = unique_id("mg");
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    (id, bundle)
}

fn proc_state(pid: i64) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .chars()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn pause_and_resume_freeze_the_processes() {
    let rt = Runtime::new();
    let (id, bundle) = running(
        &rt,
        &["sh", "-c", "while true; do echo tick >> /dev/null; done"],
    );
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["pause", &id]);
    assert_eq!(rt.status(&id), "paused");
    let usage = |p: i64| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
        let f: Vec<String> = stat[stat.rfind(')').unwrap() + 2..]
            .split(' ')
            .map(String::from)
            .collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = usage(pid);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(usage(pid), before, "a frozen process uses no CPU");
    assert_ne!(proc_state(pid), "R");

    let err = rt.fails(&["pause", &id]);
    assert!(err.contains("paused") && err.contains("running"), "{err}");
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(err.contains("paused"), "{err}");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.status(&id), "running");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(usage(pid) > before, "running again");
    let err = rt.fails(&["resume", &id]);
    assert!(err.contains("running") && err.contains("paused"), "{err}");

    // A paused container can still be deleted with --force.
    rt.ok(&["pause", &id]);
    rt.ok(&["delete", "--force", &id]);
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn ps_lists_the_containers_processes() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, &["sh", "-c", "sleep 1000 & sleep 1001"]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let pids: Vec<i64> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    // sh runs the first sleep in the background and execs the second.
    assert_eq!(pids.len(), 2, "two sleeps: {pids:?}");
    let table = rt.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains("sleep 100")).count(),
        2,
        "{table}"
    );
    assert!(
        !table.contains("lodge-runc"),
        "only the container's processes: {table}"
    );
    let custom = rt.ok(&["ps", &id, "-o", "pid,comm"]);
    assert!(
        custom
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["PID", "COMMAND"]),
        "{custom}"
    );
}

#[test]
fn update_changes_limits() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, &["sleep", "1000"]);
    let path = format!("/lodge/{id}");
    let read = |controller: &str, v1: &str, v2: &str| {
        let (dir, is_v2) = controller_dir(controller, &path);
        std::fs::read_to_string(dir.join(if is_v2 { v2 } else { v1 }))
            .unwrap()
            .trim()
            .to_string()
    };
    rt.ok(&[
        "update",
        "--memory",
        "64m",
        "--pids-limit",
        "33",
        "--cpu-quota",
        "20000",
        "--cpu-period",
        "100000",
        &id,
    ]);
    assert_eq!(
        read("memory", "memory.limit_in_bytes", "memory.max"),
        "67108864"
    );
    assert_eq!(read("pids", "pids.max", "pids.max"), "33");
    let (cpu, v2) = controller_dir("cpu", &path);
    if v2 {
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.max")).unwrap().trim(),
            "20000 100000"
        );
    } else {
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.cfs_quota_us"))
                .unwrap()
                .trim(),
            "20000"
        );
    }

    // The JSON form, as containerd sends it on stdin.
    let file = std::path::Path::new(lodge_tests::WORK).join(format!("{}.json", unique_id("res")));
    std::fs::write(
        &file,
        json!({"memory": {"limit": 134217728}, "pids": {"limit": 44}}).to_string(),
    )
    .unwrap();
    rt.ok(&["update", "--resources", file.to_str().unwrap(), &id]);
    assert_eq!(
        read("memory", "memory.limit_in_bytes", "memory.max"),
        "134217728"
    );
    assert_eq!(read("pids", "pids.max", "pids.max"), "44");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn update_failures() {
    let rt = Runtime::new();
    let (id, bundle) = running(&rt, &["sleep", "1000"]);
    let err = rt.fails(&["update", "--memory", "lots", &id]);
    assert!(err.contains("--memory") && err.contains("lots"), "{err}");
    // Below what the container already uses: the kernel refuses, and says so.
    let err = rt.fails(&["update", "--memory", "4096", &id]);
    assert!(err.contains("memory"), "{err}");
    let err = rt.fails(&["update", "--memory", "64m", "no-such-container"]);
    assert!(err.contains("does not exist"), "{err}");
    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    let err = rt.fails(&["update", "--memory", "64m", &id]);
    assert!(err.contains("stopped"), "{err}");
    rt.ok(&["delete", &id]);
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn events_report_stats() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["sh", "-c", "sleep 1000 & sleep 1000"]);
    bundle.edit(|c| c["linux"]["resources"]["memory"] = json!({"limit": 100663296}));
    let id = unique_id("ev");
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let ev: Value = serde_json::from_str(rt.ok(&["events", "--stats", &id]).trim()).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    assert_eq!(ev["data"]["pids"]["current"], 2, "sh exec'd the last sleep");
    assert_eq!(ev["data"]["memory"]["usage"]["limit"], 100663296);
    assert!(ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert!(ev["data"]["cpu"]["usage"]["total"].as_u64().unwrap() > 0);

    // A stream ends by itself when the container stops.
    let child = rt
        .command(&["events", "--interval", "100ms", &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(350));
    rt.ok(&["kill", "--all", &id, "KILL"]);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(lines >= 2, "{lines} samples");
    let err = rt.fails(&["events", "--stats", &id]);
    assert!(err.contains("stopped"), "{err}");
    let err = rt.fails(&["events", "--interval", "soon", &id]);
    assert!(err.contains("interval"), "{err}");
}
