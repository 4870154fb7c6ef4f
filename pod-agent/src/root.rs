//! [`Root`]: the only way the agent touches the file system it serves.
//!
//! Every operation starts from a file descriptor of the root and walks down one
//! component at a time with `O_NOFOLLOW | O_DIRECTORY`, so no path the host sends
//! can leave the root: `..` and absolute paths are refused by [`RelPath`], and a
//! symlink met on the way (even one created by the app after the check) makes the
//! walk fail instead of being followed. This is the kubectl-cp CVE class
//! (CVE-2018-1002100, CVE-2019-1002101, CVE-2019-11246, CVE-2019-11249,
//! CVE-2019-11251) made impossible by construction rather than by checks.

use lks_proto::{RelPath, link_stays_inside};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What went wrong touching a path beneath the root.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// A parent of the path is a symlink; the agent never writes through one.
    #[error("{path}: `{component}` is a symlink; lks-agent never writes through symlinks")]
    ThroughSymlink {
        /// The requested path.
        path: RelPath,
        /// The component that is a symlink.
        component: String,
    },
    /// A parent of the path exists and is not a directory.
    #[error("{path}: `{component}` exists and is not a directory")]
    NotADirectory {
        /// The requested path.
        path: RelPath,
        /// The component that is not a directory.
        component: String,
    },
    /// A symlink target could resolve outside the root.
    #[error(
        "{path}: symlink target {target:?} is refused: it could resolve outside the root \
         (targets must be relative, may climb only with leading `..`, and not above the root)"
    )]
    LinkEscapes {
        /// The link's path.
        path: RelPath,
        /// The refused target.
        target: String,
    },
    /// The path exists with a kind the operation cannot replace.
    #[error("{path}: {what}")]
    Conflict {
        /// The requested path.
        path: RelPath,
        /// What is in the way.
        what: String,
    },
    /// The file system ran out of space.
    #[error("{path}: no space left on device; the previous content is kept")]
    NoSpace {
        /// The requested path.
        path: RelPath,
    },
    /// Any other I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The requested path.
        path: RelPath,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl RootError {
    pub(crate) fn io(path: &RelPath, e: impl Into<std::io::Error>) -> Self {
        let e: std::io::Error = e.into();
        if e.raw_os_error() == Some(Errno::NOSPC.raw_os_error())
            || e.raw_os_error() == Some(Errno::DQUOT.raw_os_error())
        {
            RootError::NoSpace { path: path.clone() }
        } else {
            RootError::Io {
                path: path.clone(),
                source: e,
            }
        }
    }
}

