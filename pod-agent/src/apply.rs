//! Applying one batch: a stream of operations ended by a commit.
//!
//! Files are staged beside their final path under a random `.lks-stage.` name,
//! checked against the blake3 the host announced, given their mode and mtime, and
//! only then renamed into place: a reader (or a crash) never sees a partial file
//! at a final path. A failed operation is reported in the batch result and the
//! batch goes on; nothing a failed operation touched is left half-done.

use crate::manifest::{HashCache, StatKey};
use crate::root::{Root, RootError, open_file_in, staging_name};
use lks_proto::limits::{MAX_FILE_BYTES, MAX_OPS_PER_BATCH};
use lks_proto::v1::{ApplyRequest, ApplyResult, Commit, ErrorCode, OpError, apply_request::Op};
use lks_proto::{PathError, RelPath};
use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

/// Why a whole batch was aborted (as opposed to one operation failing).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The batch has more operations than the agent accepts.
    #[error("batch has more than {MAX_OPS_PER_BATCH} operations; split it into several batches")]
    TooManyOps,
}

/// A file being received.
struct PendingPut {
    index: u64,
    path: RelPath,
    dir: std::sync::Arc<OwnedFd>,
    stage: String,
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
    /// Whatever ends a put (commit, failure, a panic, a dropped batch), its
    /// staging file goes. After a successful rename the name is gone already.
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(&*self.dir, self.stage.as_str(), AtFlags::empty());
    }
}

/// Applies the operations of one batch, in order.
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
    pub commit: Option<Commit>,
    /// The directory of the last put, reused while puts stay in it (puts come
    /// sorted by path). Dropped by anything that may remove or replace a
    /// directory.
    last_dir: Option<(String, std::sync::Arc<OwnedFd>)>,
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
            last_dir: None,
        }
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
                if !matches!(other, Op::Put(_) | Op::Commit(_)) {
                    self.last_dir = None;
                }
                match other {
                    Op::Put(p) => self.put(index, p),
                    Op::Delete(d) => self.with_path(index, &d.path, |root, p| root.delete(p)),
                    Op::Mkdir(m) => self.with_path(index, &m.path, |root, p| root.mkdir(p, m.mode)),
                    Op::Symlink(s) => {
                        self.with_path(index, &s.path, |root, p| root.symlink(p, &s.target))
                    }
                    Op::Chmod(c) => self.with_path(index, &c.path, |root, p| root.chmod(p, c.mode)),
                    Op::Commit(c) => self.commit = Some(c),
                    Op::Data(_) | Op::Copy(_) => unreachable!(),
                }
            }
        }
        Ok(())
    }

    /// Ends the batch: a file still missing bytes is discarded.
    pub fn finish(mut self) -> ApplyResult {
        self.abandon_pending("the batch ended before all its bytes arrived");
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
        ApplyResult {
            ops: self.ops,
            errors: self.errors,
            bytes_written: self.bytes_written,
            ..Default::default()
        }
    }

    fn with_path(
        &mut self,
        index: u64,
        raw: &str,
        f: impl FnOnce(&Root, &RelPath) -> Result<(), RootError>,
    ) {
        match RelPath::new(raw) {
            Err(e) => self.record(path_error(index, raw, &e)),
            Ok(p) => {
                if let Err(e) = f(self.root, &p) {
                    self.record(root_error(index, &e));
                }
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
        let parent = path.parent().map(|p| p.to_string()).unwrap_or_default();
        let dir = match &self.last_dir {
            Some((p, fd)) if *p == parent => fd.clone(),
            _ => {
                let fd = std::sync::Arc::new(
                    self.root
                        .parent_dir(path, true)
                        .map_err(|e| root_error(index, &e))?
                        .expect("parents created"),
                );
                self.last_dir = Some((parent, fd.clone()));
                fd
            }
        };
        let base = if p.base_blake3.is_empty() {
            None
        } else {
            let mut f = open_file_in(&dir, path)
                .map_err(|e| root_error(index, &e))?
                .ok_or_else(|| {
                    op_error(
                        index,
                        path.as_str(),
                        ErrorCode::BaseChanged,
                        format!("{path}: the base file is gone"),
                    )
                })?;
            let h = self
                .cache
                .hash_file(path.as_str(), &mut f)
                .map_err(|e| root_error(index, &RootError::io(path, e)))?;
            if h[..] != p.base_blake3[..] {
                return Err(op_error(
                    index,
                    path.as_str(),
                    ErrorCode::BaseChanged,
                    format!(
                        "{path}: the file changed in the container since the host planned this delta"
                    ),
                ));
            }
            Some(f)
        };
        let stage = staging_name();
        let fd = rustix::fs::openat(
            &dir,
            stage.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| root_error(index, &RootError::io(path, e)))?;
        Ok(PendingPut {
            index,
            path: path.clone(),
            dir,
            stage,
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
        if let Err(e) = self.finish_put(&p) {
            self.record(e);
        }
    }

    fn finish_put(&self, p: &PendingPut) -> Result<(), OpError> {
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
        rustix::fs::fchmod(&p.file, Mode::from_raw_mode(p.mode & 0o777))
            .map_err(|e| io(e.into()))?;
        let ts = rustix::fs::Timespec {
            tv_sec: p.mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: p.mtime_ns.rem_euclid(1_000_000_000) as _,
        };
        rustix::fs::futimens(
            &p.file,
            &Timestamps {
                last_access: ts,
                last_modification: ts,
            },
        )
        .map_err(|e| io(e.into()))?;
        // rename(2) never replaces a directory with a file: it fails, and the
        // directory is left alone.
        match rustix::fs::renameat(&p.dir, p.stage.as_str(), &p.dir, p.path.file_name()) {
            Ok(()) => {}
            Err(
                rustix::io::Errno::ISDIR | rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST,
            ) => {
                return Err(root_error(
                    p.index,
                    &RootError::Conflict {
                        path: p.path.clone(),
                        what: "is a directory (delete it first)".into(),
                    },
                ));
            }
            Err(e) => return Err(io(e.into())),
        }
        // After the rename: it changes the inode's ctime.
        let key = StatKey::of(&p.file.metadata().map_err(io)?);
        self.cache.put(p.path.as_str(), key, *hash.as_bytes());
        Ok(())
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
