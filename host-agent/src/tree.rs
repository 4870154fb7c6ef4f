//! The local tree: what should be on the agent, as a map from path to [`Node`].
//!
//! Scanning (see [`crate::scan`]) stats everything but hashes lazily: a
//! file's blake3 is computed only when the plan needs it, and kept in its
//! node while the file is the same version (device, inode, size, mtime,
//! ctime), so a rescan of an unchanged tree hashes nothing.
//!
//! Nodes are small (72 bytes on the agent's side, 96 on the local one, which
//! also knows which version of a file it saw) and a path's text is shared by
//! every tree that holds it: 100,000 files cost a few tens of MiB, not a
//! hundred.

use crate::ignores::Ignores;
use crate::scan;
use lks_proto::RelPath;
use lks_proto::v1::{Entry, EntryKind};
use std::collections::BTreeMap;
use std::ops::Bound;
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

/// Which version of a local file a node describes, beyond its size and
/// mtime: its inode, its change time and (folded to 32 bits) its device. A
/// hash computed for one version holds while all of them stay the same.
/// Zero for the agent's nodes (unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ident {
    ino: u64,
    ctime_ns: i64,
    dev: u32,
}

impl Ident {
    /// Its fields as bytes (for a digest).
    pub fn bytes(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&self.ino.to_le_bytes());
        b[8..16].copy_from_slice(&self.ctime_ns.to_le_bytes());
        b[16..].copy_from_slice(&self.dev.to_le_bytes());
        b
    }

    /// The identity of a file's metadata.
    pub fn of(md: &std::fs::Metadata) -> Ident {
        Ident {
            ino: md.ino(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            dev: fold(md.dev()),
        }
    }

    /// The identity of a `stat` result (the same as [`Ident::of`] its metadata).
    // The field types of `stat` differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    pub fn of_stat(st: &rustix::fs::Stat) -> Ident {
        Ident {
            ino: st.st_ino as u64,
            ctime_ns: st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64,
            dev: fold(st.st_dev as u64),
        }
    }

    /// Whether it names a version (a local file's, not the agent's).
    pub fn is_known(&self) -> bool {
        self.ino != 0
    }

    /// Its inode, change time and folded device (as kept on disk).
    pub fn parts(&self) -> (u64, i64, u32) {
        (self.ino, self.ctime_ns, self.dev)
    }

    /// The identity of [`Ident::parts`].
    pub fn from_parts(ino: u64, ctime_ns: i64, dev: u32) -> Ident {
        Ident { ino, ctime_ns, dev }
    }
}

/// A device number in 32 bits (Linux's encoding puts major and minor in the
/// low 32 bits for every device number below 2^32; the rest is folded in).
fn fold(dev: u64) -> u32 {
    (dev ^ (dev >> 32)) as u32
}

/// What a path holds, as both sides know it: an entry of the agent's tree,
/// and the part of a local one an operation carries.
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
    /// Target (symlinks); empty otherwise.
    pub target: Target,
}

/// A symlink's target, or nothing: one pointer (a `Box<str>` is two, and
/// all but a few nodes are files and directories, at 100,000 entries a tree).
// The box is the point: a thin pointer to the string, not the string's
// three words in every node.
#[allow(clippy::box_collection)]
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Target(Option<Box<String>>);

impl std::ops::Deref for Target {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_deref().map_or("", String::as_str)
    }
}

impl From<&str> for Target {
    fn from(s: &str) -> Target {
        Target((!s.is_empty()).then(|| Box::new(s.to_string())))
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// An entry of the local tree: what it holds, and which version of a file
/// it is (what its hash is kept by).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    /// What it holds.
    pub node: Node,
    /// Which version of a file it is.
    pub ident: Ident,
}

impl Local {
    /// A local entry whose version does not matter (a directory, a symlink).
    pub fn plain(node: Node) -> Local {
        Local {
            node,
            ident: Ident::default(),
        }
    }

    /// Whether `self` (a fresh look at a local file) is the very version
    /// `old` described: then `old`'s hash is `self`'s.
    fn same_version(&self, old: &Local) -> bool {
        self.kind == Kind::File
            && old.kind == Kind::File
            && self.ident.is_known()
            && self.ident == old.ident
            && self.size == old.size
            && self.mtime_ns == old.mtime_ns
    }
}

/// A local entry reads as what it holds.
impl std::ops::Deref for Local {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl std::ops::DerefMut for Local {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

impl Node {
    /// A directory.
    pub fn dir(mode: u32) -> Node {
        Node {
            kind: Kind::Dir,
            mode,
            size: 0,
            mtime_ns: 0,
            hash: None,
            target: Target::default(),
        }
    }

