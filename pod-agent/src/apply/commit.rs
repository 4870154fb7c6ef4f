//! The commit's side: staged files put in place, each by one rename.

use super::stage::{StagedPut, set_mode_and_mtime};
use super::subtree::{Made, Subtree};
use crate::manifest::{HashCache, StatKey, inode_of};
use crate::root::{Root, RootError, copy_beside};
use lks_proto::RelPath;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::OwnedFd;

/// The directories the commit places files in: the last one stays open
/// while puts stay in it (they come sorted by path). Forgotten by anything
/// that may remove or replace a directory.
#[derive(Default)]
pub(super) struct Places {
    last: Option<(String, OwnedFd)>,
}

impl Places {
    pub(super) fn forget(&mut self) {
        self.last = None;
    }

    /// The directory that is to hold `path`, made (with its parents) if missing.
    pub(super) fn dir_of(&mut self, root: &Root, path: &RelPath) -> Result<&OwnedFd, RootError> {
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
pub(super) fn place(
    root: &Root,
    cache: &HashCache,
    p: &StagedPut,
    places: &mut Places,
) -> Result<(), RootError> {
    let dir = places.dir_of(root, &p.path)?;
    let inode = match rename_into_place(&p.dir, &p.stage, dir, &p.path)? {
        Renamed::Done => p.inode(),
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

/// Puts the staged subtree `s` in place by one rename of its top from
/// `staging`, never over anything: if its name was taken since the batch
/// staged it, nothing of it is placed. Then tells the hash cache the hash
/// of each file in it (the rename of their directory changes neither their
/// inodes nor their ctimes).
pub(super) fn place_subtree(
    root: &Root,
    cache: &HashCache,
    staging: &OwnedFd,
    s: &Subtree,
    places: &mut Places,
) -> Result<(), RootError> {
    let dir = places.dir_of(root, &s.top)?;
    let name = s.top.file_name();
    let taken = || RootError::Conflict {
        path: s.top.clone(),
        what: "appeared while the batch was on its way; nothing of this new directory was placed"
            .into(),
    };
    match rustix::fs::renameat_with(staging, s.stage.as_str(), dir, name, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        Err(Errno::EXIST) => return Err(taken()),
        // A file system without RENAME_NOREPLACE: a plain rename, after a
        // look (it would replace an empty directory made in between).
        Err(Errno::INVAL) => {
            if Root::kind_at(dir, name)
                .map_err(|e| RootError::io(&s.top, e))?
                .is_some()
            {
                return Err(taken());
            }
            rustix::fs::renameat(staging, s.stage.as_str(), dir, name)
                .map_err(|e| RootError::io(&s.top, e))?;
        }
        Err(e) => return Err(RootError::io(&s.top, e)),
    }
    for made in &s.made {
        if let Made::File {
            path, hash, key, ..
        } = made
        {
            cache.put(path.as_str(), *key, *hash);
        }
    }
    Ok(())
}

/// How a rename into place went, when it did not fail.
pub(super) enum Renamed {
    Done,
    /// The final path is on another file system than the staged file.
    CrossDevice,
}

/// Renames `stage` in `from` to `path`'s name in `to`. rename(2) never
/// replaces a directory with a file: it fails, and the directory is left alone.
pub(super) fn rename_into_place(
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
pub(super) fn copy_into_place(p: &StagedPut, dir: &OwnedFd) -> Result<(u64, u64), RootError> {
    let from = rustix::fs::openat(
        &*p.dir,
        p.stage.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RootError::io(&p.path, e))?;
    let st = copy_beside(dir, &p.path, File::from(from), |to| {
        set_mode_and_mtime(to, p.mode, p.mtime_ns)
    })?;
    Ok(inode_of(&st))
}
