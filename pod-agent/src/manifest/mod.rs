//! The agent's view of its root: every entry with its kind, mode, size and
//! blake3, kept in memory once asked for ([`records`]), and kept current
//! by the agent's own commits ([`Committing`]) and by a watch of the root
//! ([`crate::watch`]): a Manifest request describes again only what changed
//! since the last one ([`look`]), then answers from memory. A file is
//! hashed at most once per (device, inode, size, mtime, ctime).
//!
//! Without a watch (`--no-watch-root`, or when the kernel refuses one),
//! every request looks at the whole root (or the requested prefix) again,
//! with the records as the cache of hashes.

mod look;
mod records;

use crate::root::Root;
use crate::watch::{RootWatch, WatchError};
use lks_proto::RelPath;
use lks_proto::v1::Entry;
use look::Look;
use records::{Record, Records, Unwatched, What};
use std::cell::Cell;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard};

/// The identity of one version of a file, as far as `stat` can tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

    /// The size of the file then.
    pub fn size(&self) -> u64 {
        self.size
    }

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

/// blake3 of everything `r` yields, read `size` bytes (as `stat` says) at
/// most at a time, up to 256 KiB: a buffer of 256 KiB zeroed for each small
/// file of a 100,000-file root was most of the first manifest's time.
pub fn hash_reader(r: &mut impl Read, size: u64) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    // One byte more: the read that finds the end does not need a second call.
    let mut buf = vec![0u8; (size + 1).clamp(4096, 256 * 1024) as usize];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Whether the root is watched.
enum Watching {
    /// Never (`--no-watch-root`): every request looks at the root again.
    Off,
    /// Not yet: the first request starts the watch, before its full look.
    NotYet,
    On(Arc<RootWatch>),
    /// The kernel refused (why, for every answer): every request looks at
    /// the root again.
    Failed(String),
}

/// What the agent knows of its root.
pub struct Manifest {
    root: Arc<Root>,
    records: Mutex<Records>,
    watching: Mutex<Watching>,
    /// Held by a request's look at the root and by a batch's commit: a
    /// look never describes a path the commit is changing (its record,
    /// newer, would be overwritten by an older look).
    turn: Mutex<()>,
    /// The agent's boot id: versions are named with it.
    boot: String,
}

impl Manifest {
    /// The manifest of `root`, watched from the first request on if `watch`,
    /// for the agent of boot id `boot`.
    pub fn new(root: Arc<Root>, watch: bool, boot: &str) -> Manifest {
        Manifest {
            root,
            boot: boot.to_string(),
            records: Mutex::default(),
            watching: Mutex::new(if watch {
                Watching::NotYet
            } else {
                Watching::Off
            }),
            turn: Mutex::new(()),
        }
    }

    /// Brings what the agent knows up to date for an answer about `prefix`
    /// (the whole root for None): the first time (and whenever the watch
    /// cannot be trusted) by looking at everything, else by describing
    /// again only what changed. Returns the answer's warnings.
    pub fn refresh(&self, prefix: Option<&RelPath>) -> Vec<String> {
        let _turn = self.turn.lock().unwrap();
        let mut warnings = Vec::new();
        let (watch, starting) = {
            let mut watching = self.watching.lock().unwrap();
            let starting = matches!(*watching, Watching::NotYet);
            if starting {
                *watching = match RootWatch::start() {
                    Ok(w) => Watching::On(w),
                    Err(e) => {
                        tracing::warn!("{e}");
                        Watching::Failed(e.to_string())
                    }
                };
            }
            match &*watching {
                Watching::On(w) => (Some(w.clone()), starting),
                Watching::Failed(why) => {
                    warnings.push(why.clone());
                    (None, starting)
                }
                Watching::Off | Watching::NotYet => (None, starting),
            }
        };
        let mut look = Look::new(&self.root, &self.records, watch.clone());
        let how = match &watch {
            None => {
                look.everything(prefix);
                "full scan (the root is not watched)".to_string()
            }
            Some(_) if starting => {
                // Every directory is watched before it is listed: nothing
                // that changes from now on goes unseen.
                look.everything(None);
                "full scan (the watch starts)".to_string()
            }
            Some(w) => {
                let changes = w.take();
                if changes.everything {
                    look.everything(None);
                    "full scan (a directory was not watched, or too many changes)".to_string()
                } else if changes.overflowed {
                    warnings.push(
                        "the kernel's queue of inotify events for the root overflowed \
                         (raise it with `sysctl fs.inotify.max_queued_events=65536`): \
                         the root was scanned again"
                            .to_string(),
                    );
                    look.everything(None);
                    "full scan (events were lost)".to_string()
                } else {
                    let n = changes.paths.len();
                    look.changes(changes.paths);
                    format!("changes only ({n} paths)")
                }
            }
        };
        let failed = look.failed();
        let counts = look.counts();
        self.records.lock().unwrap().compact();
        if let Some(e) = failed {
            self.stop_watching(&e);
            warnings.push(e.to_string());
        }
        let records = self.records.lock().unwrap();
        tracing::debug!(
            "manifest refreshed: {how}: {counts}, {} entries known",
            records.len()
        );
        warnings.extend(records.warnings(prefix.map(|p| p.as_str())));
        warnings
    }