    /// A file of `size` bytes (mode 0o644, mtime 1 ns, hash unknown), for
    /// tests that plan or send it.
    #[cfg(test)]
    pub fn test_file(size: u64) -> Node {
        Node {
            kind: Kind::File,
            mode: 0o644,
            size,
            mtime_ns: 1,
            hash: None,
            target: Target::default(),
        }
    }

    /// A symlink to `target`.
    pub fn symlink(target: &str) -> Node {
        Node {
            kind: Kind::Symlink,
            mode: 0o777,
            size: 0,
            mtime_ns: 0,
            hash: None,
            target: target.into(),
        }
    }

    /// The node of an entry of the agent's manifest.
    pub fn from_entry(e: &Entry) -> Option<Node> {
        let kind = match EntryKind::try_from(e.kind).ok()? {
            EntryKind::File => Kind::File,
            EntryKind::Dir => Kind::Dir,
            EntryKind::Symlink => Kind::Symlink,
            EntryKind::Unspecified => return None,
        };
        let hash = <[u8; 32]>::try_from(e.blake3.as_slice()).ok();
        Some(Node {
            kind,
            mode: e.mode & 0o777,
            size: e.size,
            mtime_ns: e.mtime_ns,
            hash,
            target: e.link_target.as_str().into(),
        })
    }
}

fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

/// A tree: path -> node, sorted so parents come before their children (the
/// agent's, as it last confirmed it).
pub type Tree = BTreeMap<RelPath, Node>;

/// The local tree's entries, in the same order.
pub type LocalNodes = BTreeMap<RelPath, Local>;

/// `path` and everything beneath it in `tree`, in order. (In the tree's
/// order a subtree is not one range: `a b` sorts between `a` and `a/b`;
/// what is beneath `a` is the range from `a/` to `a0`, `0` following `/`.)
pub fn subtree<'a, V>(
    tree: &'a BTreeMap<RelPath, V>,
    path: &RelPath,
) -> impl Iterator<Item = (&'a RelPath, &'a V)> + use<'a, V> {
    let (lo, hi) = (format!("{path}/"), format!("{path}0"));
    tree.get_key_value(path.as_str())
        .into_iter()
        .chain(tree.range::<str, _>((Bound::Included(lo.as_str()), Bound::Excluded(hi.as_str()))))
}

/// How many entries [`build_sorted`] holds at a time.
pub const PART: usize = 16 * 1024;

/// Builds a tree from `entries` given in order (sorted by path), a part at
/// a time: `BTreeMap::from_iter` holds all of them in a vector (and sorts
/// them again, with a scratch half as large) while it builds, which for
/// 100,000 entries is 20 MiB for a moment; this holds one part, and each
/// part is appended (in time linear in the tree: a few passes in all).
pub fn build_sorted<V>(entries: impl IntoIterator<Item = (RelPath, V)>) -> BTreeMap<RelPath, V> {
    let mut tree = BTreeMap::new();
    let mut part = Vec::with_capacity(PART);
    for e in entries {
        part.push(e);
        if part.len() == PART {
            tree.append(&mut part.drain(..).collect());
        }
    }
    tree.append(&mut part.into_iter().collect());
    tree
}

/// Builds a tree from the vector `entries` (sorted by path), a part at a
/// time taken from its end, the vector shrunk after each: the entries and
/// the tree made of them are not both whole at once (12 MiB each at 100,000
/// local entries). [`build_sorted`] takes any iterator, but a vector's
/// holds its buffer to the end.
pub fn build_sorted_vec<V>(mut entries: Vec<(RelPath, V)>) -> BTreeMap<RelPath, V> {
    let mut tree = BTreeMap::new();
    while !entries.is_empty() {
        let at = entries.len().saturating_sub(PART);
        let mut part: BTreeMap<_, _> = entries.drain(at..).collect();
        entries.shrink_to_fit();
        tree.append(&mut part);
    }
    tree
}

/// Removes `path` and everything beneath it from `tree`; returns what was
/// there, in order.
pub fn remove_subtree<V>(tree: &mut BTreeMap<RelPath, V>, path: &RelPath) -> Vec<(RelPath, V)> {
    let doomed: Vec<RelPath> = subtree(tree, path).map(|(p, _)| p.clone()).collect();
    doomed
        .into_iter()
        .filter_map(|p| tree.remove_entry(&p))
        .collect()
}

/// A digest of a tree's entries as `stat` describes them (their inode and
/// ctime too): equal digests, the same tree, as far as the hash cache can
/// tell (a file whose stat is unchanged is not read again).
///
/// It is the same whatever order the entries come in (a wrapping sum of a
/// 128-bit blake3 of each entry, and their count), so a walk's threads make
/// it as they go and a resync that finds the tree unchanged never sorts it.
/// The entries of a tree are distinct paths, so no two cancel out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    entries: u64,
    sum: u128,
}

