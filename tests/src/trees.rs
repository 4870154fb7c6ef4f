//! Directory trees: snapshots and their differences, and generated trees
//! from a seeded generator.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One entry of a tree snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Snap {
    /// A file: permission bits and blake3 of the content.
    File { mode: u32, hash: String },
    /// A directory and its permission bits.
    Dir { mode: u32 },
    /// A symlink and its target.
    Link { target: String },
}

/// Everything beneath `root` (not following symlinks), skipping paths for which
/// `skip` is true (and, for directories, everything beneath them). The agent's
/// transient staging files are left out, and entries that vanish while the
/// snapshot is taken are skipped (the caller compares again later).
pub fn snapshot_with(root: &Path, skip: impl Fn(&str) -> bool) -> BTreeMap<String, Snap> {
    let mut out = BTreeMap::new();
    let mut it = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .into_iter();
    while let Some(entry) = it.next() {
        let Ok(entry) = entry else { continue };
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(lks_proto::STAGING_PREFIX)
        {
            continue;
        }
        if skip(&rel) {
            if entry.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let Ok(md) = entry.path().symlink_metadata() else {
            continue;
        };
        let snap = if md.is_symlink() {
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            Snap::Link {
                target: target.to_string_lossy().into(),
            }
        } else if md.is_dir() {
            Snap::Dir {
                mode: md.mode() & 0o777,
            }
        } else {
            let Ok(data) = std::fs::read(entry.path()) else {
                continue;
            };
            Snap::File {
                mode: md.mode() & 0o777,
                hash: blake3::hash(&data).to_hex().to_string(),
            }
        };
        out.insert(rel, snap);
    }
    out
}

/// Everything beneath `root`.
pub fn snapshot(root: &Path) -> BTreeMap<String, Snap> {
    snapshot_with(root, |_| false)
}

/// Describes how two snapshots differ (empty when equal).
pub fn diff(a: &BTreeMap<String, Snap>, b: &BTreeMap<String, Snap>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("only in the first: {k} {v:?}")),
            Some(w) if w != v => out.push(format!("differs: {k}: {v:?} vs {w:?}")),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push(format!("only in the second: {k} {:?}", b[k]));
        }
    }
    out
}

/// Panics, listing the differences, unless the trees at `a` and `b` are equal.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let d = diff(&snapshot(a), &snapshot(b));
    assert!(d.is_empty(), "trees differ:\n{}", d.join("\n"));
}

/// A small deterministic pseudo-random generator for building test trees.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A value below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A random 8-hex-digit suffix for names that must not collide with earlier
/// or concurrent runs (the shared registry keeps its images between runs).
pub fn unique() -> String {
    format!(
        "{:08x}",
        Rng::new(std::process::id() as u64 ^ now_nanos()).next_u64() as u32
    )
}

/// Writes a generated tree of `files` files totalling about `total_bytes` under
/// `root`, spread over nested directories; returns the paths written.
pub fn generate_tree(root: &Path, files: usize, total_bytes: u64, seed: u64) -> Vec<PathBuf> {
    let dir_of = |i: usize| format!("d{}/s{}", i % 50, (i / 50) % 20);
    generate_files(root, files, total_bytes, seed, dir_of)
}

/// Writes `files` files totalling about `total_bytes` into `dirs` leaf
/// directories under `root`, two levels deep as a `node_modules` or a
/// vendored tree is (`dirs` of 10,000 is 100 directories of 100), the files
/// dealt out over them in turn; returns the paths written.
pub fn generate_tree_in(
    root: &Path,
    files: usize,
    dirs: usize,
    total_bytes: u64,
    seed: u64,
) -> Vec<PathBuf> {
    let dirs = dirs.clamp(1, files.max(1));
    let fan = (dirs as f64).sqrt().ceil() as usize;
    let dir_of = |i: usize| {
        let d = i % dirs;
        format!("p{}/q{}", d / fan, d % fan)
    };
    generate_files(root, files, total_bytes, seed, dir_of)
}

fn generate_files(
    root: &Path,
    files: usize,
    total_bytes: u64,
    seed: u64,
    dir_of: impl Fn(usize) -> String,
) -> Vec<PathBuf> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(files);
    let avg = (total_bytes / files.max(1) as u64).max(1);
    let mut made = std::collections::HashSet::new();
    for i in 0..files {
        let dir = root.join(dir_of(i));
        if made.insert(dir.clone()) {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let size = rng.below(avg * 2) as usize;
        let path = dir.join(format!("f{i}.dat"));
        std::fs::write(&path, rng.bytes(size)).unwrap();
        if i % 7 == 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        out.push(path);
    }
    out
}

/// Writes `root/rel`, creating its directories.
pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}
