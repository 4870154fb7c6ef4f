//! The local tree: what should be on the agent, as a map from path to [`Node`].
//!
//! Scanning stats everything but hashes lazily: a file's blake3 is computed only
//! when the plan needs it, and cached by (device, inode, size, mtime, ctime), so a
//! rescan of an unchanged tree hashes nothing.

use crate::ignores::Ignores;
use lks_proto::RelPath;
use lks_proto::v1::{Entry, EntryKind};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What kind of thing a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// One entry of a tree, local or remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Kind.
    pub kind: Kind,
    /// Permission bits (0o777).
    pub mode: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time in ns (files).
    pub mtime_ns: i64,
    /// blake3 (files), when known.
    pub hash: Option<[u8; 32]>,
    /// Target (symlinks).
    pub target: String,
    /// Identity of this version of a local file, for the hash cache.
    pub stat: Option<StatKey>,
}

impl Node {
    /// Converts an entry from the agent's manifest.
    pub fn from_entry(e: &Entry) -> Option<(RelPath, Node)> {
        let path = RelPath::new(e.path.clone()).ok()?;
        let kind = match EntryKind::try_from(e.kind).ok()? {
            EntryKind::File => Kind::File,
            EntryKind::Dir => Kind::Dir,
            EntryKind::Symlink => Kind::Symlink,
            EntryKind::Unspecified => return None,
        };
        let hash = <[u8; 32]>::try_from(e.blake3.as_slice()).ok();
        Some((
            path,
            Node {
                kind,
                mode: e.mode & 0o777,
                size: e.size,
                mtime_ns: e.mtime_ns,
                hash,
                target: e.link_target.clone(),
                stat: None,
            },
        ))
    }
}

/// The identity of one version of a local file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl StatKey {
    fn of(md: &std::fs::Metadata) -> StatKey {
        StatKey {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: mtime_ns(md),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        }
    }
}

fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

/// A tree: path -> node, sorted so parents come before their children.
pub type Tree = BTreeMap<RelPath, Node>;

/// The local tree and what is needed to keep it current.
pub struct LocalTree {
    root: PathBuf,
    /// Current entries.
    pub nodes: Tree,
    hashes: HashMap<RelPath, (StatKey, [u8; 32])>,
    /// Things skipped while scanning, to tell the user once.
    pub warnings: Vec<String>,
}

impl LocalTree {
    /// An empty tree rooted at `root`.
    pub fn new(root: &Path) -> LocalTree {
        LocalTree {
            root: root.to_path_buf(),
            nodes: Tree::new(),
            hashes: HashMap::new(),
            warnings: Vec::new(),
        }
    }

    /// The root directory.
    pub fn abs_root(&self) -> PathBuf {
        self.root.clone()
    }

    /// The absolute path of `rel`.
    pub fn abs(&self, rel: &RelPath) -> PathBuf {
        self.root.join(rel.as_str())
    }

    /// Rescans everything.
    pub fn rescan(&mut self, ignores: &Ignores) {
        self.nodes.clear();
        let root = self.root.clone();
        self.walk(&root, None, ignores);
    }

    /// Brings the entry at `path` (and, for a directory, everything beneath it)
    /// up to date after the watcher reported it.
    pub fn refresh(&mut self, path: &RelPath, ignores: &Ignores) {
        let abs = self.abs(path);
        let md = std::fs::symlink_metadata(&abs).ok();
        let is_dir = md.as_ref().is_some_and(|m| m.is_dir());
        // Drop what was there; it is re-added below if it still exists.
        self.remove_subtree(path);
        let Some(md) = md else { return };
        if ignores.ignores_path(path, is_dir) && !(is_dir && ignores.may_reinclude_beneath(path)) {
            return;
        }
        // A path whose parent vanished or is not a directory is handled when
        // the parent's own event arrives.
        if let Some(parent) = path.parent()
            && self.nodes.get(&parent).is_none_or(|n| n.kind != Kind::Dir)
        {
            self.refresh(&parent, ignores);
            return;
        }
        let included = !ignores.ignores_path(path, is_dir);
        if included && let Some(node) = self.describe(path, &md) {
            self.nodes.insert(path.clone(), node);
        }
        if is_dir {
            self.walk(&abs, Some(path.clone()), ignores);
        }
    }

    fn remove_subtree(&mut self, path: &RelPath) {
        let doomed: Vec<RelPath> = self
            .nodes
            .range(path.clone()..)
            .take_while(|(p, _)| p.as_str().starts_with(path.as_str()))
            .filter(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.nodes.remove(&p);
        }
    }

