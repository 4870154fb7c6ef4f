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
use std::ffi::CString;
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
    /// The path (a directory that was to be entered) does not exist.
    #[error("{path}: no such directory beneath the root")]
    Missing {
        /// The requested path.
        path: RelPath,
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
    /// The mount it is on.
    mount: Mount,
}

/// Which mounted file system a directory is on: its mount id where the
/// kernel tells it (statx, Linux 5.8), else its device. A rename works only
/// within one mount, and a bind mount of the root's device beneath it has
/// the root's device but not its mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mount {
    Id(u64),
    Device(u64),
}

impl Mount {
    /// The mount of the open directory `fd`.
    #[allow(clippy::unnecessary_cast)] // the field types differ between architectures
    pub fn of(fd: &OwnedFd) -> std::io::Result<Mount> {
        use rustix::fs::StatxFlags;
        match rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID) {
            Ok(stx) if StatxFlags::from_bits_retain(stx.stx_mask).contains(StatxFlags::MNT_ID) => {
                Ok(Mount::Id(stx.stx_mnt_id))
            }
            // statx without mount ids, or none at all (an old kernel, a
            // seccomp profile that refuses it): the device tells most cases.
            _ => Ok(Mount::Device(rustix::fs::fstat(fd)?.st_dev as u64)),
        }
    }
}

