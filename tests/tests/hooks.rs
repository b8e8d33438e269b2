//! OCI hooks: when each runs, what it gets on stdin, and what a failure does.

use lodge_tests::{unique_id, Bundle, Runtime, WORK};
use serde_json::{json, Value};

fn hook(out: &std::path::Path, name: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.json", out.display())], "env": ["HOOK=1"]})
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    let rt = Runtime::new();
    let out = std::path::Path::new(WORK).join(unique_id("hooks"));
    std::fs::create_dir_all(&out).unwrap();
    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| {
        c["root"]["readonly"] = false.into();
        c["hooks"] = json!({
            "prestart": [hook(&out, "prestart")],
            "createRuntime": [hook(&out, "createRuntime")],
            "createContainer": [hook(&out, "createContainer")],
            // Runs inside the container, after pivot_root: its path and output are the container's.
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /tmp/startContainer.json"]}],
            "poststart": [hook(&out, "poststart")],
            "poststop": [hook(&out, "poststop")]
        });
        c["annotations"] = json!({"org.example.key": "value"});
    });
    let id = unique_id("hk");
    rt.ok(&["create", "--bundle", bundle.path(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let read = |name: &str| -> Value {
        serde_json::from_slice(
            &std::fs::read(out.join(format!("{name}.json")))
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        )
        .unwrap()
    };
    for name in ["prestart", "createRuntime"] {
        let s = read(name);
        assert_eq!(s["id"], id.as_str());
        assert_eq!(s["status"], "creating", "{name}");
        assert_eq!(s["pid"], pid, "{name}");
        assert_eq!(s["bundle"], bundle.path());
        assert_eq!(s["annotations"]["org.example.key"], "value");
    }
    assert_eq!(read("createContainer")["id"], id.as_str());
    assert!(
        !out.join("poststart.json").exists(),
        "poststart waits for start"
    );
    rt.ok(&["start", &id]);
    let s = read("poststart");
    assert_eq!(
        (s["status"].as_str(), s["pid"].as_i64()),
        (Some("running"), Some(pid))
    );
    let inside: Value = serde_json::from_slice(
        &std::fs::read(bundle.rootfs().join("tmp/startContainer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(inside["id"], id.as_str());
    rt.wait_status(&id, "stopped");
    assert!(!out.join("poststop.json").exists());
    rt.ok(&["delete", &id]);
    assert_eq!(read("poststop")["status"], "stopped");
    rt.assert_no_residue(&id, &bundle);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_failing_create_runtime_hook_fails_create_and_cleans_up() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| {
        c["hooks"] = json!({"createRuntime": [{"path": "/bin/false", "args": ["false"]}]})
    });
    let id = unique_id("hkfail");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(
        err.contains("createRuntime") && err.contains("/bin/false"),
        "{err}"
    );
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn a_hook_that_times_out_fails() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| {
        c["hooks"] =
            json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]})
    });
    let id = unique_id("hktime");
    let started = std::time::Instant::now();
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(err.contains("timed out"), "{err}");
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn failing_poststart_and_poststop_hooks_do_not_fail_start_or_delete() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["hooks"] = json!({
            "poststart": [{"path": "/bin/false", "args": ["false"]}],
            "poststop": [{"path": "/bin/false", "args": ["false"]}]
        })
    });
    let id = unique_id("hkpost");
    rt.ok(&["create", "--bundle", bundle.path(), &id]);
    rt.ok(&["start", &id]);
    assert_eq!(rt.status(&id), "running");
    let out = rt.run(&["delete", "--force", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("poststop"),
        "the failure is logged"
    );
    rt.assert_no_residue(&id, &bundle);
}