/// The directory the agent serves, held open.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Root {
    /// Opens (creating if needed) the root directory.
    pub fn open(path: &Path) -> std::io::Result<Root> {
        std::fs::create_dir_all(path)?;
        let path = path.canonicalize()?;
        let fd = rustix::fs::open(&path, DIR_FLAGS, Mode::empty())?;
        Ok(Root { fd, path })
    }

    /// The root's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory that will hold `path`, creating missing parents with
    /// mode 0755 when `create` is set. `Ok(None)` when a parent is missing and
    /// `create` is not set.
    pub fn parent_dir(&self, path: &RelPath, create: bool) -> Result<Option<OwnedFd>, RootError> {
        let mut cur = rustix::io::dup(&self.fd).map_err(|e| RootError::io(path, e))?;
        let comps: Vec<&str> = path.components().collect();
        for comp in &comps[..comps.len() - 1] {
            cur = match self.open_child_dir(&cur, path, comp, create)? {
                Some(fd) => fd,
                None => return Ok(None),
            };
        }
        Ok(Some(cur))
    }

    fn open_child_dir(
        &self,
        dir: &OwnedFd,
        path: &RelPath,
        comp: &str,
        create: bool,
    ) -> Result<Option<OwnedFd>, RootError> {
        for _ in 0..2 {
            match rustix::fs::openat(dir, comp, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(dir, comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => continue,
                        Err(e) => return Err(RootError::io(path, e)),
                    }
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    return Err(self.explain_not_dir(dir, path, comp));
                }
                Err(e) => return Err(RootError::io(path, e)),
            }
        }
        Err(RootError::io(path, Errno::NOENT))
    }

    fn explain_not_dir(&self, dir: &OwnedFd, path: &RelPath, comp: &str) -> RootError {
        let is_link = rustix::fs::statat(dir, comp, AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
            .unwrap_or(false);
        if is_link {
            RootError::ThroughSymlink {
                path: path.clone(),
                component: comp.to_string(),
            }
        } else {
            RootError::NotADirectory {
                path: path.clone(),
                component: comp.to_string(),
            }
        }
    }

    /// What is at `name` in `dir`, without following a symlink.
    pub fn kind_at(dir: &OwnedFd, name: &str) -> std::io::Result<Option<FileType>> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the regular file at `path` for reading, refusing symlinks anywhere.
    pub fn open_file(&self, path: &RelPath) -> Result<Option<File>, RootError> {
        let Some(dir) = self.parent_dir(path, false)? else {
            return Ok(None);
        };
        open_file_in(&dir, path)
    }

    /// Creates a directory (and its parents) or sets the mode of an existing one.
    pub fn mkdir(&self, path: &RelPath, mode: u32) -> Result<(), RootError> {
        let dir = self.parent_dir(path, true)?.expect("created");
        let name = path.file_name();
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode & 0o777)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(RootError::io(path, e)),
        }
        let fd = match rustix::fs::openat(&dir, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                return Err(RootError::Conflict {
                    path: path.clone(),
                    what: "exists and is not a directory (delete it first)".into(),
                });
            }
            Err(e) => return Err(RootError::io(path, e)),
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))
            .map_err(|e| RootError::io(path, e))
    }

    /// Removes whatever is at `path` (a directory with everything beneath it).
    /// Nothing there is not an error.
    pub fn delete(&self, path: &RelPath) -> Result<(), RootError> {
        let Some(dir) = self.parent_dir(path, false)? else {
            return Ok(());
        };
        let name = path.file_name();
        match Root::kind_at(&dir, name).map_err(|e| RootError::io(path, e))? {
            None => Ok(()),
            Some(FileType::Directory) => {
                let cname = std::ffi::CString::new(name)
                    .map_err(|e| RootError::io(path, std::io::Error::other(e)))?;
                remove_tree(&dir, &cname).map_err(|e| RootError::io(path, e))
            }
            Some(_) => match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(RootError::io(path, e)),
            },
        }
    }

    /// Creates or replaces the symlink `path -> target`, if `target` stays inside.
    pub fn symlink(&self, path: &RelPath, target: &str) -> Result<(), RootError> {
        if !link_stays_inside(path, target) {
            return Err(RootError::LinkEscapes {
                path: path.clone(),
                target: target.to_string(),
            });
        }
        let dir = self.parent_dir(path, true)?.expect("created");
        if Root::kind_at(&dir, path.file_name()).map_err(|e| RootError::io(path, e))?
            == Some(FileType::Directory)
        {
            return Err(RootError::Conflict {
                path: path.clone(),
                what: "is a directory (delete it first)".into(),
            });
        }
        let stage = staging_name();
        rustix::fs::symlinkat(target, &dir, stage.as_str()).map_err(|e| RootError::io(path, e))?;
        rustix::fs::renameat(&dir, stage.as_str(), &dir, path.file_name()).map_err(|e| {
            let _ = rustix::fs::unlinkat(&dir, stage.as_str(), AtFlags::empty());
            RootError::io(path, e)
        })
    }

    /// Sets the permission bits of a file or directory (never through a symlink).
    pub fn chmod(&self, path: &RelPath, mode: u32) -> Result<(), RootError> {
        let Some(dir) = self.parent_dir(path, false)? else {
            return Err(RootError::io(path, Errno::NOENT));
        };
        let fd = match rustix::fs::openat(
            &dir,
            path.file_name(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => {
                return Err(RootError::ThroughSymlink {
                    path: path.clone(),
                    component: path.file_name().to_string(),
                });
            }
            Err(e) => return Err(RootError::io(path, e)),
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))
            .map_err(|e| RootError::io(path, e))
    }

    /// Removes staging files left behind by an agent that was killed mid-write.
    /// Returns how many were removed.
    pub fn remove_stale_staging(&self) -> usize {
        let mut removed = 0;
        let mut stack = vec![self.path.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in rd.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                let name = entry.file_name();
                if lks_proto::is_staging_name(&name.to_string_lossy()) {
                    if std::fs::remove_file(entry.path()).is_ok() {
                        removed += 1;
                    }
                } else if ft.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        removed
    }
}

