//! Applying one batch: a stream of operations ended by a commit.
//!
//! Nothing of a batch happens before its commit. Files are streamed into
//! the batch's staging directory (`.lks-stage.<random>` at the root, see
//! [`StagingDir`]), checked against the blake3 the host announced and given
//! their mode and mtime; deletes, mkdirs, symlinks and chmods are checked and
//! recorded. When the Commit arrives, the recorded operations are applied in
//! their order: staged files renamed into place, the rest done. A batch that
//! ends without its commit (the stream broke off, went idle, the client went
//! away) changes nothing at any final path and leaves no staging file: the
//! staging directory goes with the batch.
//!
//! A reader (or a crash) never sees a partial file at a final path: every
//! file arrives there by one rename. A failed operation is reported in the
//! batch result and the batch goes on; nothing a failed operation touched is
//! left half-done.

mod commit;
mod errors;
mod stage;
mod subtree;
mod writers;

use commit::{Places, place, place_subtree};
use errors::{bounded, echoed, op_error, path_error, root_error};
use stage::{PendingPut, StagedPut, copy_range, finish_put};
use subtree::{Made, Subtree, Subtrees};
use writers::Writers;

use crate::manifest::Manifest;
use crate::root::{Root, RootError, StagingDir, open_file_in};
use lks_proto::limits::{MAX_FILE_BYTES, MAX_OPS_PER_BATCH};
use lks_proto::v1::{ApplyRequest, ApplyResult, Commit, ErrorCode, OpError, apply_request::Op};
use lks_proto::{RelPath, link_stays_inside};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Why a whole batch was aborted (as opposed to one operation failing).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The batch has more operations than the agent accepts.
    #[error("batch has more than {MAX_OPS_PER_BATCH} operations; split it into several batches")]
    TooManyOps,
}

/// An operation checked on arrival and applied when the batch commits.
enum Deferred {
    Put(StagedPut),
    /// A put a writer is staging (see writers.rs); `writing` knows which.
    Writing,
    /// A written put that went to its staged subtree, or failed.
    Gone,
    Delete {
        index: u64,
        path: RelPath,
    },
    Mkdir {
        index: u64,
        path: RelPath,
        mode: u32,
    },
    Symlink {
        index: u64,
        path: RelPath,
        target: String,
    },
    Chmod {
        index: u64,
        path: RelPath,
        mode: u32,
    },
    /// A new directory staged whole (see subtree.rs), by its number.
    Subtree(usize),
}

/// Receives the operations of one batch and, at its commit, applies them in
/// order.
pub struct Batch<'a> {
    /// First, so that it is dropped first: a batch that ends early waits
    /// for its writers before its staging directory goes.
    writers: Writers,
    /// Where each ticket's put is among `deferred`.
    writing: Vec<usize>,
    root: &'a Root,
    manifest: &'a Manifest,
    ops: u64,
    errors: Vec<OpError>,
    /// Errors past the ones reported.
    more_errors: u64,
    bytes_written: u64,
    pending: Option<PendingPut>,
    /// A failed put whose remaining Data/Copy operations are skipped.
    skipping: u64,
    /// The commit that ended the batch, once seen: its id, steps and restart.
    commit: Option<Commit>,
    /// What the commit applies, in order.
    deferred: Vec<Deferred>,
    /// The paths of the deferred deletes, mkdirs and symlinks: a put beneath
    /// one of them cannot be judged before the commit.
    reshaped: HashSet<String>,
    /// Where files are staged; made by the first put.
    staging: Option<StagingDir>,
    /// How many files were staged (their names in the staging directory).
    staged: u64,
    /// The last directory a put was checked against (puts come sorted by path).
    checked_dir: Option<String>,
    /// New directories made whole in the staging directory.
    subtrees: Subtrees,
    /// The version of the manifest once the commit is applied, when it can
    /// tell (see [`ApplyResult::version`]).
    version: Option<String>,
}