/// How a directory beneath the root is opened: never through a symlink.
pub const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Root {
    /// Opens (creating if needed) the root directory.
    pub fn open(path: &Path) -> std::io::Result<Root> {
        std::fs::create_dir_all(path)?;
        let path = path.canonicalize()?;
        let fd = rustix::fs::open(&path, DIR_FLAGS, Mode::empty())?;
        let mount = Mount::of(&fd)?;
        Ok(Root { fd, path, mount })
    }

    /// Whether the open directory `dir` is on the root's own mount: a
    /// directory can be renamed from the staging directory into it.
    pub fn on_root_mount(&self, dir: &OwnedFd) -> bool {
        Mount::of(dir).is_ok_and(|m| m == self.mount)
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

    /// Creates a directory (and its parents) or sets the mode of an existing
    /// one; returns it, open.
    pub fn mkdir(&self, path: &RelPath, mode: u32) -> Result<OwnedFd, RootError> {
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
            .map_err(|e| RootError::io(path, e))?;
        Ok(fd)
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

    /// Sets the permission bits of a file or directory (never through a
    /// symlink); returns its stat after.
    ///
    /// A regular file with more than one hard link may share its inode with
    /// a file outside the root: its link is broken first (see
    /// [`break_hard_link`]), so only this path gets the new mode.
    pub fn chmod(&self, path: &RelPath, mode: u32) -> Result<rustix::fs::Stat, RootError> {
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
        let st = rustix::fs::fstat(&fd).map_err(|e| RootError::io(path, e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::Directory && st.st_nlink > 1 {
            if kind != FileType::RegularFile {
                return Err(RootError::Conflict {
                    path: path.clone(),
                    what: format!(
                        "is a {kind:?} with {} hard links, one may be outside the root: \
                         lks-agent does not change its mode (delete it first)",
                        st.st_nlink
                    ),
                });
            }
            if st.st_mode & 0o777 == mode & 0o777 {
                return Ok(st);
            }
            return break_hard_link(&dir, path, &fd, &st, mode);
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))
            .map_err(|e| RootError::io(path, e))?;
        rustix::fs::fstat(&fd).map_err(|e| RootError::io(path, e))
    }

    /// The root opened afresh (not a dup: its own offset, for listing it).
    pub fn reopen(&self) -> std::io::Result<OwnedFd> {
        Ok(rustix::fs::openat(
            &self.fd,
            c".",
            DIR_FLAGS,
            Mode::empty(),
        )?)
    }

    /// A descriptor of the root itself.
    pub fn open_root(&self) -> std::io::Result<OwnedFd> {
        Ok(rustix::io::dup(&self.fd)?)
    }

    /// Opens the directory `path`, every component walked from the root's
    /// descriptor with `O_NOFOLLOW`: a symlink anywhere on the way (the
    /// last component included) is refused, never followed.
    pub fn open_dir(&self, path: &RelPath) -> Result<OwnedFd, RootError> {
        let missing = || RootError::Missing { path: path.clone() };
        let dir = self.parent_dir(path, false)?.ok_or_else(missing)?;
        self.open_child_dir(&dir, path, path.file_name(), false)?
            .ok_or_else(missing)
    }

    /// A fresh staging directory at the root for one batch (see [`StagingDir`]).
    pub fn staging_dir(&self) -> std::io::Result<StagingDir> {
        let parent = rustix::io::dup(&self.fd)?;
        let name = staging_name();
        rustix::fs::mkdirat(&parent, name.as_str(), Mode::from_raw_mode(0o700))?;
        let fd = match rustix::fs::openat(&parent, name.as_str(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = rustix::fs::unlinkat(&parent, name.as_str(), AtFlags::REMOVEDIR);
                return Err(e.into());
            }
        };
        Ok(StagingDir {
            parent,
            name,
            fd: std::sync::Arc::new(fd),
        })
    }

    /// Walks every directory beneath the root by descriptor, depth first with
    /// an explicit stack (no recursion: a tree thousands of levels deep is
    /// fine). `visit` gets each directory (the root first, with `top`) freshly
    /// opened from its parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`, or why it
    /// could not be opened (a directory swapped for a symlink since it was
    /// listed fails here, it is never followed), and returns the
    /// subdirectories to enter. One descriptor is open per level; deeper
    /// than [`MAX_DELETE_DEPTH`] levels is reported as an error, not entered.
    pub fn walk<T>(
        &self,
        top: T,
        visit: impl FnMut(std::io::Result<&OwnedFd>, &T) -> Vec<(CString, T)>,
    ) {
        self.walk_beneath(None, top, visit)
    }

    /// Walks the directory `dir` beneath the root (the root itself for
    /// None), opened by the descriptor walk, and everything beneath it, as
    /// [`Root::walk`] does.
    pub fn walk_beneath<T>(
        &self,
        dir: Option<&RelPath>,
        top: T,
        visit: impl FnMut(std::io::Result<&OwnedFd>, &T) -> Vec<(CString, T)>,
    ) {
        let opened = match dir {
            // Opened afresh (not a dup): its own offset, read from the start.
            None => {
                rustix::fs::openat(&self.fd, c".", DIR_FLAGS, Mode::empty()).map_err(Into::into)
            }
            Some(dir) => self
                .open_dir(dir)
                .map_err(|e| std::io::Error::other(e.to_string())),
        };
        walk_from(opened, top, visit)
    }

    /// Removes the staging files and directories left behind by an agent
    /// that was killed mid-write or mid-batch, anywhere beneath the root,
    /// walking by descriptor ([`Root::walk`]): a directory swapped for a
    /// symlink to somewhere else is never entered. Returns how many were
    /// removed.
    pub fn remove_stale_staging(&self) -> usize {
        let mut removed = 0;
        self.walk(PathBuf::new(), |dir, rel| {
            let listed = dir.and_then(|dir| Ok((dir, list_dir(dir)?)));
            let (dir, entries) = match listed {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::warn!(
                        "not sweeping {}/{}: {e}",
                        self.path.display(),
                        rel.display()
                    );
                    return Vec::new();
                }
            };
            let mut subdirs = Vec::new();
            for (name, kind) in entries {
                let shown = name.to_string_lossy().into_owned();
                if lks_proto::is_staging_name(&shown) {
                    match remove_entry(dir, &name, kind) {
                        Ok(()) => removed += 1,
                        Err(e) => tracing::warn!(
                            "cannot remove the stale staging entry {}: {e}",
                            rel.join(&shown).display()
                        ),
                    }
                } else if kind == FileType::Directory {
                    subdirs.push((name, rel.join(shown)));
                }
            }
            subdirs
        });
        removed
    }
}

/// A batch's staging directory, `.lks-stage.<random>` at the root: its files
/// are staged there until the commit renames them into place (the root's
/// file system, so the renames are atomic; a part of the root on another
/// file system gets a copy beside its final path first). Scans skip it by
/// its name, the start-up sweep removes one left by a killed agent, and
/// dropping it removes it with whatever is still inside: a batch that ends
/// without its commit leaves nothing behind.
pub struct StagingDir {
    parent: OwnedFd,
    name: String,
    fd: std::sync::Arc<OwnedFd>,
}

impl StagingDir {
    /// The directory's descriptor.
    pub fn fd(&self) -> &std::sync::Arc<OwnedFd> {
        &self.fd
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let Ok(name) = CString::new(self.name.as_str()) else {
            return;
        };
        if let Err(e) = remove_tree(&self.parent, &name) {
            tracing::warn!("cannot remove the staging directory {}: {e}", self.name);
        }
    }
}

/// Gives `path` (the regular file open as `fd`, `st` its stat, with more
/// than one hard link) an inode of its own with mode `mode`: its content is
/// copied to a staging file beside it, which gets the mode, the owner and
/// the times of the original and is renamed over it. The other links keep
/// the old inode, its content and its mode. Only the owner of the file (or
/// root) may do this, as for chmod(2).
fn break_hard_link(
    dir: &OwnedFd,
    path: &RelPath,
    fd: &OwnedFd,
    st: &rustix::fs::Stat,
    mode: u32,
) -> Result<rustix::fs::Stat, RootError> {
    let euid = rustix::process::geteuid();
    if !euid.is_root() && euid.as_raw() != st.st_uid {
        return Err(RootError::io(path, Errno::PERM));
    }
    let from = File::from(rustix::io::dup(fd).map_err(|e| RootError::io(path, e))?);
    copy_beside(dir, path, from, |to| {
        if euid.is_root() {
            rustix::fs::fchown(
                to,
                Some(rustix::process::Uid::from_raw(st.st_uid)),
                Some(rustix::process::Gid::from_raw(st.st_gid)),
            )?;
        }
        rustix::fs::fchmod(to, Mode::from_raw_mode(mode & 0o777))?;
        rustix::fs::futimens(
            to,
            &rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: st.st_atime as _,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: st.st_mtime as _,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            },
        )?;
        Ok(())
    })
}

/// Copies `from` to a new staging file in `dir`, lets `finish` give the copy
/// what it needs (mode, owner, times), then renames it over `path`'s name in
/// `dir`; the copy is removed if any step fails. The copy's stat. How a
/// file gets a new inode in place: a staged file that cannot be renamed
/// across file systems, a hard-linked file whose mode changes.
pub fn copy_beside(
    dir: &OwnedFd,
    path: &RelPath,
    mut from: File,
    finish: impl FnOnce(&File) -> std::io::Result<()>,
) -> Result<rustix::fs::Stat, RootError> {
    let stage = staging_name();
    let copy = rustix::fs::openat(
        dir,
        stage.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| RootError::io(path, e))?;
    let mut to = File::from(copy);
    let copied = (|| {
        std::io::copy(&mut from, &mut to).map_err(|e| RootError::io(path, e))?;
        finish(&to).map_err(|e| RootError::io(path, e))?;
        let st = rustix::fs::fstat(&to).map_err(|e| RootError::io(path, e))?;
        match rustix::fs::renameat(dir, stage.as_str(), dir, path.file_name()) {
            Ok(()) => Ok(st),
            // rename(2) never replaces a directory with a file.
            Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => Err(RootError::Conflict {
                path: path.clone(),
                what: "is a directory (delete it first)".into(),
            }),
            Err(e) => Err(RootError::io(path, e)),
        }
    })();
    if copied.is_err() {
        let _ = rustix::fs::unlinkat(dir, stage.as_str(), AtFlags::empty());
    }
    copied
}

/// Walks the directory `opened` and everything beneath it, depth first with
/// an explicit stack, as [`Root::walk`] describes: `visit` gets each
/// directory (`opened` first, with `top`) opened from its parent's
/// descriptor with `O_NOFOLLOW | O_DIRECTORY`, or why it could not be, and
/// returns the subdirectories to enter.
pub fn walk_from<T>(
    opened: std::io::Result<OwnedFd>,
    top: T,
    mut visit: impl FnMut(std::io::Result<&OwnedFd>, &T) -> Vec<(CString, T)>,
) {
    /// A directory still to visit: its parent's descriptor (shared with
    /// its siblings, closed when the last of them is opened), its name.
    struct Next<T> {
        parent: std::sync::Arc<OwnedFd>,
        name: CString,
        depth: usize,
        data: T,
    }
    let mut stack: Vec<Next<T>> = Vec::new();
    let push = |stack: &mut Vec<Next<T>>, fd: OwnedFd, depth: usize, subdirs: Vec<(CString, T)>| {
        let fd = std::sync::Arc::new(fd);
        for (name, data) in subdirs {
            stack.push(Next {
                parent: fd.clone(),
                name,
                depth: depth + 1,
                data,
            });
        }
    };
    match opened {
        Ok(fd) => {
            let subdirs = visit(Ok(&fd), &top);
            push(&mut stack, fd, 0, subdirs);
        }
        Err(e) => {
            visit(Err(e), &top);
        }
    }
    while let Some(next) = stack.pop() {
        if next.depth > MAX_DELETE_DEPTH {
            visit(Err(too_deep()), &next.data);
            continue;
        }
        let opened = rustix::fs::openat(
            &*next.parent,
            next.name.as_c_str(),
            DIR_FLAGS,
            Mode::empty(),
        );
        drop(next.parent);
        match opened {
            Ok(fd) => {
                let subdirs = visit(Ok(&fd), &next.data);
                push(&mut stack, fd, next.depth, subdirs);
            }
            Err(e) => {
                visit(Err(e.into()), &next.data);
            }
        }
    }
}

/// The entries of the directory `fd` (without `.` and `..`), each with its
/// kind as `lstat` sees it (never following a symlink). `fd` is read from
/// its current offset with getdents(2) (no second descriptor): pass one
/// freshly opened, as [`Root::walk`] does.
pub fn list_dir(fd: &OwnedFd) -> std::io::Result<Vec<(CString, FileType)>> {
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut entries = rustix::fs::RawDir::new(fd, buf.spare_capacity_mut());
    let mut out = Vec::new();
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => FileType::from_raw_mode(
                rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)?.st_mode,
            ),
            kind => kind,
        };
        out.push((name.to_owned(), kind));
    }
    Ok(out)
}

/// Removes the entry `name` of kind `kind` in `dir` (a directory with
/// everything beneath it).
fn remove_entry(dir: &OwnedFd, name: &CString, kind: FileType) -> std::io::Result<()> {
    if kind == FileType::Directory {
        return remove_tree(dir, name);
    }
    match rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn too_deep() -> std::io::Error {
    std::io::Error::other(format!(
        "more than {MAX_DELETE_DEPTH} levels of directories: too deep to walk"
    ))
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

/// Whether a file or directory created with the permission bits `mode`
/// gets exactly them: the process's umask (read once, from
/// `/proc/self/status`) clears none of them. When it is not known, no.
pub fn umask_keeps(mode: u32) -> bool {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let umask = UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    });
    umask.is_some_and(|u| mode & 0o777 & u == 0)
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