    /// Changes to what an answer says so far (see [`Records::generation`]).
    pub fn generation(&self) -> u64 {
        self.records.lock().unwrap().generation()
    }

    /// The version of what an answer says now, as the host is told it: the
    /// agent's boot and the generation (a new agent starts again from 0,
    /// under another boot).
    pub fn version(&self) -> String {
        self.version_at(self.generation())
    }

    fn version_at(&self, generation: u64) -> String {
        format!("{}.{generation}", self.boot)
    }

    /// The generation `version` names, if it is one of this agent's.
    fn generation_of(&self, version: &str) -> Option<u64> {
        let (boot, generation) = version.rsplit_once('.')?;
        (boot == self.boot).then(|| generation.parse().ok())?
    }

    /// The watch could not be kept: every request looks at the root again.
    fn stop_watching(&self, why: &WatchError) {
        tracing::warn!("{why}");
        *self.watching.lock().unwrap() = Watching::Failed(why.to_string());
    }

    /// Up to `n` entries of the answer for `prefix` (the whole root for
    /// None), after the path `after` (from the start for None).
    pub fn page(&self, prefix: Option<&str>, after: Option<&str>, n: usize) -> Vec<Entry> {
        self.records.lock().unwrap().page(prefix, after, n)
    }

    /// The hash of the open regular file `f` at `path`: the record's when
    /// its stat is unchanged, else read.
    pub fn hash_file(&self, path: &str, f: &mut std::fs::File) -> std::io::Result<[u8; 32]> {
        let key = StatKey::of(&f.metadata()?);
        if let Some(Record {
            what: What::File { key: k, hash },
            ..
        }) = self.records.lock().unwrap().get(path)
            && *k == key
        {
            return Ok(*hash);
        }
        hash_reader(f, key.size())
    }

    /// A batch's commit begins: no look at the root until it ends.
    pub fn commit(&self) -> Committing<'_> {
        let turn = self.turn.lock().unwrap();
        let watch = match &*self.watching.lock().unwrap() {
            Watching::On(w) => Some(w.clone()),
            _ => None,
        };
        Committing {
            manifest: self,
            _turn: turn,
            watch,
            began_at: self.generation(),
            own: Cell::new(0),
        }
    }
}

/// A batch's commit, as the manifest sees it: it tells what it changed.
pub struct Committing<'a> {
    manifest: &'a Manifest,
    _turn: MutexGuard<'a, ()>,
    watch: Option<Arc<RootWatch>>,
    /// The generation when the commit began...
    began_at: u64,
    /// ...and how many changes to the answer the commit made since.
    own: Cell<u64>,
}

/// The records, changed by a commit: what it changes in the answer is
/// counted as its own.
struct Counted<'c> {
    records: MutexGuard<'c, Records>,
    before: u64,
    own: &'c Cell<u64>,
}

impl std::ops::Deref for Counted<'_> {
    type Target = Records;
    fn deref(&self) -> &Records {
        &self.records
    }
}

impl std::ops::DerefMut for Counted<'_> {
    fn deref_mut(&mut self) -> &mut Records {
        &mut self.records
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let made = self.records.generation() - self.before;
        self.own.set(self.own.get() + made);
    }
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.records().compact();
    }
}

