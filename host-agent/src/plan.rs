//! The plan: what to send so the agent's tree (as last confirmed) becomes the
//! local tree. Deletes first (a deleted directory takes its children with it),
//! then directories, files and symlinks in path order: a directory before
//! what it holds, and what a new directory holds right after it, so a batch
//! carries whole new subtrees (which the agent puts in place with one rename
//! each).

use crate::tree::{Kind, Local, LocalTree, Node, Target, Tree, remove_subtree, subtree};
use lks_proto::RelPath;
use std::collections::{BTreeSet, HashSet};

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
        /// What the agent is told of the file besides its bytes. Its hash is
        /// computed while sending (one read, not two), of what is really read.
        file: PutFile,
        /// blake3 of what the agent has at that path, when it is a file (boxed:
        /// most puts have none, and a first sync holds 100,000 of them).
        base: Option<Box<[u8; 32]>>,
    },
    /// Create or replace a symlink.
    Symlink(RelPath, Target),
    /// Set the mode of a file whose content is already equal.
    Chmod(RelPath, u32),
}

/// A local file as a put describes it (the rest of its [`Node`] is the hash
/// of what is sent). 24 bytes, where a whole node is 72.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutFile {
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes, as scanned (what is sent may differ: it is read then).
    pub size: u64,
    /// Modification time in ns.
    pub mtime_ns: i64,
}

impl PutFile {
    /// What a put of the local file `node` says of it.
    pub fn of(node: &Node) -> PutFile {
        PutFile {
            mode: node.mode,
            size: node.size,
            mtime_ns: node.mtime_ns,
        }
    }

    /// A file of `size` bytes (mode 0o644, mtime 1 ns), for tests that plan
    /// or send it.
    #[cfg(test)]
    pub fn test_file(size: u64) -> PutFile {
        PutFile {
            mode: 0o644,
            size,
            mtime_ns: 1,
        }
    }

    /// The agent's node once it has this file as sent: `size` bytes whose
    /// blake3 is `hash`.
    pub fn node(self, size: u64, hash: Option<[u8; 32]>) -> Node {
        Node {
            kind: Kind::File,
            mode: self.mode,
            size,
            mtime_ns: self.mtime_ns,
            hash,
            target: Default::default(),
        }
    }
}

