//! /proc: memory, CPU, uptime, load and I/O of the container, from its cgroup, with LXCFS's
//! semantics (docs/emulated-files.md).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Container, EmulatedFile};

pub const FILES: &[EmulatedFile] = &[
    EmulatedFile::read_only("proc/meminfo", meminfo),
    EmulatedFile::read_only("proc/cpuinfo", cpuinfo),
    EmulatedFile::read_only("proc/stat", stat),
    EmulatedFile::read_only("proc/uptime", uptime),
    EmulatedFile::read_only("proc/loadavg", loadavg),
    EmulatedFile::read_only("proc/swaps", swaps),
    EmulatedFile::read_only("proc/diskstats", diskstats),
];

fn host(file: &str) -> String {
    crate::kernel_files::read(std::path::Path::new(file)).unwrap_or_default()
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// MemTotal is the lowest memory limit up the hierarchy (the host's when unlimited); MemFree is
/// what the container has not used; MemAvailable adds back its reclaimable page cache and slab.
/// The other usage lines come from memory.stat; swap is off (SwapTotal 0). Lines this file does
/// not compute are the host's.
fn meminfo(c: &Container) -> String {
    let (host_text, ours) = memory(c);
    let mut out = String::with_capacity(host_text.len());
    let mut done: Vec<&str> = vec![];
    for line in host_text.lines() {
        let key = line.split(':').next().unwrap_or("");
        match ours.iter().find(|(k, _)| *k == key) {
            Some((k, v)) => {
                out.push_str(&format!("{:<16}{v:>8} kB\n", format!("{k}:")));
                done.push(k);
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (k, v) in &ours {
        if !done.contains(k) {
            out.push_str(&format!("{:<16}{v:>8} kB\n", format!("{k}:")));
        }
    }
    out
}

/// The host's /proc/meminfo and the container's own lines (name, KiB), as `meminfo` says.
fn memory(c: &Container) -> (String, Vec<(&'static str, u64)>) {
    let host_text = host("/proc/meminfo");
    let host_total = kib_field(&host_text, "MemTotal").unwrap_or(0);
    let limit = c
        .cgroup
        .lowest_up("memory.max", |v| v.parse().ok())
        .or_else(|| {
            c.cgroup
                .lowest_up("memory.limit_in_bytes", |v| v.parse().ok())
        })
        .map(|b| b / 1024);
    let total = limit.map_or(host_total, |l| l.min(host_total));
    let usage = c
        .cgroup
        .read_u64("memory.current")
        .or_else(|| c.cgroup.read_u64("memory.usage_in_bytes"))
        .unwrap_or(0)
        / 1024;
    let stat: HashMap<String, u64> = c.cgroup.memory_stat().into_iter().collect();
    // v1 names its hierarchical counters total_*; v2 has one set.
    let get = |v2: &str, v1: &str| -> u64 {
        stat.get(v2)
            .or_else(|| stat.get(&format!("total_{v1}")))
            .or_else(|| stat.get(v1))
            .copied()
            .unwrap_or(0)
            / 1024
    };
    let active_anon = get("active_anon", "active_anon");
    let inactive_anon = get("inactive_anon", "inactive_anon");
    let active_file = get("active_file", "active_file");
    let inactive_file = get("inactive_file", "inactive_file");
    let slab_reclaimable = get("slab_reclaimable", "slab_reclaimable");
    let slab_unreclaimable = get("slab_unreclaimable", "slab_unreclaimable");
    let free = total.saturating_sub(usage);
    let available = (free + active_file + inactive_file + slab_reclaimable).min(total);
    let ours: Vec<(&str, u64)> = vec![
        ("MemTotal", total),
        ("MemFree", free),
        ("MemAvailable", available),
        ("Buffers", 0),
        ("Cached", get("file", "cache")),
        ("SwapCached", 0),
        ("Active", active_anon + active_file),
        ("Inactive", inactive_anon + inactive_file),
        ("Active(anon)", active_anon),
        ("Inactive(anon)", inactive_anon),
        ("Active(file)", active_file),
        ("Inactive(file)", inactive_file),
        ("Unevictable", get("unevictable", "unevictable")),
        ("SwapTotal", 0),
        ("SwapFree", 0),
        ("Dirty", get("file_dirty", "dirty")),
        ("Writeback", get("file_writeback", "writeback")),
        ("AnonPages", get("anon", "rss")),
        ("Mapped", get("file_mapped", "mapped_file")),
        ("Shmem", get("shmem", "shmem")),
        ("Slab", slab_reclaimable + slab_unreclaimable),
        ("SReclaimable", slab_reclaimable),
        ("SUnreclaim", slab_unreclaimable),
    ];
    (host_text, ours)
}

/// What sysinfo(2) reports, for the container: the same memory as its /proc/meminfo, its age,
/// its load averages and its task count (the seccomp agent answers sysinfo with it).
pub struct SystemFigures {
    pub uptime: f64,
    pub loads: [f64; 3],
    /// KiB.
    pub total: u64,
    pub free: u64,
    pub shared: u64,
    pub procs: usize,
}

pub fn system_figures(c: &Container) -> SystemFigures {
    let (_, ours) = memory(c);
    let get = |k: &str| ours.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
    SystemFigures {
        uptime: (now() - c.created).max(0.0),
        loads: *c.load.lock().unwrap_or_else(|e| e.into_inner()),
        total: get("MemTotal"),
        free: get("MemFree"),
        shared: get("Shmem"),
        procs: task_counts(c).1,
    }
}

/// The host's processor blocks for the container's CPUs only, renumbered from 0.
fn cpuinfo(c: &Container) -> String {
    let cpus = c.cgroup.cpus();
    // The host's text, at most a second old: producing it is most of a read's cost, and only
    // its "cpu MHz" lines change (docs/emulated-files.md).
    let text = crate::kernel_files::read_recent(
        std::path::Path::new("/proc/cpuinfo"),
        std::time::Duration::from_secs(1),
    )
    .unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut next = 0;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let number = block.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "processor").then(|| v.trim().parse::<u32>().ok())?
        });
        match number {
            Some(n) if cpus.contains(&n) => {
                for line in block.lines() {
                    if line
                        .split(':')
                        .next()
                        .is_some_and(|k| k.trim() == "processor")
                    {
                        out.push_str(&format!("processor\t: {next}\n"));
                    } else {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                out.push('\n');
                next += 1;
            }
            Some(_) => {}
            // Architectures with a preamble (s390x) keep it.
            None => {
                out.push_str(block);
                out.push_str("\n\n");
            }
        }
    }
    out
}

/// The host's per-CPU lines for the container's CPUs only, renumbered from 0, and the "cpu"
/// line as their sum; the other lines are the host's.
fn stat(c: &Container) -> String {
    let cpus = c.cgroup.cpus();
    let text = host("/proc/stat");
    let mut per_cpu: Vec<Vec<u64>> = vec![];
    // The cpu lines come first; everything after them (intr, ctxt, btime, processes, …) is
    // the host's, copied whole.
    let mut remaining = text.as_str();
    while let Some(tail) = remaining.strip_prefix("cpu") {
        let (line, after) = tail.split_once('\n').unwrap_or((tail, ""));
        remaining = after;
        let mut f = line.split_whitespace();
        if line.starts_with(' ') {
            continue;
        }
        if let Some(Ok(n)) = f.next().map(str::parse::<u32>) {
            if cpus.contains(&n) {
                per_cpu.push(f.filter_map(|x| x.parse().ok()).collect());
            }
        }
    }
    let rest = remaining;
    let width = per_cpu.iter().map(Vec::len).max().unwrap_or(0);
    let mut sum = vec![0u64; width];
    for row in &per_cpu {
        for (i, v) in row.iter().enumerate() {
            sum[i] += v;
        }
    }
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    let mut line = |label: &str, values: &[u64]| {
        out.push_str(label);
        for v in values {
            let _ = write!(out, " {v}");
        }
        out.push('\n');
    };
    line("cpu ", &sum);
    for (i, row) in per_cpu.iter().enumerate() {
        line(&format!("cpu{i}"), row);
    }
    out.push_str(rest);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Seconds since the container was created, twice (as Sysbox: idle time is not tracked per
/// container).
fn uptime(c: &Container) -> String {
    let age = (now() - c.created).max(0.0);
    format!("{age:.2} {age:.2}\n")
}

/// The container's 1, 5 and 15 minute load averages (runnable and uninterruptible tasks in its
/// cgroup, sampled every 5 s with the kernel's decay factors), its running/total task counts
/// and the host's last pid.
fn loadavg(c: &Container) -> String {
    let load = *c.load.lock().unwrap_or_else(|e| e.into_inner());
    let (running, total) = task_counts(c);
    let last_pid = host("/proc/loadavg")
        .split_whitespace()
        .nth(4)
        .unwrap_or("0")
        .to_string();
    format!(
        "{:.2} {:.2} {:.2} {running}/{total} {last_pid}\n",
        load[0], load[1], load[2]
    )
}

/// (running or uninterruptible, all) tasks of the container, counted at most once a second
/// (walking the container's processes is the costly part of loadavg).
fn task_counts(c: &Container) -> (usize, usize) {
    let mut cached = c.tasks.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, counts)) = *cached {
        if at.elapsed() < std::time::Duration::from_secs(1) {
            return counts;
        }
    }
    let counts = count_tasks(c);
    *cached = Some((std::time::Instant::now(), counts));
    counts
}

fn count_tasks(c: &Container) -> (usize, usize) {
    let pids = c.cgroup.pids();
    let busy = pids
        .iter()
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("");
            state == "R" || state == "D"
        })
        .count();
    (busy, pids.len())
}

/// One 5-second step of the load averages (the kernel's EXP_1, EXP_5, EXP_15).
pub fn sample_load(c: &Container) {
    let (busy, _) = count_tasks(c);
    let decay = [
        (-5.0f64 / 60.0).exp(),
        (-5.0f64 / 300.0).exp(),
        (-5.0f64 / 900.0).exp(),
    ];
    let mut load = c.load.lock().unwrap_or_else(|e| e.into_inner());
    for (l, d) in load.iter_mut().zip(decay) {
        *l = *l * d + busy as f64 * (1.0 - d);
    }
}

/// Swap is off inside: the header only.
fn swaps(_: &Container) -> String {
    "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n".into()
}

/// One line per block device the container did I/O on, from its cgroup's counters (v2 io.stat,
/// v1 blkio recursive counters); device names from the host's diskstats.
fn diskstats(c: &Container) -> String {
    // (major:minor) → (reads, sectors read, writes, sectors written)
    let mut devs: Vec<(String, [u64; 4])> = vec![];
    fn entry(devs: &mut Vec<(String, [u64; 4])>, dev: &str) -> usize {
        match devs.iter().position(|(d, _)| d == dev) {
            Some(i) => i,
            None => {
                devs.push((dev.to_string(), [0; 4]));
                devs.len() - 1
            }
        }
    }
    if let Some(io) = c.cgroup.read("io.stat") {
        for line in io.lines() {
            let mut f = line.split_whitespace();
            let Some(dev) = f.next() else { continue };
            let i = entry(&mut devs, dev);
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "rios" => devs[i].1[0] = v,
                    "rbytes" => devs[i].1[1] = v / 512,
                    "wios" => devs[i].1[2] = v,
                    "wbytes" => devs[i].1[3] = v / 512,
                    _ => {}
                }
            }
        }
    } else {
        for (file, slot_read, slot_write, scale) in [
            ("blkio.throttle.io_serviced_recursive", 0, 2, 1),
            ("blkio.throttle.io_service_bytes_recursive", 1, 3, 512),
        ] {
            for line in c.cgroup.read(file).unwrap_or_default().lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() != 3 {
                    continue;
                }
                let v: u64 = f[2].parse().unwrap_or(0) / scale;
                let i = entry(&mut devs, f[0]);
                match f[1] {
                    "Read" => devs[i].1[slot_read] = v,
                    "Write" => devs[i].1[slot_write] = v,
                    _ => {}
                }
            }
        }
    }
    let names: HashMap<String, String> = host("/proc/diskstats")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3).then(|| (format!("{}:{}", f[0], f[1]), f[2].to_string()))
        })
        .collect();
    let mut out = String::new();
    for (dev, [r, rs, w, ws]) in devs {
        let Some(name) = names.get(&dev) else {
            continue;
        };
        let (major, minor) = dev.split_once(':').unwrap_or(("0", "0"));
        out.push_str(&format!(
            "{major:>4} {minor:>7} {name} {r} 0 {rs} 0 {w} 0 {ws} 0 0 0 0 0 0 0 0 0 0\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CgroupView;

    /// A cgroup v2 tree in a temporary directory: root → lodge → c (the container).
    fn v2_tree(name: &str) -> std::path::PathBuf {
        let root =
            std::env::temp_dir().join(format!("lodge-fs-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let c = root.join("lodge/c");
        std::fs::create_dir_all(&c).unwrap();
        let w = |p: &std::path::Path, f: &str, v: &str| std::fs::write(p.join(f), v).unwrap();
        w(&root, "memory.max", "max\n");
        w(
            &root.join("lodge"),
            "memory.max",
            &format!("{}\n", 256u64 << 20),
        );
        w(&c, "memory.max", "max\n");
        w(&c, "memory.current", &format!("{}\n", 100u64 << 20));
        w(
            &c,
            "memory.stat",
            "anon 52428800\nfile 41943040\nactive_anon 1048576\ninactive_anon 51380224\n\
             active_file 20971520\ninactive_file 20971520\nslab_reclaimable 1048576\n\
             slab_unreclaimable 2097152\nshmem 0\n",
        );
        w(&c, "cpu.max", "150000 100000\n");
        c
    }

    #[test]
    fn meminfo_from_a_v2_cgroup() {
        let c = v2_tree("mem");
        let view = Container::new(
            "t".into(),
            CgroupView {
                paths: vec![c.clone()],
            },
            (0, 0),
            0.0,
        );
        let text = meminfo(&view);
        let kb = |k: &str| kib_field(&text, k).unwrap();
        assert_eq!(kb("MemTotal"), 262144, "the lowest limit up the tree");
        assert_eq!(kb("MemFree"), 262144 - 102400);
        assert_eq!(kb("MemAvailable"), 262144 - 102400 + 20480 + 20480 + 1024);
        assert_eq!(kb("Cached"), 40960);
        assert_eq!(kb("AnonPages"), 51200);
        assert_eq!(kb("SwapTotal"), 0);
        let _ = std::fs::remove_dir_all(c.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn cpus_from_the_quota() {
        let c = v2_tree("cpu");
        let view = CgroupView {
            paths: vec![c.clone()],
        };
        let host = crate::cgroup::host_online_cpus();
        // ceil(150000 / 100000) = 2, never more than the host has.
        assert_eq!(view.cpus().len(), host.len().min(2));
        let _ = std::fs::remove_dir_all(c.parent().unwrap().parent().unwrap());
    }
}
