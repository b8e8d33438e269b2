//! Resolving a container path under the rootfs without escaping it through symlinks or `..`
//! (the rootfs belongs to the container and may be hostile).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: usize = 255;

/// `root` joined with `unsafe_path`, every symlink resolved as if `root` were `/`.
/// Components that do not exist yet are appended as they are.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> io::Result<PathBuf> {
    let mut queue: VecDeque<OsString> = components(unsafe_path);
    let mut resolved: Vec<OsString> = vec![];
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = build(root, &resolved).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    queue.insert(i, c);
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(build(root, &resolved))
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn build(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_dotdot_stay_inside() {
        let dir = std::env::temp_dir().join(format!("lodge-securejoin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("a/abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", dir.join("a/up")).unwrap();
        assert_eq!(
            secure_join(&dir, Path::new("/a/abs/passwd")).unwrap(),
            dir.join("etc/passwd")
        );
        assert_eq!(
            secure_join(&dir, Path::new("/a/up/x")).unwrap(),
            dir.join("x")
        );
        assert_eq!(
            secure_join(&dir, Path::new("../../a/b/new")).unwrap(),
            dir.join("a/b/new")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