/// The files `ops` send, and their bytes (as planned).
pub fn files_in(ops: &[Op]) -> (u64, u64) {
    ops.iter().fold((0, 0), |(files, bytes), op| match op {
        Op::Put { file, .. } => (files + 1, bytes + file.size),
        _ => (files, bytes),
    })
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
///
/// One merge pass over both trees (both are sorted, parents first).
pub fn plan(local: &mut LocalTree, remote: &Tree) -> (Vec<Op>, Vec<String>) {
    let mut out = Planned::default();
    out.merge(local.nodes.iter(), remote.iter());
    out.finish(local)
}

/// [`plan`] for the subtrees at `roots` alone (each path and what is beneath
/// it), for when the trees are known to be equal everywhere else (they were
/// after the last batch, and only these paths changed since): an edit in a
/// tree of 100,000 files costs what its paths cost, not a pass over both
/// trees.
pub fn plan_beneath(
    local: &mut LocalTree,
    remote: &Tree,
    roots: &BTreeSet<RelPath>,
) -> (Vec<Op>, Vec<String>) {
    let mut out = Planned::default();
    for root in roots {
        // A root beneath another one is covered by it.
        let s = root.as_str();
        if s.match_indices('/').any(|(i, _)| roots.contains(&s[..i])) {
            continue;
        }
        out.merge(subtree(&local.nodes, root), subtree(remote, root));
    }
    out.finish(local)
}
/// The operations for local entries, as the merge finds them.
#[derive(Default)]
struct Planned {
    deletes: Vec<Op>,
    /// The paths deleted: what is beneath them goes with them.
    deleted: HashSet<RelPath>,
    rest: Vec<Op>,
    /// Files of the same size as the agent's but another mtime, with what
    /// the agent has: hashed after the merge (hashing needs the tree mutably).
    to_hash: Vec<(RelPath, Node)>,
}

impl Planned {
    /// Merges two sorted runs of entries (parents first): what only `local`
    /// has is made, what only `remote` has is deleted (its topmost path), and
    /// what both have is compared.
    fn merge<'a>(
        &mut self,
        local: impl Iterator<Item = (&'a RelPath, &'a Local)>,
        remote: impl Iterator<Item = (&'a RelPath, &'a Node)>,
    ) {
        let mut l = local.peekable();
        let mut r = remote.peekable();
        loop {
            let order = match (l.peek(), r.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((lp, _)), Some((rp, _))) => lp.cmp(rp),
            };
            match order {
                // Only local: new.
                std::cmp::Ordering::Less => {
                    let (path, lnode) = l.next().expect("peeked");
                    self.local(path, lnode, None);
                }
                // Only remote: gone locally (topmost only).
                std::cmp::Ordering::Greater => {
                    let (path, _) = r.next().expect("peeked");
                    if !covered(&self.deleted, path) {
                        self.delete(path);
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (path, lnode) = l.next().expect("peeked");
                    let (_, rnode) = r.next().expect("peeked");
                    if covered(&self.deleted, path) {
                        self.local(path, lnode, None);
                    } else if lnode.kind != rnode.kind
                        && (rnode.kind == Kind::Dir || lnode.kind == Kind::Dir)
                    {
                        // A directory became something else or the reverse.
                        self.delete(path);
                        self.local(path, lnode, None);
                    } else {
                        self.local(path, lnode, Some(rnode));
                    }
                }
            }
        }
    }

    fn delete(&mut self, path: &RelPath) {
        self.deletes.push(Op::Delete(path.clone()));
        self.deleted.insert(path.clone());
    }

    /// Hashes what only the content tells (same size, other mtime) and
    /// orders the operations: deletes, then the rest in path order.
    fn finish(mut self, local: &mut LocalTree) -> (Vec<Op>, Vec<String>) {
        let mut problems = Vec::new();
        for (path, rfile) in std::mem::take(&mut self.to_hash) {
            let hash = match local.hash(&path) {
                Ok(h) => h,
                // Gone since the scan (a short-lived file): not a change; its
                // deletion's event brings what follows.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    problems.push(format!("cannot read {path}: {e}"));
                    continue;
                }
            };
            let node = &local.nodes[&path].node;
            if rfile.hash == Some(hash) && rfile.size == node.size {
                if rfile.mode != node.mode {
                    self.rest.push(Op::Chmod(path, node.mode));
                }
            } else {
                self.rest.push(Op::Put {
                    path,
                    file: PutFile::of(node),
                    base: rfile.hash.map(Box::new),
                });
            }
        }
        // Deletes first; without any, the list is the rest as it is (not a
        // copy of it: 15 MiB for a first sync of 100,000 files).
        let ops = if self.deletes.is_empty() {
            self.rest
        } else {
            let mut ops = self.deletes;
            ops.extend(self.rest);
            ops
        };
        (ops, problems)
    }

    /// What `lnode` at `path` needs, given the agent's node there (if any,
    /// and not deleted by this plan).
    fn local(&mut self, path: &RelPath, lnode: &Local, rnode: Option<&Node>) {
        match lnode.kind {
            Kind::Dir => {
                if rnode.is_none_or(|r| r.kind != Kind::Dir || r.mode != lnode.mode) {
                    self.rest.push(Op::Mkdir(path.clone(), lnode.mode));
                }
            }
            Kind::Symlink => {
                if rnode.is_none_or(|r| r.kind != Kind::Symlink || r.target != lnode.target) {
                    self.rest
                        .push(Op::Symlink(path.clone(), lnode.target.clone()));
                }
            }
            Kind::File => {
                let rfile = rnode.filter(|r| r.kind == Kind::File);
                match rfile {
                    Some(r)
                        if r.size == lnode.size
                            && r.mtime_ns == lnode.mtime_ns
                            && r.hash.is_some() =>
                    {
                        if r.mode != lnode.mode {
                            self.rest.push(Op::Chmod(path.clone(), lnode.mode));
                        }
                    }
                    // The same size: the content may still be equal.
                    Some(r) if r.size == lnode.size => self.to_hash.push((path.clone(), r.clone())),
                    // New, or a different size: the content differs without
                    // hashing here; the sender hashes what it reads, once.
                    _ => self.rest.push(Op::Put {
                        path: path.clone(),
                        file: PutFile::of(lnode),
                        base: rfile.and_then(|r| r.hash).map(Box::new),
                    }),
                }
            }
        }
    }
}

