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

use crate::manifest::{HashCache, StatKey, inode_of};
use crate::root::{Root, RootError, StagingDir, open_file_in, staging_name};
use lks_proto::limits::{MAX_FILE_BYTES, MAX_OPS_PER_BATCH};
use lks_proto::v1::{ApplyRequest, ApplyResult, Commit, ErrorCode, OpError, apply_request::Op};
use lks_proto::{PathError, RelPath};
use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Why a whole batch was aborted (as opposed to one operation failing).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The batch has more operations than the agent accepts.
    #[error("batch has more than {MAX_OPS_PER_BATCH} operations; split it into several batches")]
    TooManyOps,
}

/// A file being received into the staging directory.
struct PendingPut {
    index: u64,
    path: RelPath,
    /// The staging directory.
    dir: Arc<OwnedFd>,
    /// Its name there; taken once the file is staged whole.
    stage: Option<String>,
    file: File,
    base: Option<File>,
    hasher: blake3::Hasher,
    written: u64,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    expected: Vec<u8>,
}

impl Drop for PendingPut {
    /// Whatever ends a put before it is staged whole (a failure, a panic, a
    /// dropped batch), its staging file goes.
    fn drop(&mut self) {
        if let Some(stage) = &self.stage {
            let _ = rustix::fs::unlinkat(&*self.dir, stage.as_str(), AtFlags::empty());
        }
    }
}

/// A file whose bytes all arrived and matched their blake3, waiting in the
/// staging directory (with its mode and mtime set) for the commit.
struct StagedPut {
    index: u64,
    path: RelPath,
    /// The staging directory, and the file's name there.
    dir: Arc<OwnedFd>,
    stage: String,
    hash: [u8; 32],
    mode: u32,
    mtime_ns: i64,
    /// The staged file's (device, inode), by which the hash cache learns
    /// it once in place.
    inode: (u64, u64),
}

/// An operation checked on arrival and applied when the batch commits.
enum Deferred {
    Put(StagedPut),
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
}

/// Receives the operations of one batch and, at its commit, applies them in
/// order.
pub struct Batch<'a> {
    root: &'a Root,
    cache: &'a HashCache,
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
}

fn op_error(index: u64, path: &str, code: ErrorCode, message: String) -> OpError {
    OpError {
        index,
        path: echoed(path),
        code: code as i32,
        message: bounded(message),
    }
}

/// A path as an error echoes it: whole when short, else its start and its
/// length (a hostile path of megabytes is not copied into every error).
pub fn echoed(path: &str) -> String {
    let max = lks_proto::limits::MAX_ECHOED_PATH_BYTES;
    if path.len() <= max {
        return path.to_string();
    }
    let mut end = max;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &path[..end], path.len())
}

/// A message, at most a few echoed paths long.
fn bounded(message: String) -> String {
    let max = 2 * lks_proto::limits::MAX_ECHOED_PATH_BYTES;
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &message[..end], message.len())
}

fn root_error(index: u64, e: &RootError) -> OpError {
    let (path, code) = match e {
        RootError::ThroughSymlink { path, .. } => (path, ErrorCode::ThroughSymlink),
        RootError::NotADirectory { path, .. } => (path, ErrorCode::Io),
        RootError::LinkEscapes { path, .. } => (path, ErrorCode::SymlinkEscapes),
        RootError::Conflict { path, .. } => (path, ErrorCode::Io),
        RootError::Missing { path } => (path, ErrorCode::Io),
        RootError::NoSpace { path } => (path, ErrorCode::NoSpace),
        RootError::Io { path, .. } => (path, ErrorCode::Io),
    };
    op_error(index, path.as_str(), code, e.to_string())
}

fn path_error(index: u64, raw: &str, e: &PathError) -> OpError {
    op_error(
        index,
        raw,
        ErrorCode::InvalidPath,
        format!("refused path: {e}"),
    )
}

