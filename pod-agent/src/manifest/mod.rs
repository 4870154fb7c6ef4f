//! The agent's view of its root: every entry with its kind, mode, size and blake3,
//! hashed at most once per (device, inode, size, mtime, ctime).

use crate::root::{Root, list_dir};
use lks_proto::v1::{Entry, EntryKind};
use lks_proto::{RelPath, is_staging_name};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
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

    /// The key of a `stat` result (the same as [`StatKey::of`] its metadata).
    // The field types of `stat` differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    pub fn of_stat(st: &rustix::fs::Stat) -> StatKey {
        StatKey {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime_ns: st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64,
        }
    }
}

impl StatKey {
    /// The (device, inode): which file it is.
    pub fn inode(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// The (device, inode) of a `stat` result: which file it is.
#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
pub fn inode_of(st: &rustix::fs::Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
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

/// Walks the root by descriptor ([`Root::walk`]) and returns every entry
/// beneath it, sorted by path, plus warnings for entries that cannot be
/// described. Every entry is looked at relative to its directory's
/// descriptor and never followed: a symlink (even one swapped in for a
/// directory or a file during the scan) is reported as a symlink, and
/// nothing outside the root is listed, read or hashed.
pub fn scan(root: &Root, cache: &HashCache) -> (Vec<Entry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    root.walk(None, |dir, rel: &Option<RelPath>| {
        let listed = dir.and_then(|dir| Ok((dir, list_dir(dir)?)));
        match listed {
            Ok((dir, names)) => {
                scan_dir(dir, rel.as_ref(), names, cache, &mut entries, &mut warnings)
            }
            Err(e) => {
                warnings.push(format!("cannot list {}: {e}", shown(rel.as_ref())));
                Vec::new()
            }
        }
    });
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    (entries, warnings)
}

/// How a directory is named in a warning.
fn shown(rel: Option<&RelPath>) -> String {
    rel.map_or_else(|| "the root".to_string(), |r| r.to_string())
}

/// Describes the entries `names` of the directory `dir` (at `rel`, `None`
/// for the root); returns its subdirectories to enter.
fn scan_dir(
    dir: &OwnedFd,
    rel: Option<&RelPath>,
    names: Vec<(CString, FileType)>,
    cache: &HashCache,
    entries: &mut Vec<Entry>,
    warnings: &mut Vec<String>,
) -> Vec<(CString, Option<RelPath>)> {
    let mut subdirs = Vec::new();
    for (cname, _) in names {
        let Ok(name) = cname.to_str() else {
            warnings.push(format!(
                "skipping non-UTF-8 name {:?} in {}",
                cname,
                shown(rel)
            ));
            continue;
        };
        if is_staging_name(name) {
            continue;
        }
        let child = match rel {
            None => RelPath::new(name),
            Some(r) => r.join(name),
        };
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                warnings.push(format!("skipping {name:?} in {}: {e}", shown(rel)));
                continue;
            }
        };
        match describe(dir, &cname, &child, cache) {
            Ok(entry) => {
                if entry.kind == EntryKind::Dir as i32 {
                    subdirs.push((cname, Some(child)));
                }
                entries.push(entry);
            }
            Err(e) => warnings.push(format!("skipping {child}: {e}")),
        }
    }
    subdirs
}

/// Describes the entry `name` of `dir` (at `rel`), never following a symlink:
/// `fstatat` and `readlinkat` with `AT_SYMLINK_NOFOLLOW`, a file opened
/// `O_NOFOLLOW` (and `O_NONBLOCK`: no blocking on a FIFO) and hashed only if
/// it is still the inode that was listed.
fn describe(
    dir: &OwnedFd,
    name: &CStr,
    rel: &RelPath,
    cache: &HashCache,
) -> std::io::Result<Entry> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let mut entry = Entry {
        path: rel.to_string(),
        mode: st.st_mode & 0o777,
        ..Default::default()
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => entry.kind = EntryKind::Dir as i32,
        FileType::Symlink => {
            entry.kind = EntryKind::Symlink as i32;
            entry.link_target = rustix::fs::readlinkat(dir, name, Vec::new())?
                .into_string()
                .map_err(|_| std::io::Error::other("non-UTF-8 symlink target"))?;
        }
        FileType::RegularFile => {
            let (st, hash) = match cache.get(rel.as_str(), &StatKey::of_stat(&st)) {
                Some(hash) => (st, hash),
                None => hash_at(dir, name, &st, rel, cache)?,
            };
            entry.kind = EntryKind::File as i32;
            entry.size = st.st_size as u64;
            entry.mtime_ns = StatKey::of_stat(&st).mtime_ns;
            entry.blake3 = hash.to_vec();
        }
        _ => return Err(std::io::Error::other("not a file, directory or symlink")),
    }
    Ok(entry)
}

/// Opens the regular file `name` of `dir` (listed as `listed`) and hashes
/// it; returns the stat of what was hashed.
fn hash_at(
    dir: &OwnedFd,
    name: &CStr,
    listed: &rustix::fs::Stat,
    rel: &RelPath,
    cache: &HashCache,
) -> std::io::Result<(rustix::fs::Stat, [u8; 32])> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || inode_of(&st) != inode_of(listed)
    {
        return Err(std::io::Error::other("changed while being listed"));
    }
    let h = hash_reader(&mut std::fs::File::from(fd))?;
    cache.put(rel.as_str(), StatKey::of_stat(&st), h);
    Ok((st, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_and_the_metadata_of_one_file_give_one_key() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"content").unwrap();
        let st = rustix::fs::stat(&path).unwrap();
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(StatKey::of_stat(&st), StatKey::of(&md));
    }

    #[test]
    fn the_scan_reports_a_symlink_to_a_directory_outside_as_a_symlink_and_never_enters_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (root_dir, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        std::fs::write(root_dir.join("sub/file"), b"file").unwrap();
        std::os::unix::fs::symlink(&outside, root_dir.join("link")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        let (entries, warnings) = scan(&root, &HashCache::default());
        assert!(warnings.is_empty(), "{warnings:?}");
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["link", "sub", "sub/file"]);
        assert_eq!(entries[0].kind, EntryKind::Symlink as i32);
        assert_eq!(entries[0].link_target, outside.display().to_string());
        assert_eq!(entries[2].blake3, blake3::hash(b"file").as_bytes().to_vec());
        // Every scan reads every directory from its start.
        let (again, _) = scan(&root, &HashCache::default());
        assert_eq!(again, entries);
    }
}
