//! A put's bytes on their way: received into the batch's staging directory,
//! checked against their blake3, given their mode and mtime.

use super::errors::{op_error, root_error};
use crate::manifest::StatKey;
use crate::root::{RootError, umask_keeps};
use lks_proto::RelPath;
use lks_proto::v1::{ErrorCode, OpError};
use rustix::fs::{AtFlags, Mode, Timestamps};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A file being received into the staging directory.
pub(super) struct PendingPut {
    pub(super) index: u64,
    pub(super) path: RelPath,
    /// The staging directory.
    pub(super) dir: Arc<OwnedFd>,
    /// Its name there; taken once the file is staged whole.
    pub(super) stage: Option<String>,
    pub(super) file: File,
    pub(super) base: Option<File>,
    pub(super) hasher: blake3::Hasher,
    pub(super) written: u64,
    pub(super) size: u64,
    pub(super) mode: u32,
    pub(super) mtime_ns: i64,
    pub(super) expected: Vec<u8>,
    /// The staged subtree it is made in directly (under its final name),
    /// if so.
    pub(super) subtree: Option<usize>,
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
pub(super) struct StagedPut {
    pub(super) index: u64,
    pub(super) path: RelPath,
    /// The staging directory, and the file's name there.
    pub(super) dir: Arc<OwnedFd>,
    pub(super) stage: String,
    pub(super) hash: [u8; 32],
    pub(super) mode: u32,
    pub(super) mtime_ns: i64,
    /// The staged file's stat, by which the hash cache learns it once in
    /// place.
    pub(super) key: StatKey,
    /// The staged subtree it was made in, if so.
    pub(super) subtree: Option<usize>,
}

impl StagedPut {
    /// The staged file's (device, inode).
    pub(super) fn inode(&self) -> (u64, u64) {
        self.key.inode()
    }
}

/// Appends `length` bytes at `offset` of the base file to the staged file.
/// On failure, returns the error and how many bytes of the put are still to come.
pub(super) fn copy_range(
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
pub(super) fn finish_put(mut p: PendingPut) -> Result<StagedPut, OpError> {
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
    // Created with its mode: a chmod only when the umask took bits away.
    if !umask_keeps(p.mode) {
        rustix::fs::fchmod(&p.file, Mode::from_raw_mode(p.mode & 0o777))
            .map_err(|e| io(e.into()))?;
    }
    set_mtime(&p.file, p.mtime_ns).map_err(io)?;
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
        key: StatKey::of_stat(&st),
        subtree: p.subtree,
    })
}

/// Sets a staged file's permission bits and its times (both to the host's mtime).
pub(super) fn set_mode_and_mtime(file: &File, mode: u32, mtime_ns: i64) -> std::io::Result<()> {
    rustix::fs::fchmod(file, Mode::from_raw_mode(mode & 0o777))?;
    set_mtime(file, mtime_ns)
}

/// Sets a staged file's times (both to the host's mtime).
fn set_mtime(file: &File, mtime_ns: i64) -> std::io::Result<()> {
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