impl<'a> Batch<'a> {
    /// A new, empty batch.
    pub fn new(root: &'a Root, manifest: &'a Manifest) -> Self {
        Batch {
            writers: Writers::default(),
            writing: Vec::new(),
            root,
            manifest,
            ops: 0,
            errors: Vec::new(),
            more_errors: 0,
            bytes_written: 0,
            pending: None,
            skipping: 0,
            commit: None,
            deferred: Vec::new(),
            reshaped: HashSet::new(),
            staging: None,
            staged: 0,
            checked_dir: None,
            subtrees: Subtrees::default(),
            version: None,
        }
    }

    /// Whether the Commit arrived: the batch takes no more operations.
    pub fn committed(&self) -> bool {
        self.commit.is_some()
    }

    /// Records an operation's error; past [`MAX_ERRORS_PER_BATCH`] only
    /// counted.
    ///
    /// [`MAX_ERRORS_PER_BATCH`]: lks_proto::limits::MAX_ERRORS_PER_BATCH
    fn record(&mut self, e: OpError) {
        self.record_with(|| e);
    }

    /// Records the error `e` makes, if it is to be reported.
    fn record_with(&mut self, e: impl FnOnce() -> OpError) {
        if self.errors.len() < lks_proto::limits::MAX_ERRORS_PER_BATCH {
            self.errors.push(e());
        } else {
            self.more_errors += 1;
        }
    }

    /// Applies one message: one operation, or for a `Puts` one per file.
    pub fn apply(&mut self, req: ApplyRequest) -> Result<(), BatchError> {
        let op = match req.op {
            Some(Op::Data(d)) => return self.next_index().map(|i| self.data(i, &d.bytes)),
            Some(Op::Copy(c)) => {
                return self.next_index().map(|i| self.copy(i, c.offset, c.length));
            }
            Some(op) => op,
            None => {
                let index = self.next_index()?;
                self.record(op_error(
                    index,
                    "",
                    ErrorCode::Protocol,
                    "empty operation".into(),
                ));
                return Ok(());
            }
        };
        self.abandon_pending("the next operation started before all its bytes arrived");
        self.skipping = 0;
        if let Op::Puts(puts) = op {
            // Each put is an operation of its own, with its own index.
            for p in puts.puts {
                let index = self.next_index()?;
                self.whole_put(index, p);
            }
            return Ok(());
        }
        let index = self.next_index()?;
        match op {
            Op::Put(p) => self.put(index, p),
            Op::Delete(d) => self.defer(index, &d.path, true, |index, path| Deferred::Delete {
                index,
                path,
            }),
            Op::Mkdir(m) => self.mkdir(index, &m.path, m.mode),
            Op::Symlink(s) => self.symlink(index, &s.path, s.target),
            Op::Chmod(c) => self.defer(index, &c.path, false, |index, path| Deferred::Chmod {
                index,
                path,
                mode: c.mode,
            }),
            Op::Commit(c) => self.commit = Some(c),
            Op::Puts(_) | Op::Data(_) | Op::Copy(_) => unreachable!("handled above"),
        }
        Ok(())
    }

    /// The index of the next operation, counted against the batch's limit.
    fn next_index(&mut self) -> Result<u64, BatchError> {
        let index = self.ops;
        self.ops += 1;
        if self.ops > MAX_OPS_PER_BATCH {
            return Err(BatchError::TooManyOps);
        }
        Ok(index)
    }

