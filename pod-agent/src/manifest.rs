//! The agent's view of its root: every entry with its kind, mode, size and blake3,
//! hashed at most once per (device, inode, size, mtime, ctime).

use lks_proto::v1::{Entry, EntryKind};
use lks_proto::{RelPath, is_staging_name};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

/// The identity of one version of a file, as far as `stat` can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl StatKey {
    /// The key of a file's metadata.
    pub fn of(md: &std::fs::Metadata) -> StatKey {
        StatKey {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        }
    }
}

/// blake3 hashes of files beneath the root, keyed by path and valid while the
/// file's [`StatKey`] is unchanged.
#[derive(Default)]
pub struct HashCache {
    map: Mutex<HashMap<String, (StatKey, [u8; 32])>>,
}

impl HashCache {
    /// The cached hash of `path` if its metadata still matches.
    pub fn get(&self, path: &str, key: &StatKey) -> Option<[u8; 32]> {
        let map = self.map.lock().unwrap();
        map.get(path).filter(|(k, _)| k == key).map(|(_, h)| *h)
    }

    /// Records the hash of `path` at `key`.
    pub fn put(&self, path: &str, key: StatKey, hash: [u8; 32]) {
        self.map
            .lock()
            .unwrap()
            .insert(path.to_string(), (key, hash));
    }

    /// The hash of the open file `f` at `path`, from the cache or by reading it.
    pub fn hash_file(&self, path: &str, f: &mut std::fs::File) -> std::io::Result<[u8; 32]> {
        let key = StatKey::of(&f.metadata()?);
        if let Some(h) = self.get(path, &key) {
            return Ok(h);
        }
        let h = hash_reader(f)?;
        self.put(path, key, h);
        Ok(h)
    }
}

/// blake3 of everything `r` yields.
pub fn hash_reader(r: &mut impl Read) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Walks `root` and returns every entry beneath it, sorted by path, plus warnings
/// for entries that cannot be described.
pub fn scan(root: &Path, cache: &HashCache) -> (Vec<Entry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    let mut stack: Vec<(std::path::PathBuf, Option<RelPath>)> = vec![(root.to_path_buf(), None)];
    while let Some((dir, rel)) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                warnings.push(format!("cannot list {}: {e}", dir.display()));
                continue;
            }
        };
        for item in rd {
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    warnings.push(format!("cannot list {}: {e}", dir.display()));
                    continue;
                }
            };
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                warnings.push(format!(
                    "skipping non-UTF-8 name {:?} in {}",
                    name,
                    dir.display()
                ));
                continue;
            };
            if is_staging_name(name) {
                continue;
            }
            let child = match &rel {
                None => RelPath::new(name),
                Some(r) => r.join(name),
            };
            let child = match child {
                Ok(c) => c,
                Err(e) => {
                    warnings.push(format!("skipping {name:?}: {e}"));
                    continue;
                }
            };
            match item
                .metadata()
                .and_then(|md| describe(&item.path(), md, &child, cache))
            {
                Ok(entry) => {
                    if entry.kind == EntryKind::Dir as i32 {
                        stack.push((item.path(), Some(child)));
                    }
                    entries.push(entry);
                }
                Err(e) => warnings.push(format!("skipping {child}: {e}")),
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    (entries, warnings)
}

/// Describes one entry; `md` comes from the directory listing (fstatat
/// relative to the directory, never following a symlink).
fn describe(
    abs: &Path,
    md: std::fs::Metadata,
    rel: &RelPath,
    cache: &HashCache,
) -> std::io::Result<Entry> {
    let ft = md.file_type();
    let mut entry = Entry {
        path: rel.to_string(),
        mode: md.mode() & 0o777,
        ..Default::default()
    };
    if ft.is_dir() {
        entry.kind = EntryKind::Dir as i32;
    } else if ft.is_symlink() {
        entry.kind = EntryKind::Symlink as i32;
        let target = std::fs::read_link(abs)?;
        entry.link_target = target
            .to_str()
            .ok_or_else(|| std::io::Error::other("non-UTF-8 symlink target"))?
            .to_string();
    } else if ft.is_file() {
        entry.kind = EntryKind::File as i32;
        entry.size = md.size();
        entry.mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
        let key = StatKey::of(&md);
        let hash = match cache.get(rel.as_str(), &key) {
            Some(h) => h,
            None => {
                // No following a symlink swapped in since the lstat, no
                // blocking on a FIFO.
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(
                        (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
                    )
                    .open(abs)?;
                if !f.metadata()?.is_file() {
                    return Err(std::io::Error::other("changed while being listed"));
                }
                let h = hash_reader(&mut f)?;
                cache.put(rel.as_str(), key, h);
                h
            }
        };
        entry.blake3 = hash.to_vec();
    } else {
        return Err(std::io::Error::other("not a file, directory or symlink"));
    }
    Ok(entry)
}