impl Digest {
    /// Adds the entry at `path`.
    pub fn add(&mut self, path: &RelPath, l: &Local) {
        let n = &l.node;
        let parts: [&[u8]; 8] = [
            path.as_str().as_bytes(),
            &[0, n.kind as u8],
            &n.mode.to_le_bytes(),
            &n.size.to_le_bytes(),
            &n.mtime_ns.to_le_bytes(),
            n.target.as_bytes(),
            &[0],
            &l.ident.bytes(),
        ];
        // Put together on the stack and hashed in one call when it fits (a
        // path of a few dozen bytes is one blake3 block: a hasher's worth of
        // updates would cost more than the hash).
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut buf = [0u8; 512];
        let hash = if len <= buf.len() {
            let mut at = 0;
            for p in parts {
                buf[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            blake3::hash(&buf[..len])
        } else {
            let mut h = blake3::Hasher::new();
            for p in parts {
                h.update(p);
            }
            h.finalize()
        };
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash.as_bytes()[..16]);
        self.entries += 1;
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
    }

    /// Adds what `other` was made of.
    pub fn merge(&mut self, other: Digest) {
        self.entries += other.entries;
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{:032x}", self.entries, self.sum)
    }
}

/// The local tree and what is needed to keep it current.
pub struct LocalTree {
    root: PathBuf,
    /// Current entries.
    pub nodes: LocalNodes,
    /// Things skipped while scanning, to tell the user once.
    pub warnings: Vec<String>,
    /// How many files were read to hash them, so far.
    pub hashed: usize,
}

impl LocalTree {
    /// A digest of every entry as `stat` describes it (see [`Digest`]).
    pub fn digest(&self) -> Digest {
        let mut d = Digest::default();
        for (path, l) in &self.nodes {
            d.add(path, l);
        }
        d
    }