    /// Ends the batch. With its commit, the recorded operations are applied
    /// and the result says how each went; without, nothing is applied and
    /// everything staged is removed (the result is only for the log).
    pub fn finish(mut self) -> (ApplyResult, Option<Commit>) {
        self.abandon_pending("the batch ended before all its bytes arrived");
        if self.commit.is_some() {
            self.apply_deferred();
        }
        self.errors.sort_by_key(|e| e.index);
        if self.more_errors > 0 {
            // Past the limit: one more, saying how many were left out.
            let last = self.errors.last().map_or(0, |e| e.index);
            self.errors.push(op_error(
                last,
                "",
                ErrorCode::Protocol,
                format!(
                    "{} more operations failed (errors past the first {} are not reported)",
                    self.more_errors,
                    lks_proto::limits::MAX_ERRORS_PER_BATCH
                ),
            ));
        }
        let result = ApplyResult {
            ops: self.ops,
            errors: std::mem::take(&mut self.errors),
            bytes_written: self.bytes_written,
            version: self.version.take().unwrap_or_default(),
            ..Default::default()
        };
        (result, self.commit.take())
    }

    /// Records an operation on `raw` for the commit (`reshapes`: it may
    /// remove, replace or create a directory), or its path's error now.
    fn defer(
        &mut self,
        index: u64,
        raw: &str,
        reshapes: bool,
        op: impl FnOnce(u64, RelPath) -> Deferred,
    ) {
        match RelPath::new(raw) {
            Err(e) => self.record(path_error(index, raw, &e)),
            Ok(path) => self.defer_at(&path, reshapes, op(index, path.clone())),
        }
    }

    /// Records the operation `op` on `path` for the commit.
    fn defer_at(&mut self, path: &RelPath, reshapes: bool, op: Deferred) {
        if reshapes {
            self.reshaped.insert(path.to_string());
            self.checked_dir = None;
        }
        self.subtrees.touch(path, reshapes);
        self.deferred.push(op);
    }

    /// A Mkdir: made in a staged subtree where it can be, else recorded for
    /// the commit.
    fn mkdir(&mut self, index: u64, raw: &str, mode: u32) {
        let path = match RelPath::new(raw) {
            Ok(path) => path,
            Err(e) => return self.record(path_error(index, raw, &e)),
        };
        let staged = if self.subtrees.contains(path.as_str()) {
            // Made by this batch already: a new mode.
            self.subtrees.chmod(index, &path, mode).is_some()
        } else {
            match self.staged_parent(&path) {
                Some((id, parent)) => self
                    .subtrees
                    .mkdir_in(id, &parent, index, &path, mode)
                    .is_some(),
                None => self.stage_top(index, &path, mode),
            }
        };
        if !staged {
            let op = Deferred::Mkdir {
                index,
                path: path.clone(),
                mode,
            };
            self.defer_at(&path, true, op);
        }
    }

    /// Stages the new directory `path` as the top of a subtree if it can be
    /// (see subtree.rs): it does not exist, its parent does, on the root's
    /// mount, and nothing earlier in the batch reshapes that place.
    fn stage_top(&mut self, index: u64, path: &RelPath, mode: u32) -> bool {
        if self.reshaped.contains(path.as_str()) || self.reshaped_above(path) {
            return false;
        }
        let Ok(Some(parent)) = self.root.parent_dir(path, false) else {
            return false;
        };
        if !matches!(
            rustix::fs::statat(&parent, path.file_name(), AtFlags::SYMLINK_NOFOLLOW),
            Err(Errno::NOENT)
        ) || !self.root.on_root_mount(&parent)
        {
            return false;
        }
        let Ok(staging) = self.staging_fd() else {
            return false;
        };
        let stage = self.stage_name();
        match self.subtrees.stage_top(&staging, stage, index, path, mode) {
            Ok(id) => {
                self.deferred.push(Deferred::Subtree(id));
                true
            }
            Err(_) => false,
        }
    }

    /// The staged directory that is to hold `path`, if its parent is one
    /// (of a subtree not sealed): its subtree and its descriptor.
    fn staged_parent(&mut self, path: &RelPath) -> Option<(usize, Arc<OwnedFd>)> {
        let (parent, _) = path.as_str().rsplit_once('/')?;
        self.subtrees.open(parent)
    }

