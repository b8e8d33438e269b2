//! The emulated files: one declarative table. Each row is a path inside the container, its mode,
//! its write policy and the function that renders it for one container; one module per
//! directory. docs/emulated-files.md lists every row with what it returns.

pub mod proc;
pub mod proc_sys;
pub mod sys_devices_system_cpu;
pub mod sys_devices_virtual_dmi_id;
pub mod sys_kernel;
pub mod sys_module_nf_conntrack_parameters;

use std::sync::Mutex;

use crate::cgroup::CgroupView;

/// A registered container, as the renderers see it.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub cgroup: CgroupView,
    /// Host uid and gid of the container's root: the owner its emulated files show.
    pub owner: (u32, u32),
    /// Creation time, seconds since the epoch.
    pub created: f64,
    /// 1, 5 and 15 minute load averages, sampled every 5 s (`proc::sample_load`).
    pub load: Mutex<[f64; 3]>,
    /// The last count of (busy, all) tasks and when it was taken (`proc::task_counts`).
    pub tasks: Mutex<Option<(std::time::Instant, (usize, usize))>>,
    /// Knob values written by the container, by path.
    pub knobs: Mutex<std::collections::HashMap<&'static str, String>>,
}

impl Container {
    pub fn new(id: String, cgroup: CgroupView, owner: (u32, u32), created: f64) -> Container {
        Container {
            id,
            cgroup,
            owner,
            created,
            load: Mutex::new([0.0; 3]),
            tasks: Mutex::new(None),
            knobs: Mutex::default(),
        }
    }
}

/// What a write to the file does (`proc_sys.rs` explains the policies).
#[derive(Debug, Clone, Copy)]
pub enum WritePolicy {
    /// Opening for writing fails with EACCES (the mode says 0444).
    ReadOnly,
    /// Checked, kept for the container only.
    Container(fn(&str) -> bool),
    /// Checked, kept for the container; the host's value is raised when the new one is larger.
    RaiseHost(fn(&str) -> bool),
}

/// What a row is.
#[derive(Clone, Copy)]
pub enum Content {
    /// A file and its content for a container, computed at open.
    File(fn(&Container) -> String),
    /// An empty directory (hides what the host has there).
    EmptyDir,
    /// A knob: the container's value, the host's until the container writes one.
    Knob,
}

pub struct EmulatedFile {
    /// The path inside the container, without the leading '/'.
    pub path: &'static str,
    pub mode: u32,
    pub write: WritePolicy,
    pub content: Content,
}

impl EmulatedFile {
    pub const fn read_only(path: &'static str, render: fn(&Container) -> String) -> Self {
        EmulatedFile {
            path,
            mode: 0o444,
            write: WritePolicy::ReadOnly,
            content: Content::File(render),
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.content, Content::EmptyDir)
    }
}

/// Every emulated file.
pub fn table() -> impl Iterator<Item = &'static EmulatedFile> {
    proc::FILES
        .iter()
        .chain(sys_devices_system_cpu::FILES)
        .chain(sys_devices_virtual_dmi_id::FILES)
        .chain(sys_kernel::FILES)
        .chain(proc_sys::FILES)
        .chain(sys_module_nf_conntrack_parameters::FILES)
}

impl Container {
    /// The content of `f` for this container (a file or a knob).
    pub fn render(&self, f: &EmulatedFile) -> Option<String> {
        match f.content {
            Content::File(render) => Some(render(self)),
            Content::Knob => Some(
                self.knobs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(f.path)
                    .cloned()
                    .unwrap_or_else(|| proc_sys::host_value(f.path)),
            ),
            Content::EmptyDir => None,
        }
    }

    /// Applies a write of `data` to knob `f`; Err(errno) as the kernel would answer.
    pub fn write(&self, f: &'static EmulatedFile, data: &str) -> Result<(), i32> {
        let (check, raise) = match f.write {
            WritePolicy::ReadOnly => return Err(libc::EACCES),
            WritePolicy::Container(check) => (check, false),
            WritePolicy::RaiseHost(check) => (check, true),
        };
        let value = data.trim_end_matches('\n');
        if !check(value) {
            return Err(libc::EINVAL);
        }
        if raise {
            proc_sys::raise_host(f.path, value)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        }
        self.knobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(f.path, format!("{value}\n"));
        Ok(())
    }
}