impl Committing<'_> {
    fn records(&self) -> Counted<'_> {
        let records = self.manifest.records.lock().unwrap();
        Counted {
            before: records.generation(),
            records,
            own: &self.own,
        }
    }

    /// The version the answer is at now, when every change to it since the
    /// version `based_on` (which the host planned against) is this commit's
    /// own: then the answer at `based_on` with this commit's operations
    /// applied is the answer now. None when anything else changed it (a
    /// look at the root between that answer and this commit), or
    /// `based_on` is another agent's.
    pub fn version_if_only_own_changes_since(&self, based_on: &str) -> Option<String> {
        let based_on = self.manifest.generation_of(based_on)?;
        let now = self.manifest.generation();
        (based_on == self.began_at && now == self.began_at + self.own.get())
            .then(|| self.manifest.version_at(now))
    }

    fn put(&self, path: &str, what: What, mode: u32) {
        let mut records = self.records();
        let seen = records.epoch();
        let gone = records.put(path, Record { what, mode, seen });
        drop(records);
        self.unwatch(gone);
    }

    /// Stops watching directories no longer known.
    pub fn unwatch(&self, gone: Vec<Unwatched>) {
        if let Some(w) = &self.watch {
            for (wd, path) in gone {
                w.remove(wd, &path);
            }
        }
    }

    /// The watch of the directory open as `dir` at `path` ("" for the
    /// root), which is watched from now on (a directory new to the watch
    /// is described again by the next request). None when the root is not
    /// watched.
    pub fn watch_of(&self, dir: &OwnedFd, path: &str) -> Option<i32> {
        let w = self.watch.as_ref()?;
        match w.add(dir, path) {
            Ok((wd, true)) => {
                w.mark(path);
                Some(wd)
            }
            Ok((wd, false)) => Some(wd),
            Err(e) => {
                // The next request looks at everything, and finds the
                // watch cannot be kept.
                tracing::debug!("cannot watch {path}: {e}");
                w.lost();
                None
            }
        }
    }

    /// The commit is about to rename something to `name` in the directory
    /// of watch `wd`.
    pub fn expect(&self, wd: Option<i32>, name: &str) {
        if let (Some(w), Some(wd)) = (&self.watch, wd) {
            w.expect(wd, name);
        }
    }

    /// The rename announced with [`Committing::expect`] did not happen:
    /// `path` is looked at again.
    pub fn not_done(&self, wd: Option<i32>, name: &str, path: &str) {
        if let (Some(w), Some(wd)) = (&self.watch, wd) {
            w.not_done(wd, name, path);
        }
    }

    /// Something at `path` changed in a way the commit cannot describe (an
    /// operation failed half-way): the next request looks at it again.
    pub fn changed(&self, path: &str) {
        if let Some(w) = &self.watch {
            w.mark(path);
        }
    }

    /// A file placed at `path`, with its stat after placing and its hash.
    pub fn file(&self, path: &str, key: StatKey, hash: [u8; 32], mode: u32) {
        self.put(path, What::File { key, hash }, mode & 0o777);
    }

    /// A directory made (or given a mode) at `path`, open as `dir`.
    pub fn dir(&self, path: &str, dir: &OwnedFd, mode: u32) {
        let wd = self.watch_of(dir, path);
        self.put(path, What::Dir { wd }, mode & 0o777);
    }

    /// A symlink made at `path`.
    pub fn symlink(&self, path: &str, target: &str) {
        let target = target.into();
        self.put(path, What::Symlink { target }, 0o777);
    }

    /// `path` given a new mode; `st` is its stat after. A file's hash
    /// stays valid when only its ctime moved (same inode, size and mtime).
    pub fn chmodded(&self, path: &str, st: &rustix::fs::Stat) {
        let mode = st.st_mode & 0o777;
        let key = StatKey::of_stat(st);
        let mut records = self.records();
        match records.get_mut(path) {
            Some(Record {
                what: What::File { key: k, .. },
                mode: m,
                ..
            }) if k.inode() == key.inode() && k.size == key.size && k.mtime_ns == key.mtime_ns => {
                *k = key;
                *m = mode;
                records.changed();
            }
            Some(Record {
                what: What::Dir { .. },
                mode: m,
                ..
            }) => {
                *m = mode;
                records.changed();
            }
            _ => {
                drop(records);
                self.changed(path);
            }
        }
    }

    /// `path` is about to be deleted: it and everything beneath it are
    /// forgotten, their watches removed first (the removal of their
    /// entries reports nothing).
    pub fn forget(&self, path: &str) {
        let gone = self.records().forget(path);
        self.unwatch(gone);
    }

    /// Watches the directory open as `dir`, of a new subtree that is to
    /// be renamed into place at `path` (so nothing done in it once in place
    /// goes unseen); None when the root is not watched, or the kernel
    /// refuses (the next request then looks at everything).
    pub fn watch_new(&self, dir: &OwnedFd, path: &str) -> Option<i32> {
        let w = self.watch.as_ref()?;
        match w.add(dir, path) {
            Ok((wd, _)) => Some(wd),
            Err(_) => {
                w.lost();
                None
            }
        }
    }

    /// Whether the root is watched.
    pub fn watching(&self) -> bool {
        self.watch.is_some()
    }

    /// The watches of a subtree that could not be placed.
    pub fn unwatch_subtree(&self, watched: Vec<(String, i32)>) {
        self.unwatch(
            watched
                .into_iter()
                .map(|(path, wd)| (wd, path.into()))
                .collect(),
        );
    }

    /// The directory `path` (mode `mode`) placed whole, its directories
    /// watched as `watched` says.
    pub fn subtree_dir(&self, path: &str, mode: u32, watched: &[(String, i32)]) {
        let wd = watched.iter().find(|(p, _)| p == path).map(|(_, wd)| *wd);
        self.put(path, What::Dir { wd }, mode & 0o777);
    }
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
}