    /// A Symlink: made in a staged subtree where it can be, else recorded
    /// for the commit.
    fn symlink(&mut self, index: u64, raw: &str, target: String) {
        let path = match RelPath::new(raw) {
            Ok(path) => path,
            Err(e) => return self.record(path_error(index, raw, &e)),
        };
        if let Some((id, parent)) = self.staged_parent(&path) {
            if !link_stays_inside(&path, &target) {
                let e = RootError::LinkEscapes { path, target };
                return self.record(root_error(index, &e));
            }
            if rustix::fs::symlinkat(target.as_str(), &*parent, path.file_name()).is_ok() {
                let made = Made::Symlink {
                    index,
                    path,
                    target,
                };
                return self.subtrees.made(id, made);
            }
        }
        let op = Deferred::Symlink {
            index,
            path: path.clone(),
            target,
        };
        self.defer_at(&path, true, op);
    }

    /// A fresh name in the staging directory.
    fn stage_name(&mut self) -> String {
        self.staged += 1;
        format!("{}{}", lks_proto::STAGING_PREFIX, self.staged - 1)
    }

    /// Applies the recorded operations, in order (the commit arrived), and
    /// tells the manifest what each changed.
    fn apply_deferred(&mut self) {
        self.writers_done();
        let root = self.root;
        let seen = self.manifest.commit();
        let mut places = Places::default();
        for op in std::mem::take(&mut self.deferred) {
            let done = match op {
                Deferred::Put(p) => {
                    place(root, &seen, &p, &mut places).map_err(|e| root_error(p.index, &e))
                }
                Deferred::Writing | Deferred::Gone => unreachable!("taken before the commit"),
                Deferred::Delete { index, path } => {
                    places.forget();
                    seen.forget(path.as_str());
                    root.delete(&path).map_err(|e| {
                        seen.changed(path.as_str());
                        root_error(index, &e)
                    })
                }
                Deferred::Mkdir { index, path, mode } => {
                    places.forget();
                    match root.mkdir(&path, mode) {
                        Ok(dir) => {
                            seen.dir(path.as_str(), &dir, mode);
                            Ok(())
                        }
                        Err(e) => {
                            seen.changed(path.as_str());
                            Err(root_error(index, &e))
                        }
                    }
                }
                Deferred::Symlink {
                    index,
                    path,
                    target,
                } => {
                    places.forget();
                    match root.symlink(&path, &target) {
                        Ok(()) => {
                            seen.symlink(path.as_str(), &target);
                            Ok(())
                        }
                        Err(e) => {
                            seen.changed(path.as_str());
                            Err(root_error(index, &e))
                        }
                    }
                }
                Deferred::Chmod { index, path, mode } => {
                    places.forget();
                    match root.chmod(&path, mode) {
                        Ok(st) => {
                            seen.chmodded(path.as_str(), &st);
                            Ok(())
                        }
                        Err(e) => {
                            seen.changed(path.as_str());
                            Err(root_error(index, &e))
                        }
                    }
                }
                Deferred::Subtree(id) => {
                    let s = self.subtrees.take(id);
                    let staging = self.subtrees.staging().expect("staged").clone();
                    if let Err(e) = place_subtree(root, &seen, &staging, &s, &mut places) {
                        self.fail_subtree(&s, &e);
                    }
                    Ok(())
                }
            };
            if let Err(e) = done {
                self.record(e);
            }
        }
        if self.errors.is_empty() && self.more_errors == 0 {
            let based_on = self.commit.as_ref().map_or("", |c| c.based_on.as_str());
            self.version = seen.version_if_only_own_changes_since(based_on);
        }
    }

    /// A subtree could not be put in place: its Mkdir and every operation
    /// made in it failed, each reported by its own index.
    fn fail_subtree(&mut self, s: &Subtree, e: &RootError) {
        self.record(root_error(s.index, e));
        for made in &s.made {
            self.record_with(|| {
                let mut err = root_error(made.index(), e);
                err.path = echoed(made.path().as_str());
                err.message = bounded(format!("{}: not placed: {e}", made.path()));
                err
            });
        }
    }

