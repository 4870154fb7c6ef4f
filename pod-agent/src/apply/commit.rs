//! The commit's side: staged files put in place, each by one rename.

use super::stage::{StagedPut, set_mode_and_mtime};
use super::subtree::{Made, Subtree};
use crate::manifest::{Committing, StatKey, inode_of};
use crate::root::{Root, RootError, copy_beside};
use lks_proto::RelPath;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::OwnedFd;

/// The directories the commit places files in: the last one stays open
/// while puts stay in it (they come sorted by path), with its watch.
/// Forgotten by anything that may remove or replace a directory.
#[derive(Default)]
pub(super) struct Places {
    last: Option<(String, OwnedFd, Option<i32>)>,
}

impl Places {
    pub(super) fn forget(&mut self) {
        self.last = None;
    }

    /// The directory that is to hold `path`, made (with its parents) if
    /// missing, and its watch if the root is watched.
    pub(super) fn dir_of(
        &mut self,
        root: &Root,
        seen: &Committing,
        path: &RelPath,
    ) -> Result<(&OwnedFd, Option<i32>), RootError> {
        let parent = path.parent().map(|p| p.to_string()).unwrap_or_default();
        if !matches!(&self.last, Some((p, _, _)) if *p == parent) {
            let fd = root.parent_dir(path, true)?.expect("parents created");
            let wd = seen.watch_of(&fd, &parent);
            self.last = Some((parent, fd, wd));
        }
        let (_, fd, wd) = self.last.as_ref().expect("just set");
        Ok((fd, *wd))
    }
}

/// Puts the staged file `p` in place by one rename (after a copy beside its
/// final path when that is on another file system than the root, e.g. a
/// volume mounted beneath it), and tells the manifest.
pub(super) fn place(
    root: &Root,
    seen: &Committing,
    p: &StagedPut,
    places: &mut Places,
) -> Result<(), RootError> {
    let (dir, wd) = places.dir_of(root, seen, &p.path)?;
    let name = p.path.file_name();
    seen.expect(wd, name);
    let inode = match rename_into_place(&p.dir, &p.stage, dir, &p.path) {
        Ok(Renamed::Done) => p.inode(),
        Ok(Renamed::CrossDevice) => {
            // The copy beside it makes events of its own.
            seen.not_done(wd, name, p.path.as_str());
            copy_into_place(p, dir)?
        }
        Err(e) => {
            seen.not_done(wd, name, p.path.as_str());
            return Err(e);
        }
    };
    // After the rename: it changes the inode's ctime. Only if the path
    // still holds the inode placed (nothing replaced it since).
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if inode_of(&st) == inode => {
            seen.file(p.path.as_str(), StatKey::of_stat(&st), p.hash, p.mode)
        }
        _ => seen.changed(p.path.as_str()),
    }
    Ok(())
}

/// Puts the staged subtree `s` in place by one rename of its top from
/// `staging`, never over anything: if its name was taken since the batch
/// staged it, nothing of it is placed. Its directories are watched before
/// (nothing done in them once in place goes unseen), and the manifest
/// learns everything in it as staged: the rename of their directory
/// changes neither the files' inodes nor their ctimes.
pub(super) fn place_subtree(
    root: &Root,
    seen: &Committing,
    staging: &OwnedFd,
    s: &Subtree,
    places: &mut Places,
) -> Result<(), RootError> {
    let (dir, wd) = places.dir_of(root, seen, &s.top)?;
    let name = s.top.file_name();
    let mut watched = Vec::new();
    if seen.watching() {
        let top = rustix::fs::openat(
            staging,
            s.stage.as_str(),
            crate::root::DIR_FLAGS,
            Mode::empty(),
        )
        .map_err(|e| RootError::io(&s.top, e))?;
        s.each_dir(top, |dir, path| {
            if let Some(wd) = seen.watch_new(dir, path) {
                watched.push((path.to_string(), wd));
            }
        });
    }
    seen.expect(wd, name);
    if let Err(e) = rename_subtree(staging, s, dir) {
        seen.not_done(wd, name, s.top.as_str());
        seen.unwatch_subtree(watched);
        return Err(e);
    }
    seen.subtree_dir(s.top.as_str(), s.mode, &watched);
    for made in &s.made {
        match made {
            Made::Dir { path, mode, .. } => seen.subtree_dir(path.as_str(), *mode, &watched),
            Made::File {
                path,
                hash,
                key,
                mode,
                ..
            } => seen.file(path.as_str(), *key, *hash, *mode),
            Made::Symlink { path, target, .. } => seen.symlink(path.as_str(), target),
        }
    }
    Ok(())
}

/// Renames the top of `s` from `staging` to its name in `dir`, never over
/// anything.
fn rename_subtree(staging: &OwnedFd, s: &Subtree, dir: &OwnedFd) -> Result<(), RootError> {
    let name = s.top.file_name();
    let taken = || RootError::Conflict {
        path: s.top.clone(),
        what: "appeared while the batch was on its way; nothing of this new directory was placed"
            .into(),
    };
    match rustix::fs::renameat_with(staging, s.stage.as_str(), dir, name, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(taken()),
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
                .map_err(|e| RootError::io(&s.top, e))
        }
        Err(e) => Err(RootError::io(&s.top, e)),
    }
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
