//! The plan: what to send so the agent's tree (as last confirmed) becomes the
//! local tree. Deletes first (a deleted directory takes its children with it),
//! then directories parents-first, then files and symlinks.

use crate::tree::{Kind, LocalTree, Node, Tree};
use lks_proto::RelPath;
use std::collections::HashSet;

/// One operation the agent is asked to perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Remove whatever is at the path.
    Delete(RelPath),
    /// Create the directory or set its mode.
    Mkdir(RelPath, u32),
    /// Send the file; `base` is the agent's current content, if any, for a delta.
    Put {
        /// Path.
        path: RelPath,
        /// The local node. Its hash is known when the agent has a file there;
        /// for new files it is computed while sending (one read, not two).
        node: Node,
        /// blake3 of what the agent has at that path, when it is a file.
        base: Option<[u8; 32]>,
    },
    /// Create or replace a symlink.
    Symlink(RelPath, String),
    /// Set the mode of a file whose content is already equal.
    Chmod(RelPath, u32),
}

impl Op {
    /// The path the operation is about.
    pub fn path(&self) -> &RelPath {
        match self {
            Op::Delete(p) | Op::Mkdir(p, _) | Op::Symlink(p, _) | Op::Chmod(p, _) => p,
            Op::Put { path, .. } => path,
        }
    }
}

/// Plans the operations that turn `remote` into `local`. Files whose size and
/// mtime match are taken as equal without hashing (as rsync's quick check does;
/// the agent sets the host's mtime on every file it writes). Files that cannot
/// be read are reported in the second value and left out.
pub fn plan(local: &mut LocalTree, remote: &Tree) -> (Vec<Op>, Vec<String>) {
    let mut deletes = Vec::new();
    let mut dirs = Vec::new();
    let mut rest = Vec::new();
    let mut problems = Vec::new();

    // Deletes: remote paths gone (or changed kind) locally, topmost only.
    let mut deleted: HashSet<RelPath> = HashSet::new();
    for (path, rnode) in remote {
        if covered(&deleted, path) {
            continue;
        }
        let gone = match local.nodes.get(path) {
            None => true,
            Some(l) => l.kind != rnode.kind && (rnode.kind == Kind::Dir || l.kind == Kind::Dir),
        };
        if gone {
            deletes.push(Op::Delete(path.clone()));
            deleted.insert(path.clone());
        }
    }

    let paths: Vec<RelPath> = local.nodes.keys().cloned().collect();
    for path in paths {
        let lnode = local.nodes[&path].clone();
        let rnode = remote.get(&path).filter(|_| !covered(&deleted, &path));
        match lnode.kind {
            Kind::Dir => {
                if rnode.is_none_or(|r| r.kind != Kind::Dir || r.mode != lnode.mode) {
                    dirs.push(Op::Mkdir(path, lnode.mode));
                }
            }
            Kind::Symlink => {
                if rnode.is_none_or(|r| r.kind != Kind::Symlink || r.target != lnode.target) {
                    rest.push(Op::Symlink(path, lnode.target.clone()));
                }
            }
            Kind::File => {
                let rfile = rnode.filter(|r| r.kind == Kind::File);
                let quick_equal = rfile.is_some_and(|r| {
                    r.size == lnode.size && r.mtime_ns == lnode.mtime_ns && r.hash.is_some()
                });
                if quick_equal {
                    let r = rfile.expect("checked");
                    if r.mode != lnode.mode {
                        rest.push(Op::Chmod(path, lnode.mode));
                    }
                    continue;
                }
                if rfile.is_none() {
                    rest.push(Op::Put {
                        path,
                        node: lnode,
                        base: None,
                    });
                    continue;
                }
                let hash = match local.hash(&path) {
                    Ok(h) => h,
                    Err(e) => {
                        problems.push(format!("cannot read {path}: {e}"));
                        continue;
                    }
                };
                let node = local.nodes[&path].clone();
                match rfile {
                    Some(r) if r.hash == Some(hash) && r.size == node.size => {
                        if r.mode != node.mode {
                            rest.push(Op::Chmod(path, node.mode));
                        }
                    }
                    _ => rest.push(Op::Put {
                        path,
                        node,
                        base: rfile.and_then(|r| r.hash),
                    }),
                }
            }
        }
    }
    let mut ops = deletes;
    ops.extend(dirs);
    ops.extend(rest);
    (ops, problems)
}

/// Whether `path` or one of its parents is in `deleted`.
fn covered(deleted: &HashSet<RelPath>, path: &RelPath) -> bool {
    if deleted.is_empty() {
        return false;
    }
    let mut p = Some(path.clone());
    while let Some(q) = p {
        if deleted.contains(&q) {
            return true;
        }
        p = q.parent();
    }
    false
}

/// Applies the effect of successful operations to the confirmed remote tree.
pub fn confirm(remote: &mut Tree, op: &Op) {
    match op {
        Op::Delete(p) => {
            let doomed: Vec<RelPath> = remote
                .range(p.clone()..)
                .take_while(|(q, _)| q.as_str().starts_with(p.as_str()))
                .filter(|(q, _)| q.starts_with(p))
                .map(|(q, _)| q.clone())
                .collect();
            for q in doomed {
                remote.remove(&q);
            }
        }
        Op::Mkdir(p, mode) => {
            remote.insert(
                p.clone(),
                Node {
                    kind: Kind::Dir,
                    mode: *mode,
                    size: 0,
                    mtime_ns: 0,
                    hash: None,
                    target: String::new(),
                    stat: None,
                },
            );
        }
        Op::Put { path, node, .. } => {
            remote.insert(
                path.clone(),
                Node {
                    stat: None,
                    ..node.clone()
                },
            );
        }
        Op::Symlink(p, target) => {
            remote.insert(
                p.clone(),
                Node {
                    kind: Kind::Symlink,
                    mode: 0o777,
                    size: 0,
                    mtime_ns: 0,
                    hash: None,
                    target: target.clone(),
                    stat: None,
                },
            );
        }
        Op::Chmod(p, mode) => {
            if let Some(n) = remote.get_mut(p) {
                n.mode = *mode;
            }
        }
    }
}