    /// A put of a `Puts` message: all its bytes must be in it.
    fn whole_put(&mut self, index: u64, p: lks_proto::v1::Put) {
        if p.data.len() as u64 != p.size {
            self.record(op_error(
                index,
                &p.path,
                ErrorCode::Protocol,
                format!(
                    "{}: a put in Puts carries all its bytes, this one {} of {}",
                    p.path,
                    p.data.len(),
                    p.size
                ),
            ));
            return;
        }
        self.put(index, p);
    }

    /// A put: its inline bytes now, the rest (Data, Copy) as it comes.
    fn put(&mut self, index: u64, mut p: lks_proto::v1::Put) {
        let data = std::mem::take(&mut p.data);
        // What follows in Data/Copy messages, skipped if the put fails now.
        let rest = p.size.saturating_sub(data.len() as u64);
        let path = match RelPath::new(p.path.clone()) {
            Ok(path) => path,
            Err(e) => {
                self.record(path_error(index, &p.path, &e));
                self.skipping = rest;
                return;
            }
        };
        if p.size > MAX_FILE_BYTES {
            self.record(op_error(
                index,
                path.as_str(),
                ErrorCode::TooLarge,
                format!(
                    "{path}: {} bytes is over the limit of {MAX_FILE_BYTES}",
                    p.size
                ),
            ));
            self.skipping = rest;
            return;
        }
        if data.len() as u64 > p.size {
            self.record(op_error(
                index,
                path.as_str(),
                ErrorCode::Protocol,
                format!("{path}: more bytes than the announced size"),
            ));
            return;
        }
        match self.start_put(index, &path, &p) {
            Ok(pending) if !data.is_empty() && rest == 0 && pending.base.is_none() => {
                match self.writers.take(pending, data) {
                    Ok(ticket) => {
                        self.writing.push(self.deferred.len());
                        debug_assert_eq!(ticket, self.writing.len() - 1);
                        self.deferred.push(Deferred::Writing);
                        let ready = self.writers.ready();
                        self.take_written(ready);
                    }
                    Err(back) => {
                        let (pending, data) = *back;
                        self.pending = Some(pending);
                        self.receive(index, &data);
                    }
                }
            }
            Ok(pending) => {
                self.pending = Some(pending);
                if data.is_empty() {
                    self.maybe_finish_put();
                } else {
                    self.receive(index, &data);
                }
            }
            Err(e) => {
                self.record(e);
                self.skipping = rest;
            }
        }
    }

    fn start_put(
        &mut self,
        index: u64,
        path: &RelPath,
        p: &lks_proto::v1::Put,
    ) -> Result<PendingPut, OpError> {
        if p.base_blake3.is_empty()
            && let Some(pending) = self.start_put_in_subtree(index, path, p)
        {
            return Ok(pending);
        }
        self.subtrees.touch(path, false);
        self.check_parent(index, path)?;
        let base = if p.base_blake3.is_empty() {
            None
        } else {
            Some(self.open_base(index, path, &p.base_blake3)?)
        };
        let io = |e: std::io::Error| root_error(index, &RootError::io(path, e));
        let dir = self.staging_fd().map_err(io)?;
        let stage = self.stage_name();
        let fd = rustix::fs::openat(
            &*dir,
            stage.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            // Its mode at once (unseen in the staging directory): no chmod
            // later when the umask keeps it.
            Mode::from_raw_mode(p.mode & 0o777),
        )
        .map_err(|e| io(e.into()))?;
        Ok(PendingPut {
            index,
            path: path.clone(),
            dir,
            stage: Some(stage),
            file: File::from(fd),
            base,
            hasher: blake3::Hasher::new(),
            written: 0,
            size: p.size,
            mode: p.mode,
            mtime_ns: p.mtime_ns,
            expected: p.blake3.clone(),
            subtree: None,
        })
    }

