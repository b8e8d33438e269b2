//! `events`: the container's resource usage as runc's stats JSON, once or every interval.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use crate::state::{StateDir, Status};

use super::Globals;

fn num(s: Option<String>) -> u64 {
    s.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// "key value" lines (memory.stat, cpu.stat, cpuacct.stat) as a map.
fn keyed(s: Option<String>) -> BTreeMap<String, u64> {
    s.unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// One stats sample in runc's `events --stats` shape.
pub fn stats(cg: &Cgroup) -> Value {
    let limit = |v: Option<String>| match v.as_deref().map(str::trim) {
        Some("max") | None => u64::MAX,
        Some(x) => x.parse().unwrap_or(u64::MAX),
    };
    let cpu = if cg.is_v2("cpu") || cg.read("cpuacct", "cpuacct.usage").is_none() {
        let st = keyed(
            cg.read("cpu", "cpu.stat")
                .or_else(|| cg.read("memory", "cpu.stat")),
        );
        let us = |k: &str| st.get(k).copied().unwrap_or(0) * 1000;
        json!({
            "usage": {"total": us("usage_usec"), "kernel": us("system_usec"), "user": us("user_usec")},
            "throttling": {"periods": st.get("nr_periods"), "throttled_periods": st.get("nr_throttled"), "throttled_time": us("throttled_usec")}
        })
    } else {
        let percpu: Vec<u64> = cg
            .read("cpuacct", "cpuacct.usage_percpu")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let st = keyed(cg.read("cpuacct", "cpuacct.stat"));
        // cpuacct.stat counts clock ticks (USER_HZ, 100 on Linux).
        let ns = |k: &str| st.get(k).copied().unwrap_or(0) * 10_000_000;
        let thr = keyed(cg.read("cpu", "cpu.stat"));
        json!({
            "usage": {"total": num(cg.read("cpuacct", "cpuacct.usage")), "percpu": percpu, "kernel": ns("system"), "user": ns("user")},
            "throttling": {"periods": thr.get("nr_periods"), "throttled_periods": thr.get("nr_throttled"), "throttled_time": thr.get("throttled_time")}
        })
    };
    let memory = if cg.is_v2("memory") {
        let raw = keyed(cg.read("memory", "memory.stat"));
        json!({
            "cache": raw.get("file"),
            "usage": {"usage": num(cg.read("memory", "memory.current")), "limit": limit(cg.read("memory", "memory.max")),
                      "max": num(cg.read("memory", "memory.peak")), "failcnt": 0},
            "swap": {"usage": num(cg.read("memory", "memory.swap.current")), "limit": limit(cg.read("memory", "memory.swap.max"))},
            "raw": raw
        })
    } else {
        let raw = keyed(cg.read("memory", "memory.stat"));
        json!({
            "cache": raw.get("cache"),
            "usage": {"usage": num(cg.read("memory", "memory.usage_in_bytes")), "limit": num(cg.read("memory", "memory.limit_in_bytes")),
                      "max": num(cg.read("memory", "memory.max_usage_in_bytes")), "failcnt": num(cg.read("memory", "memory.failcnt"))},
            "swap": {"usage": num(cg.read("memory", "memory.memsw.usage_in_bytes")), "limit": num(cg.read("memory", "memory.memsw.limit_in_bytes"))},
            "raw": raw
        })
    };
    json!({
        "cpu": cpu,
        "memory": memory,
        "pids": {"current": num(cg.read("pids", "pids.current")), "limit": limit(cg.read("pids", "pids.max"))},
        "blkio": {},
        "hugetlb": {},
        "intel_rdt": {},
        "network_interfaces": null
    })
}

/// Prints `{"type":"stats","id":..,"data":..}` once (`interval` None) or every `interval`
/// until the container stops.
pub fn events(
    g: &Globals,
    id: &str,
    interval: Option<Duration>,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let (cg, dir_path, st) = {
        let dir = StateDir::open(&g.root, id)?;
        let st = dir.load()?;
        (
            Cgroup::from_paths(st.cgroup_paths.clone()),
            dir.path.clone(),
            st,
        )
    };
    loop {
        let status = st.status(&dir_path);
        if status == Status::Stopped {
            return if interval.is_some() {
                Ok(())
            } else {
                Err(Error::WrongStatus {
                    id: id.into(),
                    status,
                    action: "no stats for a stopped container",
                })
            };
        }
        let event = json!({"type": "stats", "id": id, "data": stats(&cg)});
        writeln!(out, "{event}").map_err(Error::io("writing events"))?;
        let _ = out.flush();
        match interval {
            Some(d) => std::thread::sleep(d),
            None => return Ok(()),
        }
    }
}
