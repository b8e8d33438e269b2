//! Registered containers and the inode layout of the FUSE tree:
//!
//! ```text
//! /                       inode 1
//! /<id>/                  one directory per container
//! /<id>/proc/meminfo …    the emulated files (files::table), with their parent directories
//! ```
//!
//! A container gets a slot when it registers; slots are never reused, so an inode number never
//! names two containers. Inode = 2 + slot × nodes + node.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::files::{self, Container, EmulatedFile};

/// One node of a container's tree: its root directory (index 0), a directory or a file.
pub struct Node {
    pub name: String,
    pub parent: usize,
    pub file: Option<&'static EmulatedFile>,
}

/// The tree every container has, built once from the table.
pub fn nodes() -> &'static [Node] {
    static NODES: OnceLock<Vec<Node>> = OnceLock::new();
    NODES.get_or_init(|| {
        let mut nodes = vec![Node {
            name: String::new(),
            parent: 0,
            file: None,
        }];
        for f in files::table() {
            let mut parent = 0;
            let parts: Vec<&str> = f.path.split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                let existing = nodes
                    .iter()
                    .skip(1)
                    .position(|n| n.parent == parent && n.name == *part)
                    .map(|p| p + 1);
                parent = match existing {
                    Some(p) if !last => p,
                    Some(p) if f.is_dir() => {
                        nodes[p].file = Some(f);
                        p
                    }
                    _ => {
                        nodes.push(Node {
                            name: part.to_string(),
                            parent,
                            file: last.then_some(f),
                        });
                        nodes.len() - 1
                    }
                };
            }
        }
        nodes
    })
}

pub const ROOT_INO: u64 = 1;

pub fn ino(slot: usize, node: usize) -> u64 {
    2 + (slot * nodes().len() + node) as u64
}

/// (slot, node) of an inode below the root.
pub fn decode(ino: u64) -> Option<(usize, usize)> {
    let i = ino.checked_sub(2)? as usize;
    Some((i / nodes().len(), i % nodes().len()))
}

#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
    /// Called after every change (registrations, knob values): lodge-fs saves its state then.
    changed: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Option<Arc<Container>>>,
    by_id: HashMap<String, usize>,
}

impl Registry {
    /// Registers `c` (replacing a container of the same id).
    pub fn register(&self, c: Container) -> usize {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.by_id.remove(&c.id) {
            inner.slots[old] = None;
        }
        let slot = inner.slots.len();
        inner.by_id.insert(c.id.clone(), slot);
        inner.slots.push(Some(Arc::new(c)));
        drop(inner);
        self.changed();
        slot
    }

    /// Puts `c` back in the slot it had before a restart (its inode numbers stay the same).
    pub fn restore(&self, slot: usize, c: Container) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.slots.len() <= slot {
            inner.slots.resize_with(slot + 1, || None);
        }
        inner.by_id.insert(c.id.clone(), slot);
        inner.slots[slot] = Some(Arc::new(c));
    }

    /// Slots are never reused: the next one a registration gets.
    pub fn next_slot(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .slots
            .len()
    }

    /// Keeps slots below `n` unused (they were used before a restart).
    pub fn reserve_slots(&self, n: usize) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.slots.len() < n {
            inner.slots.resize_with(n, || None);
        }
    }

    pub fn on_change(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.changed.set(hook);
    }

    /// Runs the change hook (also after a knob is written).
    pub fn changed(&self) {
        if let Some(hook) = self.changed.get() {
            hook();
        }
    }

    pub fn unregister(&self, id: &str) -> bool {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match inner.by_id.remove(id) {
            Some(slot) => {
                inner.slots[slot] = None;
                drop(inner);
                self.changed();
                true
            }
            None => false,
        }
    }

    pub fn get(&self, slot: usize) -> Option<Arc<Container>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.slots.get(slot).cloned().flatten()
    }

    pub fn slot_of(&self, id: &str) -> Option<usize> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_id.get(id).copied()
    }

    /// (slot, container) of every registered container.
    pub fn all(&self) -> Vec<(usize, Arc<Container>)> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.clone()?)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_has_every_file_once_with_its_directories() {
        let n = nodes();
        let files = n.iter().filter(|n| n.file.is_some()).count();
        assert_eq!(files, files::table().count());
        let proc = n
            .iter()
            .filter(|n| n.name == "proc" && n.parent == 0)
            .count();
        assert_eq!(proc, 1);
        let (slot, node) = decode(ino(3, 5)).unwrap();
        assert_eq!((slot, node), (3, 5));
    }
}