    /// An empty tree rooted at `root`.
    pub fn new(root: &Path) -> LocalTree {
        LocalTree {
            root: root.to_path_buf(),
            nodes: LocalNodes::new(),
            warnings: Vec::new(),
            hashed: 0,
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

    /// Rescans everything (on every core), keeping the hashes of the files
    /// that did not change.
    #[cfg(test)]
    pub fn rescan(&mut self, ignores: &Ignores) {
        let found = self.walk(ignores);
        self.adopt(found);
    }

    /// Walks the whole tree (on every core): what is there now, for
    /// [`LocalTree::adopt`].
    pub fn walk(&self, ignores: &Ignores) -> scan::Found {
        scan::walk(&self.root, None, ignores, scan::threads())
    }

    /// Makes what a whole walk `found` the tree, keeping the hashes of the
    /// files that did not change.
    pub fn adopt(&mut self, found: scan::Found) {
        self.warnings.extend(found.warnings);
        let mut entries = found.entries;
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let old = std::mem::take(&mut self.nodes);
        carry_hashes(&mut entries, old.iter());
        drop(old);
        self.nodes = build_sorted_vec(entries);
    }

    /// Brings the entry at `path` (and, for a directory, everything beneath
    /// it) up to date after the watcher reported it. Returns the topmost path
    /// it looked at again: `path`, or an ancestor that was missing from the
    /// tree (it is looked at instead, whole).
    pub fn refresh(&mut self, path: &RelPath, ignores: &Ignores) -> RelPath {
        // A path whose parent is missing (or not a directory) is looked at
        // from its topmost missing ancestor.
        if let Some(parent) = path.parent()
            && self.nodes.get(&parent).is_none_or(|n| n.kind != Kind::Dir)
        {
            return self.refresh(&parent, ignores);
        }
        let abs = self.abs(path);
        let md = std::fs::symlink_metadata(&abs).ok();
        let is_dir = md.as_ref().is_some_and(|m| m.is_dir());
        // Drop what was there; it is re-added below if it still exists.
        let mut old = remove_subtree(&mut self.nodes, path);
        let Some(md) = md else {
            return path.clone();
        };
        if ignores.ignores_path(path, is_dir) && !(is_dir && ignores.may_reinclude_beneath(path)) {
            return path.clone();
        }
        let included = !ignores.ignores_path(path, is_dir);
        if included && let Some(mut node) = self.describe(path, &md) {
            if let Some((_, was)) = old.first().filter(|(p, _)| p == path)
                && node.same_version(was)
            {
                node.hash = was.hash;
            }
            self.nodes.insert(path.clone(), node);
        }
        if is_dir {
            let found = scan::walk(&abs, Some(path), ignores, 1);
            self.warnings.extend(found.warnings);
            let mut entries = found.entries;
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            old.retain(|(_, n)| n.kind == Kind::File && n.hash.is_some());
            carry_hashes(&mut entries, old.iter().map(|(p, n)| (p, n)));
            self.nodes.extend(entries);
        }
        path.clone()
    }

    fn describe(&mut self, rel: &RelPath, md: &std::fs::Metadata) -> Option<Local> {
        let ft = md.file_type();
        let mode = md.mode() & 0o777;
        if ft.is_dir() {
            Some(Local::plain(Node::dir(mode)))
        } else if ft.is_symlink() {
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
            Some(Local::plain(Node::symlink(target)))
        } else if ft.is_file() {
            Some(Local {
                node: Node {
                    kind: Kind::File,
                    mode,
                    size: md.size(),
                    mtime_ns: mtime_ns(md),
                    hash: None,
                    target: Target::default(),
                },
                ident: Ident::of(md),
            })
        } else {
            self.warnings
                .push(format!("skipping {rel}: not a file, directory or symlink"));
            None
        }
    }

    /// The blake3 of the local file at `rel`, computing and keeping it if
    /// needed.
    pub fn hash(&mut self, rel: &RelPath) -> std::io::Result<[u8; 32]> {
        if let Some(h) = self.nodes.get(rel).and_then(|n| n.hash) {
            return Ok(h);
        }
        let mut f = std::fs::File::open(self.abs(rel))?;
        self.hashed += 1;
        let before = f.metadata()?;
        let mut hasher = blake3::Hasher::new();
        std::io::copy(&mut f, &mut hasher)?;
        let h = *hasher.finalize().as_bytes();
        let after = f.metadata()?;
        let version = |md: &std::fs::Metadata| (Ident::of(md), md.size(), mtime_ns(md));
        if version(&after) != version(&before) {
            return Err(std::io::Error::other(format!(
                "{rel} changed while it was being read"
            )));
        }
        if let Some(n) = self.nodes.get_mut(rel) {
            n.hash = Some(h);
            n.ident = Ident::of(&after);
            n.size = after.size();
            n.mtime_ns = mtime_ns(&after);
        }
        Ok(h)
    }
}

/// Gives each file of `entries` (sorted) the hash its node in `old` (sorted)
/// had, when it is the same version.
fn carry_hashes<'a>(
    entries: &mut [(RelPath, Local)],
    old: impl Iterator<Item = (&'a RelPath, &'a Local)>,
) {
    let mut old = old.peekable();
    for (path, node) in entries.iter_mut() {
        while old.next_if(|(p, _)| *p < path).is_some() {}
        if let Some((p, was)) = old.peek()
            && *p == path
            && was.hash.is_some()
            && node.same_version(was)
        {
            node.hash = was.hash;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn a_subtree_is_the_path_and_what_is_beneath_it_not_its_look_alikes() {
        let mut t = Tree::new();
        for p in ["a", "a b", "a-x", "a/b", "a/b/c", "a0", "ab"] {
            t.insert(rp(p), Node::dir(0o755));
        }
        let got: Vec<&str> = subtree(&t, &rp("a")).map(|(p, _)| p.as_str()).collect();
        assert_eq!(got, ["a", "a/b", "a/b/c"]);
        let gone = remove_subtree(&mut t, &rp("a/b"));
        assert_eq!(gone.len(), 2);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn a_walks_digest_is_its_trees_and_changes_with_any_entry() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..200 {
            let d = tmp.path().join(format!("d{}", i % 9));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
        }
        // A path too long for the digest's buffer on the stack.
        let long = "x".repeat(200);
        std::fs::create_dir_all(tmp.path().join(&long).join(&long)).unwrap();
        std::fs::write(tmp.path().join(&long).join(&long).join(&long), "l").unwrap();
        let ignores = Ignores::load(tmp.path(), &[]);
        let mut tree = LocalTree::new(tmp.path());
        let found = tree.walk(&ignores);
        let walked = found.digest;
        // Found in another order (one walker), the same digest.
        let one = scan::walk(tmp.path(), None, &ignores, 1);
        assert_eq!(one.digest, walked);
        tree.adopt(found);
        assert_eq!(tree.digest(), walked);
        assert_eq!(tree.digest().to_string(), walked.to_string());

        let changed = |what: &dyn Fn()| {
            what();
            let now = tree.walk(&ignores).digest;
            assert_ne!(now, walked);
            now
        };
        let f = tmp.path().join("d1/f1");
        // Same size, another mtime.
        changed(&|| {
            std::fs::write(&f, "9").unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7);
            std::fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(t)
                .unwrap();
        });
        let before = tree.walk(&ignores).digest;
        let mode = changed(&|| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        });
        assert_ne!(mode, before);
        let added = changed(&|| std::fs::write(tmp.path().join("new"), "").unwrap());
        std::fs::remove_file(tmp.path().join("new")).unwrap();
        let gone = tree.walk(&ignores).digest;
        assert_ne!(gone, added);
        assert_eq!(gone, mode);
    }

    #[test]
    fn a_symlink_target_reads_as_its_text_and_none_is_empty() {
        assert_eq!(&*Target::from("../lib/a.so"), "../lib/a.so");
        assert_eq!(Target::from(""), Target::default());
        assert_eq!(&*Target::default(), "");
        assert_ne!(Target::from("a"), Target::from("b"));
        assert_eq!(std::mem::size_of::<Target>(), 8, "one pointer");
    }

    #[test]
    fn a_tree_built_a_part_at_a_time_is_the_tree() {
        let entries: Vec<(RelPath, u32)> = (0..3 * PART as u32 + 7)
            .map(|i| (rp(&format!("d{:02}/f{i:06}", i % 13)), i))
            .collect();
        let mut sorted = entries.clone();
        sorted.sort();
        let built = build_sorted(sorted.clone());
        let want: BTreeMap<RelPath, u32> = entries.into_iter().collect();
        assert_eq!(built, want);
        assert_eq!(build_sorted_vec(sorted), want, "from a vector's end");
    }

    #[test]
    fn a_rescan_keeps_the_hash_of_an_unchanged_file_and_drops_a_changed_ones() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("same"), "same").unwrap();
        std::fs::write(tmp.path().join("edited"), "one").unwrap();
        let ignores = Ignores::load(tmp.path(), &[]);
        let mut tree = LocalTree::new(tmp.path());
        tree.rescan(&ignores);
        tree.hash(&rp("same")).unwrap();
        tree.hash(&rp("edited")).unwrap();
        std::fs::write(tmp.path().join("edited"), "two").unwrap();
        tree.rescan(&ignores);
        assert_eq!(
            tree.nodes[&rp("same")].hash,
            Some(*blake3::hash(b"same").as_bytes())
        );
        assert_eq!(tree.nodes[&rp("edited")].hash, None);
        assert_eq!(
            tree.hash(&rp("edited")).unwrap(),
            *blake3::hash(b"two").as_bytes()
        );
    }

    #[test]
    fn a_refresh_beneath_a_missing_directory_looks_at_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let ignores = Ignores::load(tmp.path(), &[]);
        let mut tree = LocalTree::new(tmp.path());
        tree.rescan(&ignores);
        std::fs::create_dir_all(tmp.path().join("new/deep")).unwrap();
        std::fs::write(tmp.path().join("new/deep/f"), "f").unwrap();
        let top = tree.refresh(&rp("new/deep/f"), &ignores);
        assert_eq!(top, rp("new"));
        let paths: Vec<&str> = tree.nodes.keys().map(|p| p.as_str()).collect();
        assert_eq!(paths, ["new", "new/deep", "new/deep/f"]);
    }
}