    /// A put beneath a staged directory, made there under its final name
    /// (None when it cannot be: the put takes the usual way).
    fn start_put_in_subtree(
        &mut self,
        index: u64,
        path: &RelPath,
        p: &lks_proto::v1::Put,
    ) -> Option<PendingPut> {
        let (id, dir) = self.staged_parent(path)?;
        let fd = rustix::fs::openat(
            &*dir,
            path.file_name(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            // Its mode at once (unseen in the staging directory): no chmod
            // later when the umask keeps it.
            Mode::from_raw_mode(p.mode & 0o777),
        )
        .ok()?;
        Some(PendingPut {
            index,
            path: path.clone(),
            dir,
            stage: Some(path.file_name().to_string()),
            file: File::from(fd),
            base: None,
            hasher: blake3::Hasher::new(),
            written: 0,
            size: p.size,
            mode: p.mode,
            mtime_ns: p.mtime_ns,
            expected: p.blake3.clone(),
            subtree: Some(id),
        })
    }

    /// Refuses a put at once (its bytes skipped, not staged) when a symlink
    /// or a file stands where its directories are, unless an earlier
    /// operation of the batch may change that by the commit. A directory
    /// that is missing is fine: the commit creates it.
    fn check_parent(&mut self, index: u64, path: &RelPath) -> Result<(), OpError> {
        let parent = path.parent().map(|p| p.to_string()).unwrap_or_default();
        if self.checked_dir.as_deref() == Some(parent.as_str()) {
            return Ok(());
        }
        match self.root.parent_dir(path, false) {
            Ok(_) => {
                self.checked_dir = Some(parent);
                Ok(())
            }
            Err(_) if self.reshaped_above(path) => Ok(()),
            Err(e) => Err(root_error(index, &e)),
        }
    }

    /// Whether a deferred delete, mkdir or symlink names a directory above `path`.
    fn reshaped_above(&self, path: &RelPath) -> bool {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if self.reshaped.contains(d.as_str()) {
                return true;
            }
            dir = d.parent();
        }
        false
    }

    /// The file a delta put builds on, as it is before the batch, checked
    /// against the blake3 the host planned with. Opened by the descriptor
    /// walk, never through a symlink, and only read.
    fn open_base(&self, index: u64, path: &RelPath, expected: &[u8]) -> Result<File, OpError> {
        let gone = || {
            op_error(
                index,
                path.as_str(),
                ErrorCode::BaseChanged,
                format!("{path}: the base file is gone"),
            )
        };
        let dir = self
            .root
            .parent_dir(path, false)
            .map_err(|e| root_error(index, &e))?
            .ok_or_else(gone)?;
        let mut f = open_file_in(&dir, path)
            .map_err(|e| root_error(index, &e))?
            .ok_or_else(gone)?;
        let h = self
            .manifest
            .hash_file(path.as_str(), &mut f)
            .map_err(|e| root_error(index, &RootError::io(path, e)))?;
        if h[..] != expected[..] {
            return Err(op_error(
                index,
                path.as_str(),
                ErrorCode::BaseChanged,
                format!(
                    "{path}: the file changed in the container since the host planned this delta"
                ),
            ));
        }
        Ok(f)
    }

    /// The staging directory's descriptor; made at the first put.
    fn staging_fd(&mut self) -> std::io::Result<Arc<OwnedFd>> {
        let staging = match self.staging.take() {
            Some(staging) => staging,
            None => self.root.staging_dir()?,
        };
        let fd = staging.fd().clone();
        self.staging = Some(staging);
        Ok(fd)
    }

    fn data(&mut self, index: u64, bytes: &[u8]) {
        if self.skip(bytes.len() as u64) {
            return;
        }
        if self.pending.is_none() {
            self.record(op_error(
                index,
                "",
                ErrorCode::Protocol,
                "Data without a Put".into(),
            ));
            return;
        }
        self.receive(index, bytes);
    }

