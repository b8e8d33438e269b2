//! A process's mount table (/proc/<pid>/mountinfo) and how a mount is recognised in any mount
//! namespace of the container: by what it is and what it covers (`Identity`), never by its
//! mount id, which differs in every copy of the namespace.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u64,
    pub parent: u64,
    /// "major:minor" of the filesystem.
    pub dev: String,
    /// The directory of the filesystem this mount shows.
    pub root: PathBuf,
    /// Where it is mounted, as the reading process sees it.
    pub mountpoint: PathBuf,
    pub read_only: bool,
    pub fstype: String,
}

/// A mount as it is, whatever namespace copy it is in: the filesystem under it (and where in
/// that filesystem it sits), its own filesystem and the directory of it that it shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub parent_fstype: String,
    pub at: PathBuf,
    pub fstype: String,
    pub dev: String,
    pub root: PathBuf,
}

pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                id: f.first()?.parse().ok()?,
                parent: f.get(1)?.parse().ok()?,
                dev: f.get(2)?.to_string(),
                root: lodge_sys::mountinfo::unescape(f.get(3)?).into(),
                mountpoint: lodge_sys::mountinfo::unescape(f.get(4)?).into(),
                read_only: f.get(5)?.split(',').any(|o| o == "ro"),
                fstype: r.first()?.to_string(),
            })
        })
        .collect()
}

pub fn read(pid: i32) -> std::io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string(format!(
        "/proc/{pid}/mountinfo"
    ))?))
}

/// `path` relative to `base`, as an absolute path ("/" when equal); None if not below it.
pub fn below(path: &Path, base: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(base).ok()?;
    Some(Path::new("/").join(rest))
}

pub struct Table {
    pub mounts: Vec<Mount>,
}

impl Table {
    pub fn by_id(&self, id: u64) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.id == id)
    }

    pub fn identity(&self, m: &Mount) -> Identity {
        let (parent_fstype, at) = match self.by_id(m.parent).filter(|p| p.id != m.id) {
            Some(p) => (
                p.fstype.clone(),
                below(&m.mountpoint, &p.mountpoint)
                    .map(|rel| p.root.join(rel.strip_prefix("/").unwrap_or(&rel)))
                    .unwrap_or_else(|| m.mountpoint.clone()),
            ),
            // The root of what the reader sees.
            None => (String::new(), PathBuf::from("/")),
        };
        Identity {
            parent_fstype,
            at,
            fstype: m.fstype.clone(),
            dev: m.dev.clone(),
            root: m.root.clone(),
        }
    }

    /// Every mount below `m` (its children, theirs, …).
    pub fn descendants(&self, m: &Mount) -> Vec<&Mount> {
        let mut out: Vec<&Mount> = Vec::new();
        let mut todo = vec![m.id];
        while let Some(id) = todo.pop() {
            for c in self.mounts.iter().filter(|c| c.parent == id) {
                // A table read while it changed could loop; every mount is taken once.
                if c.id != m.id && !out.iter().any(|o| o.id == c.id) {
                    out.push(c);
                    todo.push(c.id);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
70 1 0:60 / / rw,relatime - overlay overlay rw,lowerdir=/a
72 70 0:41 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
50 72 0:41 /bus /proc/bus ro,relatime - proc proc rw
46 72 0:6 /null /proc/keys rw,relatime - devtmpfs devtmpfs rw
80 70 0:62 / /my\\040dir rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_and_names_mounts_by_what_they_cover() {
        let t = Table {
            mounts: parse(SAMPLE),
        };
        assert_eq!(t.mounts.len(), 5);
        assert_eq!(t.mounts[4].mountpoint, Path::new("/my dir"));
        assert!(t.mounts[2].read_only && !t.mounts[1].read_only);
        let keys = t.identity(&t.mounts[3]);
        assert_eq!(keys.parent_fstype, "proc");
        assert_eq!(keys.at, Path::new("/keys"));
        assert_eq!(keys.root, Path::new("/null"));
        let root = t.identity(&t.mounts[0]);
        assert_eq!(root.at, Path::new("/"));
        assert_eq!(t.descendants(&t.mounts[1]).len(), 2);
        assert_eq!(t.descendants(&t.mounts[0]).len(), 4);
    }
}