/// Opens the regular file `path.file_name()` in `dir` for reading.
pub fn open_file_in(dir: &OwnedFd, path: &RelPath) -> Result<Option<File>, RootError> {
    match rustix::fs::openat(
        dir,
        path.file_name(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let st = rustix::fs::fstat(&fd).map_err(|e| RootError::io(path, e))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Ok(None);
            }
            Ok(Some(File::from(fd)))
        }
        Err(Errno::NOENT) | Err(Errno::LOOP) => Ok(None),
        Err(e) => Err(RootError::io(path, e)),
    }
}

/// A fresh, random staging name: `.lks-stage.<hex>`.
pub fn staging_name() -> String {
    format!(
        "{}{:016x}",
        lks_proto::STAGING_PREFIX,
        rand::random::<u64>()
    )
}

/// How deep a tree [`remove_tree`] removes: one descriptor is open per level,
/// and a tree deeper than this is refused rather than running out of them.
pub const MAX_DELETE_DEPTH: usize = 4096;

/// A directory being removed: its descriptor, its name in its parent, and
/// the subdirectories still to remove (its other entries are gone already).
struct Level {
    fd: OwnedFd,
    name: std::ffi::CString,
    subdirs: Vec<std::ffi::CString>,
}

/// Opens `name` in `parent`, removes every entry that is not a directory and
/// lists the subdirectories; None when it is gone already.
fn open_level(parent: &OwnedFd, name: std::ffi::CString) -> std::io::Result<Option<Level>> {
    let fd = match rustix::fs::openat(parent, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut subdirs = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd.as_fd())? {
        let entry = entry?;
        let child = entry.file_name();
        if child.to_bytes() == b"." || child.to_bytes() == b".." {
            continue;
        }
        let ft = match entry.file_type() {
            FileType::Unknown => FileType::from_raw_mode(
                rustix::fs::statat(&fd, child, AtFlags::SYMLINK_NOFOLLOW)?.st_mode,
            ),
            ft => ft,
        };
        if ft == FileType::Directory {
            subdirs.push(child.to_owned());
        } else {
            match rustix::fs::unlinkat(&fd, child, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Some(Level { fd, name, subdirs }))
}

/// Removes the directory `name` in `dir` and everything beneath it, walking by
/// file descriptor so a symlink inside is removed, never followed. An
/// explicit stack, not recursion: each directory is read once, and a tree
/// thousands of levels deep neither overflows the stack nor takes longer
/// than its size says (deeper than [`MAX_DELETE_DEPTH`] is refused).
fn remove_tree(dir: &OwnedFd, name: &std::ffi::CStr) -> std::io::Result<()> {
    let Some(top) = open_level(dir, name.to_owned())? else {
        return Ok(());
    };
    let mut stack = vec![top];
    while let Some(level) = stack.last_mut() {
        if let Some(child) = level.subdirs.pop() {
            if stack.len() >= MAX_DELETE_DEPTH {
                return Err(std::io::Error::other(format!(
                    "more than {MAX_DELETE_DEPTH} levels of directories: too deep to delete"
                )));
            }
            let parent = &stack.last().expect("a level").fd;
            if let Some(next) = open_level(parent, child)? {
                stack.push(next);
            }
            continue;
        }
        let done = stack.pop().expect("a level");
        drop(done.fd);
        let parent = stack.last().map_or(dir, |l| &l.fd);
        match rustix::fs::unlinkat(parent, done.name.as_c_str(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
