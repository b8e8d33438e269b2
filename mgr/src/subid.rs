//! Reserving lodge's block in /etc/subuid and /etc/subgid.
//!
//! Idempotent: an existing `lodge:` entry (the same start in both files) is reused. Otherwise the
//! first block free in both files within SUB_UID_MIN..SUB_UID_MAX and SUB_GID_MIN..SUB_GID_MAX
//! (from /etc/login.defs; shadow's defaults otherwise) is appended. Other entries, comments and a
//! missing final newline are left as they are.

use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SubidError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("no free block of {count} IDs between {min} and {max} in {files}")]
    NoRoom {
        count: u64,
        min: u64,
        max: u64,
        files: String,
    },
    #[error("{user} has different blocks in the subuid ({uid}) and subgid ({gid}) files; fix them so the starts match")]
    Mismatch { user: String, uid: u64, gid: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub start: u64,
    pub count: u64,
}

/// `(user, start, count)` of every well-formed line.
fn entries(text: &str) -> Vec<(String, Block)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (user, start, count) = (f.next()?, f.next()?, f.next()?);
            Some((
                user.to_string(),
                Block {
                    start: start.parse().ok()?,
                    count: count.parse().ok()?,
                },
            ))
        })
        .collect()
}

/// SUB_{UID,GID}_{MIN,MAX} from login.defs text, with shadow's defaults.
pub fn limits(login_defs: &str, kind: &str) -> (u64, u64) {
    let get = |key: &str, default: u64| {
        login_defs
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next()? == key).then(|| f.next()?.parse().ok())?
            })
            .next_back()
            .unwrap_or(default)
    };
    (
        get(&format!("SUB_{kind}_MIN"), 100_000),
        get(&format!("SUB_{kind}_MAX"), 600_100_000),
    )
}

fn read(path: &Path) -> Result<String, SubidError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(SubidError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn append(path: &Path, text: &str, line: &str) -> Result<(), SubidError> {
    let mut new = text.to_string();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(line);
    new.push('\n');
    let tmp = path.with_extension("lodge-tmp");
    let err = |source| SubidError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(&tmp, new).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Reserves (or finds) `count` IDs for `user` in both files.
pub fn reserve(
    user: &str,
    count: u64,
    subuid: &Path,
    subgid: &Path,
    login_defs: &Path,
) -> Result<Block, SubidError> {
    let (uid_text, gid_text) = (read(subuid)?, read(subgid)?);
    let defs = std::fs::read_to_string(login_defs).unwrap_or_default();
    let (uids, gids) = (entries(&uid_text), entries(&gid_text));
    let mine = |es: &[(String, Block)]| es.iter().find(|(u, _)| u == user).map(|(_, b)| *b);
    match (mine(&uids), mine(&gids)) {
        (Some(u), Some(g)) if u.start == g.start => {
            return Ok(Block {
                start: u.start,
                count: u.count.min(g.count),
            })
        }
        (Some(u), Some(g)) => {
            return Err(SubidError::Mismatch {
                user: user.into(),
                uid: u.start,
                gid: g.start,
            })
        }
        _ => {}
    }
    let (umin, umax) = limits(&defs, "UID");
    let (gmin, gmax) = limits(&defs, "GID");
    let (min, max) = (umin.max(gmin), umax.min(gmax));
    let taken: Vec<Block> = uids.iter().chain(gids.iter()).map(|(_, b)| *b).collect();
    let mut start = min;
    loop {
        if start + count - 1 > max {
            return Err(SubidError::NoRoom {
                count,
                min,
                max,
                files: format!("{} and {}", subuid.display(), subgid.display()),
            });
        }
        match taken
            .iter()
            .find(|b| start < b.start + b.count && b.start < start + count)
        {
            Some(b) => start = b.start + b.count,
            None => break,
        }
    }
    let line = format!("{user}:{start}:{count}");
    if mine(&uids).is_none() {
        append(subuid, &uid_text, &line)?;
    }
    if mine(&gids).is_none() {
        append(subgid, &gid_text, &line)?;
    }
    Ok(Block { start, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_login_defs() {
        let defs = "# c\nSUB_UID_MIN 200000\nSUB_UID_MAX\t300000\n";
        assert_eq!(limits(defs, "UID"), (200_000, 300_000));
        assert_eq!(limits(defs, "GID"), (100_000, 600_100_000));
    }
}
