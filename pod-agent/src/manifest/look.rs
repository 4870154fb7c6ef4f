//! One look at the root for a Manifest request: at everything (the first
//! time, after lost events, or always when the root is not watched), or at
//! the paths that changed since the last one.
//!
//! Every entry is looked at relative to its directory's descriptor, opened
//! by the descriptor walk, and never followed: a symlink (even one swapped
//! in for a directory or a file meanwhile) is described as a symlink, and
//! nothing outside the root is listed, read or hashed. A file is hashed
//! only if its stat changed since its record was made, and only if it is
//! still the inode that was listed. Each directory is watched (when the
//! root is) before it is listed, so nothing that changes after the look
//! goes unseen.

use super::StatKey;
use super::records::{Record, Records, Unwatched, What};
use crate::root::{DIR_FLAGS, Root, list_dir};
use crate::watch::{RootWatch, WatchError};
use lks_proto::{RelPath, is_staging_name};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

/// One look at the root.
pub(super) struct Look<'a> {
    root: &'a Root,
    records: &'a Mutex<Records>,
    watch: Option<Arc<RootWatch>>,
    /// What this look describes is marked with it.
    epoch: u32,
    /// Directories looked at whole: changes beneath them are seen already.
    whole: HashSet<String>,
    /// The directory opened last to describe a changed path in it.
    parent: Option<(String, Arc<OwnedFd>)>,
    counts: Counts,
    /// A directory the kernel refused to watch.
    failed: Option<WatchError>,
}

/// What a look did, for the log.
#[derive(Default)]
pub(super) struct Counts {
    listed: usize,
    described: usize,
    hashed: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} directories listed, {} entries described, {} files hashed",
            self.listed, self.described, self.hashed
        )
    }
}

/// How a directory is named in a warning.
fn shown(dir: &str) -> &str {
    if dir.is_empty() { "the root" } else { dir }
}