    /// Appends `bytes` (of the operation `index`: a Data, or a put's inline
    /// bytes) to the put being received.
    fn receive(&mut self, index: u64, bytes: &[u8]) {
        let pending = self.pending.as_mut().expect("a put being received");
        if pending.written + bytes.len() as u64 > pending.size {
            let path = pending.path.to_string();
            self.fail_pending(op_error(
                index,
                &path,
                ErrorCode::Protocol,
                format!("{path}: more bytes than the announced size"),
            ));
            return;
        }
        if let Err(e) = pending.file.write_all(bytes) {
            let err = root_error(pending.index, &RootError::io(&pending.path, e));
            let rest = pending.size - pending.written - bytes.len() as u64;
            self.fail_pending(err);
            self.skipping = rest;
            return;
        }
        pending.hasher.update(bytes);
        pending.written += bytes.len() as u64;
        self.bytes_written += bytes.len() as u64;
        self.maybe_finish_put();
    }

    fn copy(&mut self, index: u64, offset: u64, length: u64) {
        if self.skip(length) {
            return;
        }
        let Some(mut pending) = self.pending.take() else {
            self.record(op_error(
                index,
                "",
                ErrorCode::Protocol,
                "Copy without a Put".into(),
            ));
            return;
        };
        match copy_range(&mut pending, index, offset, length) {
            Ok(()) => {
                self.pending = Some(pending);
                self.maybe_finish_put();
            }
            Err((err, rest)) => {
                self.pending = Some(pending);
                self.fail_pending(err);
                self.skipping = rest;
            }
        }
    }

    /// Consumes `n` bytes of a failed put; true if they belonged to one.
    fn skip(&mut self, n: u64) -> bool {
        if self.skipping == 0 {
            return false;
        }
        self.skipping = self.skipping.saturating_sub(n);
        true
    }

    /// Each put the writers staged takes the place of its ticket among the
    /// deferred operations (or goes to its staged subtree); each failure
    /// is recorded.
    fn take_written(&mut self, written: Vec<writers::Written>) {
        for (ticket, staged, bytes) in written {
            let at = self.writing[ticket];
            self.bytes_written += bytes;
            self.deferred[at] = match staged {
                Ok(staged) if staged.subtree.is_none() => Deferred::Put(staged),
                other => {
                    self.staged(other);
                    Deferred::Gone
                }
            };
        }
    }

    /// Waits for the writers, and takes what they staged.
    fn writers_done(&mut self) {
        if self.writing.is_empty() {
            return;
        }
        let rest = self.writers.finish();
        self.take_written(rest);
        self.deferred.retain(|op| !matches!(op, Deferred::Gone));
    }

    fn maybe_finish_put(&mut self) {
        let done = matches!(&self.pending, Some(p) if p.written == p.size);
        if !done {
            return;
        }
        let p = self.pending.take().expect("pending");
        self.staged(finish_put(p));
    }

    /// A put staged whole (or why not): it waits for the commit among the
    /// deferred operations, or in its staged subtree.
    fn staged(&mut self, staged: Result<StagedPut, OpError>) {
        match staged {
            Ok(StagedPut {
                subtree: Some(id),
                index,
                path,
                hash,
                mode,
                key,
                ..
            }) => self.subtrees.made(
                id,
                Made::File {
                    index,
                    path,
                    hash,
                    mode,
                    key,
                },
            ),
            Ok(staged) => self.deferred.push(Deferred::Put(staged)),
            Err(e) => self.record(e),
        }
    }

    fn fail_pending(&mut self, err: OpError) {
        // Dropping the put removes its staging file.
        self.pending = None;
        self.record(err);
    }

    fn abandon_pending(&mut self, why: &str) {
        if let Some(p) = self.pending.as_ref() {
            let err = op_error(
                p.index,
                p.path.as_str(),
                ErrorCode::Protocol,
                format!("{}: {why}", p.path),
            );
            self.fail_pending(err);
        }
    }
}