impl<'a> Batch<'a> {
    /// A new, empty batch.
    pub fn new(root: &'a Root, cache: &'a HashCache) -> Self {
        Batch {
            root,
            cache,
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
        if self.errors.len() < lks_proto::limits::MAX_ERRORS_PER_BATCH {
            self.errors.push(e);
        } else {
            self.more_errors += 1;
        }
    }

    /// Applies one operation.
    pub fn apply(&mut self, req: ApplyRequest) -> Result<(), BatchError> {
        let index = self.ops;
        self.ops += 1;
        if self.ops > MAX_OPS_PER_BATCH {
            return Err(BatchError::TooManyOps);
        }
        let Some(op) = req.op else {
            self.record(op_error(
                index,
                "",
                ErrorCode::Protocol,
                "empty operation".into(),
            ));
            return Ok(());
        };
        match op {
            Op::Data(d) => self.data(index, &d.bytes),
            Op::Copy(c) => self.copy(index, c.offset, c.length),
            other => {
                self.abandon_pending("the next operation started before all its bytes arrived");
                self.skipping = 0;
                match other {
                    Op::Put(p) => self.put(index, p),
                    Op::Delete(d) => self.defer(index, &d.path, true, |index, path| {
                        Deferred::Delete { index, path }
                    }),
                    Op::Mkdir(m) => {
                        self.defer(index, &m.path, true, |index, path| Deferred::Mkdir {
                            index,
                            path,
                            mode: m.mode,
                        })
                    }
                    Op::Symlink(s) => {
                        self.defer(index, &s.path, true, |index, path| Deferred::Symlink {
                            index,
                            path,
                            target: s.target,
                        })
                    }
                    Op::Chmod(c) => {
                        self.defer(index, &c.path, false, |index, path| Deferred::Chmod {
                            index,
                            path,
                            mode: c.mode,
                        })
                    }
                    Op::Commit(c) => self.commit = Some(c),
                    Op::Data(_) | Op::Copy(_) => unreachable!(),
                }
            }
        }
        Ok(())
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
            Ok(path) => {
                if reshapes {
                    self.reshaped.insert(path.to_string());
                    self.checked_dir = None;
                }
                self.deferred.push(op(index, path));
            }
        }
    }

    /// Applies the recorded operations, in order (the commit arrived).
    fn apply_deferred(&mut self) {
        let mut places = Places::default();
        for op in std::mem::take(&mut self.deferred) {
            let root = self.root;
            let done = match op {
                Deferred::Put(p) => {
                    place(root, self.cache, &p, &mut places).map_err(|e| root_error(p.index, &e))
                }
                Deferred::Delete { index, path } => {
                    places.forget();
                    root.delete(&path).map_err(|e| root_error(index, &e))
                }
                Deferred::Mkdir { index, path, mode } => {
                    places.forget();
                    root.mkdir(&path, mode).map_err(|e| root_error(index, &e))
                }
                Deferred::Symlink {
                    index,
                    path,
                    target,
                } => {
                    places.forget();
                    root.symlink(&path, &target)
                        .map_err(|e| root_error(index, &e))
                }
                Deferred::Chmod { index, path, mode } => {
                    places.forget();
                    root.chmod(&path, mode).map_err(|e| root_error(index, &e))
                }
            };
            if let Err(e) = done {
                self.record(e);
            }
        }
    }

