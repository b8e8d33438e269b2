//! Terminals through --console-socket, and bundles from `spec` / `spec --rootless` used unchanged.

use std::io::Write;

use lodge_tests::{read_pty, unique_id, Bundle, ConsoleSocket, Runtime};

/// Creates with a console socket, starts, types `input` into the pty, returns what it printed.
fn run_on_console(rt: &Runtime, bundle: &Bundle, id: &str, input: &str) -> String {
    let console = ConsoleSocket::new();
    let receiver = {
        let path = console.path().to_string();
        let _ = path;
        std::thread::scope(|s| {
            let h = s.spawn(|| console.receive_master());
            rt.ok(&[
                "create",
                "--bundle",
                bundle.path(),
                "--console-socket",
                console.path(),
                id,
            ]);
            h.join().unwrap()
        })
    };
    let mut master = receiver;
    rt.ok(&["start", id]);
    master.write_all(input.as_bytes()).unwrap();
    let out = read_pty(&mut master, "");
    rt.wait_status(id, "stopped");
    rt.ok(&["delete", id]);
    rt.assert_no_residue(id, bundle);
    out
}

#[test]
fn terminal_through_the_console_socket() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "tty; test -t 0 && echo stdin-is-a-tty; stty size",
    ]);
    bundle.edit(|c| {
        c["process"]["terminal"] = true.into();
        c["process"]["consoleSize"] = serde_json::json!({"height": 30, "width": 100});
    });
    let id = unique_id("tty");
    let out = run_on_console(&rt, &bundle, &id, "");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("stdin-is-a-tty"), "{out}");
    assert!(out.contains("30 100"), "{out}");
}

#[test]
fn terminal_without_console_socket_is_a_clear_error() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| c["process"]["terminal"] = true.into());
    let id = unique_id("notty");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("console-socket"), "{err}");
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn spec_bundle_used_unchanged() {
    let rt = Runtime::new();
    let bundle = Bundle::from_spec_command(false);
    assert_eq!(bundle.config["process"]["args"][0], "sh");
    let id = unique_id("spec");
    let out = run_on_console(&rt, &bundle, &id, "hostname; id -u; exit\n");
    assert!(out.contains("runc"), "hostname from the spec: {out}");
}

#[test]
fn rootless_spec_bundle_used_unchanged() {
    let rt = Runtime::new();
    let bundle = Bundle::from_spec_command(true);
    let ns: Vec<&str> = bundle.config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(ns.contains(&"user") && !ns.contains(&"network"), "{ns:?}");
    let id = unique_id("rootless");
    let out = run_on_console(&rt, &bundle, &id, "cat /proc/self/uid_map; exit\n");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["0", "0", "1"]),
        "{out}"
    );
}

#[test]
fn spec_refuses_to_overwrite() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["true"]);
    let err = rt.fails(&["spec", "--bundle", bundle.path()]);
    assert!(err.contains("exists"), "{err}");
}

/// Runs lodge-runc under `script` (a terminal for it), typing `input`; returns what it printed.
fn on_a_terminal(rt: &Runtime, args: &[&str], input: &str) -> (bool, String) {
    let mut line = format!(
        "{} --root {}",
        lodge_tests::runtime_bin().display(),
        rt.root.display()
    );
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    line.push_str("; echo exit-code=$?");
    let mut child = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    stdin.write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn run_and_exec_serve_a_terminal_without_a_console_socket() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["sh"]);
    bundle.edit(|c| {
        c["process"]["terminal"] = true.into();
    });
    let id = unique_id("fgtty");
    let (_, out) = on_a_terminal(
        &rt,
        &["run", "--bundle", bundle.path(), &id],
        "tty; echo marker-$((6*7)); exit 4\n",
    );
    assert!(
        out.contains("/dev/pts/0") && out.contains("marker-42"),
        "{out}"
    );
    assert!(out.contains("exit-code=4"), "{out}");
    rt.assert_no_residue(&id, &bundle);

    let sleeper = Bundle::new(&["sleep", "1000"]);
    let id = unique_id("fgexec");
    rt.ok(&["run", "-d", "--bundle", sleeper.path(), &id]);
    let (_, out) = on_a_terminal(
        &rt,
        &["exec", "-t", &id, "sh"],
        "tty; echo exec-$((6*7)); exit 3\n",
    );
    assert!(
        out.contains("/dev/pts/") && out.contains("exec-42"),
        "{out}"
    );
    assert!(out.contains("exit-code=3"), "{out}");
    let err = rt.fails(&["exec", "-t", "-d", &id, "sh"]);
    assert!(err.contains("--console-socket"), "{err}");
    rt.ok(&["delete", "--force", &id]);
    rt.assert_no_residue(&id, &sleeper);
}