    /// Describes everything beneath `dir` (`rel` in the tree). An explicit
    /// stack, not recursion: a tree thousands of levels deep costs memory
    /// in proportion to its size, never the stack.
    fn walk(&mut self, dir: &Path, rel: Option<RelPath>, ignores: &Ignores) {
        let mut pending = vec![(dir.to_path_buf(), rel)];
        while let Some((dir, rel)) = pending.pop() {
            let subdirs = self.walk_one(&dir, rel, ignores);
            // Reversed: the first subdirectory is walked first, as before.
            pending.extend(
                subdirs
                    .into_iter()
                    .rev()
                    .map(|(abs, child)| (abs, Some(child))),
            );
        }
    }

    /// Describes the entries of one directory; its subdirectories to walk.
    fn walk_one(
        &mut self,
        dir: &Path,
        rel: Option<RelPath>,
        ignores: &Ignores,
    ) -> Vec<(std::path::PathBuf, RelPath)> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                if rel.is_none() || dir.exists() {
                    self.warnings
                        .push(format!("cannot list {}: {e}", dir.display()));
                }
                return Vec::new();
            }
        };
        let mut subdirs = Vec::new();
        for item in rd.flatten() {
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                self.warnings.push(format!(
                    "skipping {}: its name is not UTF-8",
                    item.path().display()
                ));
                continue;
            };
            let child = match &rel {
                None => RelPath::new(name),
                Some(r) => r.join(name),
            };
            let child = match child {
                Ok(c) => c,
                Err(e) => {
                    self.warnings
                        .push(format!("skipping {}: {e}", item.path().display()));
                    continue;
                }
            };
            // fstatat relative to the directory: no path walk per entry.
            let Ok(md) = item.metadata() else {
                continue;
            };
            let is_dir = md.is_dir();
            if ignores.ignores_entry(&child, is_dir) {
                if is_dir && ignores.may_reinclude_beneath(&child) {
                    subdirs.push((item.path(), child));
                }
                continue;
            }
            if let Some(node) = self.describe(&child, &md) {
                self.nodes.insert(child.clone(), node);
                if is_dir {
                    subdirs.push((item.path(), child));
                }
            }
        }
        subdirs
    }

    fn describe(&mut self, rel: &RelPath, md: &std::fs::Metadata) -> Option<Node> {
        let ft = md.file_type();
        let mut node = Node {
            kind: Kind::File,
            mode: md.mode() & 0o777,
            size: 0,
            mtime_ns: 0,
            hash: None,
            target: String::new(),
            stat: None,
        };
        if ft.is_dir() {
            node.kind = Kind::Dir;
        } else if ft.is_symlink() {
            node.kind = Kind::Symlink;
            let target = std::fs::read_link(self.abs(rel)).ok()?;
            let Some(target) = target.to_str() else {
                self.warnings
                    .push(format!("skipping symlink {rel}: its target is not UTF-8"));
                return None;
            };
            if !lks_proto::link_stays_inside(rel, target) {
                self.warnings.push(format!(
                    "skipping symlink {rel} -> {target}: it points outside the synced tree"
                ));
                return None;
            }
            node.target = target.to_string();
        } else if ft.is_file() {
            let key = StatKey::of(md);
            node.size = md.size();
            node.mtime_ns = mtime_ns(md);
            node.hash = self
                .hashes
                .get(rel)
                .filter(|(k, _)| *k == key)
                .map(|(_, h)| *h);
            node.stat = Some(key);
        } else {
            self.warnings
                .push(format!("skipping {rel}: not a file, directory or symlink"));
            return None;
        }
        Some(node)
    }

    /// The blake3 of the local file at `rel`, computing and caching it if needed.
    pub fn hash(&mut self, rel: &RelPath) -> std::io::Result<[u8; 32]> {
        if let Some(h) = self.nodes.get(rel).and_then(|n| n.hash) {
            return Ok(h);
        }
        let mut f = std::fs::File::open(self.abs(rel))?;
        let key = StatKey::of(&f.metadata()?);
        let mut hasher = blake3::Hasher::new();
        std::io::copy(&mut f, &mut hasher)?;
        let h = *hasher.finalize().as_bytes();
        let md_after = f.metadata()?;
        if StatKey::of(&md_after) != key {
            return Err(std::io::Error::other(format!(
                "{rel} changed while it was being read"
            )));
        }
        self.hashes.insert(rel.clone(), (key, h));
        if let Some(n) = self.nodes.get_mut(rel) {
            n.hash = Some(h);
            n.stat = Some(key);
            n.size = key.size;
            n.mtime_ns = key.mtime_ns;
        }
        Ok(h)
    }
}