    fn put(&mut self, index: u64, p: lks_proto::v1::Put) {
        let path = match RelPath::new(p.path.clone()) {
            Ok(path) => path,
            Err(e) => {
                self.record(path_error(index, &p.path, &e));
                self.skipping = p.size;
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
            self.skipping = p.size;
            return;
        }
        match self.start_put(index, &path, &p) {
            Ok(pending) => {
                self.pending = Some(pending);
                self.maybe_finish_put();
            }
            Err(e) => {
                self.record(e);
                self.skipping = p.size;
            }
        }
    }

    fn start_put(
        &mut self,
        index: u64,
        path: &RelPath,
        p: &lks_proto::v1::Put,
    ) -> Result<PendingPut, OpError> {
        self.check_parent(index, path)?;
        let base = if p.base_blake3.is_empty() {
            None
        } else {
            Some(self.open_base(index, path, &p.base_blake3)?)
        };
        let io = |e: std::io::Error| root_error(index, &RootError::io(path, e));
        let dir = self.staging_fd().map_err(io)?;
        let stage = format!("{}{}", lks_proto::STAGING_PREFIX, self.staged);
        self.staged += 1;
        let fd = rustix::fs::openat(
            &*dir,
            stage.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
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
            .cache
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
        let Some(pending) = self.pending.as_mut() else {
            self.record(op_error(
                index,
                "",
                ErrorCode::Protocol,
                "Data without a Put".into(),
            ));
            return;
        };
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

    fn maybe_finish_put(&mut self) {
        let done = matches!(&self.pending, Some(p) if p.written == p.size);
        if !done {
            return;
        }
        let p = self.pending.take().expect("pending");
        match finish_put(p) {
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

/// Appends `length` bytes at `offset` of the base file to the staged file.
/// On failure, returns the error and how many bytes of the put are still to come.
fn copy_range(
    p: &mut PendingPut,
    index: u64,
    offset: u64,
    length: u64,
) -> Result<(), (OpError, u64)> {
    let path = p.path.clone();
    if p.written.checked_add(length).is_none_or(|end| end > p.size)
        || offset.checked_add(length).is_none()
    {
        let msg = format!("{path}: more bytes than the announced size");
        return Err((op_error(index, path.as_str(), ErrorCode::Protocol, msg), 0));
    }
    let rest_after = p.size - p.written - length;
    let Some(base) = p.base.as_ref() else {
        let msg = format!("{path}: Copy without a base");
        return Err((
            op_error(index, path.as_str(), ErrorCode::Protocol, msg),
            rest_after,
        ));
    };
    let mut buf = vec![0u8; length.min(1 << 20) as usize];
    let mut done = 0u64;
    while done < length {
        let n = (length - done).min(buf.len() as u64) as usize;
        if let Err(e) = base.read_exact_at(&mut buf[..n], offset + done) {
            let msg = format!("{path}: reading the base: {e}");
            return Err((
                op_error(index, path.as_str(), ErrorCode::BaseChanged, msg),
                rest_after,
            ));
        }
        if let Err(e) = p.file.write_all(&buf[..n]) {
            return Err((root_error(p.index, &RootError::io(&path, e)), rest_after));
        }
        p.hasher.update(&buf[..n]);
        p.written += n as u64;
        done += n as u64;
    }
    Ok(())
}

/// Checks a put whose bytes all arrived against its blake3 and gives it its
/// mode and mtime; it then waits, staged, for the commit.
fn finish_put(mut p: PendingPut) -> Result<StagedPut, OpError> {
    let io = |e: std::io::Error| root_error(p.index, &RootError::io(&p.path, e));
    let hash = p.hasher.finalize();
    if hash.as_bytes()[..] != p.expected[..] {
        return Err(op_error(
            p.index,
            p.path.as_str(),
            ErrorCode::HashMismatch,
            format!(
                "{}: content does not match its blake3; the previous content is kept",
                p.path
            ),
        ));
    }
    set_mode_and_mtime(&p.file, p.mode, p.mtime_ns).map_err(io)?;
    let st = rustix::fs::fstat(&p.file).map_err(|e| io(e.into()))?;
    let stage = p
        .stage
        .take()
        .expect("a put being received has its staging file");
    Ok(StagedPut {
        index: p.index,
        path: p.path.clone(),
        dir: p.dir.clone(),
        stage,
        hash: *hash.as_bytes(),
        mode: p.mode,
        mtime_ns: p.mtime_ns,
        inode: inode_of(&st),
    })
}

/// Sets a staged file's permission bits and its times (both to the host's mtime).
fn set_mode_and_mtime(file: &File, mode: u32, mtime_ns: i64) -> std::io::Result<()> {
    rustix::fs::fchmod(file, Mode::from_raw_mode(mode & 0o777))?;
    let ts = rustix::fs::Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    rustix::fs::futimens(
        file,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
    )?;
    Ok(())
}

/// The directories the commit places files in: the last one stays open
/// while puts stay in it (they come sorted by path). Forgotten by anything
/// that may remove or replace a directory.
#[derive(Default)]
struct Places {
    last: Option<(String, OwnedFd)>,
}

impl Places {
    fn forget(&mut self) {
        self.last = None;
    }

    /// The directory that is to hold `path`, made (with its parents) if missing.
    fn dir_of(&mut self, root: &Root, path: &RelPath) -> Result<&OwnedFd, RootError> {
        let parent = path.parent().map(|p| p.to_string()).unwrap_or_default();
        if !matches!(&self.last, Some((p, _)) if *p == parent) {
            let fd = root.parent_dir(path, true)?.expect("parents created");
            self.last = Some((parent, fd));
        }
        Ok(&self.last.as_ref().expect("just set").1)
    }
}

/// Puts the staged file `p` in place by one rename (after a copy beside its
/// final path when that is on another file system than the root, e.g. a
/// volume mounted beneath it), and tells the hash cache its hash.
fn place(
    root: &Root,
    cache: &HashCache,
    p: &StagedPut,
    places: &mut Places,
) -> Result<(), RootError> {
    let dir = places.dir_of(root, &p.path)?;
    let inode = match rename_into_place(&p.dir, &p.stage, dir, &p.path)? {
        Renamed::Done => p.inode,
        Renamed::CrossDevice => copy_into_place(p, dir)?,
    };
    // After the rename: it changes the inode's ctime. Only if the path
    // still holds the inode placed (nothing replaced it since).
    if let Ok(st) = rustix::fs::statat(dir, p.path.file_name(), AtFlags::SYMLINK_NOFOLLOW)
        && inode_of(&st) == inode
    {
        cache.put(p.path.as_str(), StatKey::of_stat(&st), p.hash);
    }
    Ok(())
}

/// How a rename into place went, when it did not fail.
enum Renamed {
    Done,
    /// The final path is on another file system than the staged file.
    CrossDevice,
}

/// Renames `stage` in `from` to `path`'s name in `to`. rename(2) never
/// replaces a directory with a file: it fails, and the directory is left alone.
fn rename_into_place(
    from: &OwnedFd,
    stage: &str,
    to: &OwnedFd,
    path: &RelPath,
) -> Result<Renamed, RootError> {
    match rustix::fs::renameat(from, stage, to, path.file_name()) {
        Ok(()) => Ok(Renamed::Done),
        Err(Errno::XDEV) => Ok(Renamed::CrossDevice),
        Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => Err(RootError::Conflict {
            path: path.clone(),
            what: "is a directory (delete it first)".into(),
        }),
        Err(e) => Err(RootError::io(path, e)),
    }
}

/// Copies the staged file `p` to a staging file beside its final path (in
/// `dir`, on the final path's file system), sets its mode and mtime and
/// renames it into place. Returns the placed inode's (device, inode).
fn copy_into_place(p: &StagedPut, dir: &OwnedFd) -> Result<(u64, u64), RootError> {
    let io = |e: std::io::Error| RootError::io(&p.path, e);
    let from = rustix::fs::openat(
        &*p.dir,
        p.stage.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    let stage = staging_name();
    let to = rustix::fs::openat(
        dir,
        stage.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io(e.into()))?;
    let copied = (|| {
        let mut to = File::from(to);
        std::io::copy(&mut File::from(from), &mut to).map_err(io)?;
        set_mode_and_mtime(&to, p.mode, p.mtime_ns).map_err(io)?;
        let st = rustix::fs::fstat(&to).map_err(|e| io(e.into()))?;
        match rename_into_place(dir, &stage, dir, &p.path)? {
            Renamed::Done => Ok(inode_of(&st)),
            Renamed::CrossDevice => Err(io(Errno::XDEV.into())),
        }
    })();
    if copied.is_err() {
        let _ = rustix::fs::unlinkat(dir, stage.as_str(), AtFlags::empty());
    }
    copied
}