/// `name` in the directory `dir` ("" for the root).
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl<'a> Look<'a> {
    pub(super) fn new(
        root: &'a Root,
        records: &'a Mutex<Records>,
        watch: Option<Arc<RootWatch>>,
    ) -> Look<'a> {
        let epoch = records.lock().unwrap().begin();
        Look {
            root,
            records,
            watch,
            epoch,
            whole: HashSet::new(),
            parent: None,
            counts: Counts::default(),
            failed: None,
        }
    }

    pub(super) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Why the watch cannot be kept, if a directory could not be watched.
    pub(super) fn failed(&mut self) -> Option<WatchError> {
        self.failed.take()
    }

    fn records(&self) -> MutexGuard<'a, Records> {
        self.records.lock().unwrap()
    }

    /// Looks at everything beneath `prefix` (the whole root for None),
    /// `prefix` included.
    pub(super) fn everything(&mut self, prefix: Option<&RelPath>) {
        match prefix {
            None => self.scan(""),
            Some(p) => self.changed(p.as_str(), true),
        }
    }

    /// Looks at each of the paths that changed (in order: a directory
    /// before what is in it).
    pub(super) fn changes(&mut self, paths: HashSet<Box<str>>) {
        let mut paths: Vec<Box<str>> = paths.into_iter().collect();
        paths.sort_unstable();
        for path in paths {
            self.changed(&path, false);
        }
    }

    /// Whether `path` is beneath a directory looked at whole already.
    fn seen_whole(&self, path: &str) -> bool {
        if self.whole.is_empty() {
            return false;
        }
        let mut at = Some(path);
        while let Some(p) = at {
            if self.whole.contains(p) {
                return true;
            }
            at = match p.rsplit_once('/') {
                Some((parent, _)) => Some(parent),
                None if !p.is_empty() => Some(""),
                None => None,
            };
        }
        false
    }

    /// Describes `path` again: gone, a file or symlink as it is now, a
    /// directory re-listed (`deep`: everything beneath it described again;
    /// a directory new to the records always is).
    fn changed(&mut self, path: &str, deep: bool) {
        if self.seen_whole(path) {
            return;
        }
        if path.is_empty() {
            if deep {
                return self.scan("");
            }
            return match self.root.reopen() {
                Ok(fd) => {
                    self.watch_dir(&fd, "");
                    self.relist(&fd, "")
                }
                Err(e) => self.note("", format!("cannot list the root: {e}")),
            };
        }
        let Ok(rel) = RelPath::new(path) else {
            // Not a path of the tree (a name that is not UTF-8, say).
            return self.forget(path);
        };
        let parent = rel.parent().map(|p| p.to_string()).unwrap_or_default();
        // A change beneath something unknown comes with its directory, if
        // ever (a path asked for is looked at wherever it is).
        if !deep
            && !parent.is_empty()
            && !matches!(
                self.records().get(&parent),
                Some(Record {
                    what: What::Dir { .. },
                    ..
                })
            )
        {
            return self.forget(path);
        }
        let Some(dir) = self.open_parent(&rel, parent) else {
            return self.forget(path);
        };
        let Ok(name) = CString::new(rel.file_name()) else {
            return self.forget(path);
        };
        let known = self.records().get(path).map(|r| r.what.clone());
        let was_dir = matches!(known, Some(What::Dir { .. }));
        match self.describe(&dir, &name, path, known.as_ref()) {
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => self.forget(path),
            Err(e) => {
                self.forget(path);
                self.note(path, format!("skipping {path}: {e}"));
            }
            Ok(record) => {
                let is_dir = matches!(record.what, What::Dir { .. });
                self.put(path, record);
                if is_dir && (deep || !was_dir) {
                    self.scan(path);
                } else if is_dir {
                    match rustix::fs::openat(&*dir, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
                        // Not the directory that was watched there (one
                        // moved or made in its place): what is in it was
                        // never reported, it is described whole.
                        Ok(fd) if self.watch_dir(&fd, path) => self.scan(path),
                        Ok(fd) => self.relist(&fd, path),
                        Err(e) => self.note(path, format!("cannot list {path}: {e}")),
                    }
                }
            }
        }
    }

    /// The directory that holds `rel` (at `parent`), by the descriptor walk.
    fn open_parent(&mut self, rel: &RelPath, parent: String) -> Option<Arc<OwnedFd>> {
        if let Some((p, fd)) = &self.parent
            && *p == parent
        {
            return Some(fd.clone());
        }
        let fd = Arc::new(self.root.parent_dir(rel, false).ok()??);
        self.parent = Some((parent, fd.clone()));
        Some(fd)
    }

    /// Lists the known (and watched) directory `dir` (open as `fd`) again:
    /// what vanished is forgotten, what is new described (new directories
    /// whole).
    fn relist(&mut self, fd: &OwnedFd, dir: &str) {
        let names = match list_dir(fd) {
            Ok(names) => names,
            Err(e) => return self.note(dir, format!("cannot list {}: {e}", shown(dir))),
        };
        self.counts.listed += 1;
        let known: HashSet<String> = self.records().children(dir).into_iter().collect();
        let mut listed = HashSet::new();
        let mut new = Vec::new();
        for (name, kind) in names {
            if let Ok(n) = name.to_str() {
                listed.insert(n.to_string());
                if known.contains(n) {
                    continue;
                }
            }
            new.push((name, kind));
        }
        for gone in known.difference(&listed) {
            self.forget(&join(dir, gone));
        }
        for (_, path) in self.describe_all(fd, dir, new) {
            self.scan(&path);
        }
    }

    /// Looks at the directory `top` ("" for the root) and everything
    /// beneath it, each directory watched before it is listed; then
    /// forgets what it did not see there.
    fn scan(&mut self, top: &str) {
        self.whole.insert(top.to_string());
        let rel = if top.is_empty() {
            None
        } else {
            match RelPath::new(top) {
                Ok(rel) => Some(rel),
                Err(_) => return self.forget(top),
            }
        };
        let root = self.root;
        root.walk_beneath(rel.as_ref(), top.to_string(), |opened, dir: &String| {
            let fd = match opened {
                Ok(fd) => fd,
                Err(e) => {
                    self.note(dir, format!("cannot list {}: {e}", shown(dir)));
                    return Vec::new();
                }
            };
            self.watch_dir(fd, dir);
            match list_dir(fd) {
                Ok(names) => {
                    self.counts.listed += 1;
                    self.describe_all(fd, dir, names)
                }
                Err(e) => {
                    self.note(dir, format!("cannot list {}: {e}", shown(dir)));
                    Vec::new()
                }
            }
        });
        let gone = self
            .records()
            .sweep(rel.as_ref().map(|r| r.as_str()), self.epoch);
        self.unwatch(gone);
    }

    /// Describes the entries `names` of the directory `dir` (open as `fd`)
    /// and records them; returns its subdirectories.
    fn describe_all(
        &mut self,
        fd: &OwnedFd,
        dir: &str,
        names: Vec<(CString, FileType)>,
    ) -> Vec<(CString, String)> {
        let mut children = Vec::with_capacity(names.len());
        for (cname, _) in names {
            let Ok(name) = cname.to_str() else {
                let path = join(dir, &cname.to_string_lossy());
                self.note(
                    &path,
                    format!("skipping non-UTF-8 name {cname:?} in {}", shown(dir)),
                );
                continue;
            };
            if is_staging_name(name) {
                continue;
            }
            let path = join(dir, name);
            if let Err(e) = RelPath::new(path.as_str()) {
                self.note(&path, format!("skipping {name:?} in {}: {e}", shown(dir)));
                continue;
            }
            children.push((cname, path));
        }
        let known: Vec<Option<What>> = {
            let records = self.records();
            children
                .iter()
                .map(|(_, p)| records.get(p).map(|r| r.what.clone()))
                .collect()
        };
        let mut described = Vec::with_capacity(children.len());
        let mut subdirs = Vec::new();
        for ((cname, path), known) in children.into_iter().zip(known) {
            match self.describe(fd, &cname, &path, known.as_ref()) {
                Ok(record) => {
                    if matches!(record.what, What::Dir { .. }) {
                        subdirs.push((cname, path.clone()));
                    }
                    described.push((path, Ok(record)));
                }
                Err(e) => {
                    let why = format!("skipping {path}: {e}");
                    described.push((path, Err(why)));
                }
            }
        }
        let mut gone = Vec::new();
        let mut records = self.records();
        for (path, record) in described {
            match record {
                Ok(record) => gone.extend(records.put(&path, record)),
                Err(why) => {
                    gone.extend(records.forget(&path));
                    records.problem(&path, why);
                }
            }
        }
        // A long look packs as it goes (a first look at a large root adds
        // every record).
        records.compact();
        drop(records);
        self.unwatch(gone);
        subdirs
    }

    /// Describes the entry `name` of `dir` (at `path`), never following a
    /// symlink: `fstatat` and `readlinkat` with `AT_SYMLINK_NOFOLLOW`, a
    /// file's hash from `known` when its stat is unchanged, else read from
    /// the file opened `O_NOFOLLOW` (and `O_NONBLOCK`: no blocking on a
    /// FIFO) if it is still the inode that was listed.
    fn describe(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        path: &str,
        known: Option<&What>,
    ) -> std::io::Result<Record> {
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        self.counts.described += 1;
        let what = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => What::Dir { wd: None },
            FileType::Symlink => What::Symlink {
                target: rustix::fs::readlinkat(dir, name, Vec::new())?
                    .into_string()
                    .map_err(|_| std::io::Error::other("non-UTF-8 symlink target"))?
                    .into(),
            },
            FileType::RegularFile => {
                let key = StatKey::of_stat(&st);
                match known {
                    Some(What::File { key: k, hash }) if *k == key => {
                        What::File { key, hash: *hash }
                    }
                    _ => {
                        self.counts.hashed += 1;
                        let (key, hash) = hash_at(dir, name, &st)?;
                        let _ = path;
                        What::File { key, hash }
                    }
                }
            }
            _ => return Err(std::io::Error::other("not a file, directory or symlink")),
        };
        Ok(Record {
            what,
            mode: st.st_mode & 0o777,
            seen: self.epoch,
        })
    }

    /// Watches the directory `dir` (open as `fd`), if the root is watched;
    /// whether it was not watched at `dir` before.
    fn watch_dir(&mut self, fd: &OwnedFd, dir: &str) -> bool {
        let Some(w) = &self.watch else { return false };
        if self.failed.is_some() {
            return false;
        }
        match w.add(fd, dir) {
            Ok((wd, new)) => {
                let old = match self.records().get_mut(dir) {
                    Some(Record {
                        what: What::Dir { wd: w },
                        ..
                    }) => w.replace(wd),
                    _ => None,
                };
                // The directory that was here moved away (out of the root,
                // maybe): its watch goes.
                if let Some(old) = old.filter(|old| *old != wd) {
                    w.remove(old, dir);
                }
                new
            }
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }

    fn put(&mut self, path: &str, record: Record) {
        let gone = self.records().put(path, record);
        self.unwatch(gone);
    }

    fn forget(&mut self, path: &str) {
        let gone = self.records().forget(path);
        self.unwatch(gone);
    }

    /// Notes why `path` could not be described (repeated in answers).
    fn note(&mut self, path: &str, why: String) {
        self.records().problem(path, why);
    }

    fn unwatch(&self, gone: Vec<Unwatched>) {
        if let Some(w) = &self.watch {
            for (wd, path) in gone {
                w.remove(wd, &path);
            }
        }
    }
}

/// Opens the regular file `name` of `dir` (listed as `listed`) and hashes
/// it; returns the key of what was hashed and its hash.
fn hash_at(
    dir: &OwnedFd,
    name: &CStr,
    listed: &rustix::fs::Stat,
) -> std::io::Result<(StatKey, [u8; 32])> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || super::inode_of(&st) != super::inode_of(listed)
    {
        return Err(std::io::Error::other("changed while being listed"));
    }
    let h = super::hash_reader(&mut std::fs::File::from(fd), st.st_size as u64)?;
    Ok((StatKey::of_stat(&st), h))
}