/// Whether `path` or one of its parents is in `deleted`. No allocation, and
/// a deep path costs its length, not its depth times its length: a few
/// deleted directories are compared as prefixes, many are looked up by each
/// parent's text.
fn covered(deleted: &HashSet<RelPath>, path: &RelPath) -> bool {
    if deleted.is_empty() {
        return false;
    }
    let s = path.as_str();
    let under = |d: &str| s == d || (s.starts_with(d) && s.as_bytes().get(d.len()) == Some(&b'/'));
    if deleted.len() <= 32 {
        return deleted.iter().any(|d| under(d.as_str()));
    }
    deleted.contains(s) || s.match_indices('/').any(|(i, _)| deleted.contains(&s[..i]))
}

/// Applies the effect of a successful operation to the confirmed remote
/// tree. A put is confirmed with the hash of what was really sent
/// ([`PutFile::node`]); given here, it leaves the file with no hash known.
pub fn confirm(remote: &mut Tree, op: &Op) {
    match op {
        Op::Delete(p) => {
            remove_subtree(remote, p);
        }
        Op::Mkdir(p, mode) => {
            remote.insert(p.clone(), Node::dir(*mode));
        }
        Op::Put { path, file, .. } => {
            remote.insert(path.clone(), file.node(file.size, None));
        }
        Op::Symlink(p, target) => {
            remote.insert(p.clone(), Node::symlink(target));
        }
        Op::Chmod(p, mode) => {
            if let Some(n) = remote.get_mut(p) {
                n.mode = *mode;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ignores::Ignores;
    use crate::tree::LocalTree;
    use std::os::unix::fs::PermissionsExt;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn local(files: &[(&str, &[u8])]) -> (tempfile::TempDir, LocalTree) {
        let dir = tempfile::tempdir().unwrap();
        for (p, data) in files {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let mut tree = LocalTree::new(dir.path());
        tree.rescan(&Ignores::load(dir.path(), &[]));
        (dir, tree)
    }

    fn file(data: &[u8], mode: u32, mtime_ns: i64) -> Node {
        Node {
            kind: Kind::File,
            mode,
            size: data.len() as u64,
            mtime_ns,
            hash: Some(*blake3::hash(data).as_bytes()),
            target: Default::default(),
        }
    }

    fn dir() -> Node {
        Node::dir(0o755)
    }

    #[test]
    fn a_deleted_directory_is_one_delete_not_one_per_child() {
        let (_d, mut l) = local(&[("keep.txt", b"k")]);
        let mut remote = Tree::new();
        remote.insert(rp("gone"), dir());
        remote.insert(rp("gone/a"), file(b"a", 0o644, 1));
        remote.insert(rp("gone/sub"), dir());
        remote.insert(rp("gone/sub/b"), file(b"b", 0o644, 1));
        // The local keep.txt has no hash yet in `remote`; give it the right one.
        remote.insert(
            rp("keep.txt"),
            file(
                b"k",
                l.nodes[&rp("keep.txt")].mode,
                l.nodes[&rp("keep.txt")].mtime_ns,
            ),
        );
        let (ops, problems) = plan(&mut l, &remote);
        assert!(problems.is_empty());
        assert_eq!(ops, vec![Op::Delete(rp("gone"))]);
    }

    #[test]
    fn a_file_gone_since_the_scan_is_not_a_change_nor_a_problem() {
        let (d, mut l) = local(&[("short-lived.json", b"same")]);
        let mode = l.nodes[&rp("short-lived.json")].mode;
        let mut remote = Tree::new();
        // Same size, other mtime: the plan must read it to tell.
        remote.insert(rp("short-lived.json"), file(b"same", mode, 12345));
        std::fs::remove_file(d.path().join("short-lived.json")).unwrap();
        let (ops, problems) = plan(&mut l, &remote);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(ops.is_empty(), "{ops:?}");
    }

    #[test]
    fn same_content_with_another_mtime_is_not_resent() {
        let (_d, mut l) = local(&[("a.txt", b"same")]);
        let mode = l.nodes[&rp("a.txt")].mode;
        let mut remote = Tree::new();
        remote.insert(rp("a.txt"), file(b"same", mode, 12345));
        let (ops, _) = plan(&mut l, &remote);
        assert!(ops.is_empty(), "{ops:?}");
    }

    #[test]
    fn a_mode_change_alone_is_a_chmod() {
        let (d, mut l) = local(&[("run.sh", b"#!/bin/sh")]);
        std::fs::set_permissions(
            d.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        l.rescan(&Ignores::load(d.path(), &[]));
        let mut remote = Tree::new();
        remote.insert(rp("run.sh"), file(b"#!/bin/sh", 0o644, 1));
        let (ops, _) = plan(&mut l, &remote);
        assert_eq!(ops, vec![Op::Chmod(rp("run.sh"), 0o755)]);
    }

    #[test]
    fn a_file_that_became_a_directory_is_deleted_then_created() {
        let (_d, mut l) = local(&[("x/inner.txt", b"i")]);
        let mut remote = Tree::new();
        remote.insert(rp("x"), file(b"was a file", 0o644, 1));
        let (ops, _) = plan(&mut l, &remote);
        assert_eq!(ops[0], Op::Delete(rp("x")));
        assert!(matches!(&ops[1], Op::Mkdir(p, _) if *p == rp("x")));
        assert!(matches!(&ops[2], Op::Put { path, base: None, .. } if *path == rp("x/inner.txt")));
    }

    #[test]
    fn a_changed_file_carries_the_agents_hash_as_delta_base() {
        let (_d, mut l) = local(&[("big.bin", b"new content")]);
        let mut remote = Tree::new();
        remote.insert(rp("big.bin"), file(b"old content", 0o644, 1));
        let (ops, _) = plan(&mut l, &remote);
        let want = *blake3::hash(b"old content").as_bytes();
        assert!(
            matches!(&ops[..], [Op::Put { base: Some(b), .. }] if **b == want),
            "{ops:?}"
        );
    }

    #[test]
    fn a_file_whose_size_changed_is_sent_without_hashing_it_first() {
        let (_d, mut l) = local(&[("app.js", b"a longer new version")]);
        let mut remote = Tree::new();
        remote.insert(rp("app.js"), file(b"short", 0o644, 1));
        let (ops, _) = plan(&mut l, &remote);
        let old = *blake3::hash(b"short").as_bytes();
        assert!(
            matches!(&ops[..], [Op::Put { base: Some(b), .. }] if **b == old),
            "{ops:?}"
        );
        assert_eq!(l.hashed, 0, "read to hash it before sending");
    }

    #[test]
    fn confirm_of_a_delete_forgets_the_subtree() {
        let mut remote = Tree::new();
        remote.insert(rp("a"), dir());
        remote.insert(rp("a/b"), file(b"x", 0o644, 1));
        remote.insert(rp("a b"), file(b"y", 0o644, 1));
        confirm(&mut remote, &Op::Delete(rp("a")));
        assert_eq!(remote.keys().cloned().collect::<Vec<_>>(), vec![rp("a b")]);
    }
}
