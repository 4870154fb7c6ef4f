//! New directories of a batch, made whole in its staging directory and put
//! in place at the commit by one rename each: the cold path (a fresh root,
//! a new package) places thousands of files with a single rename instead of
//! one per file.
//!
//! A Mkdir stages a new subtree when its directory does not exist yet, its
//! parent does (on the root's own mount: a rename cannot cross mounts) and
//! no earlier delete, symlink or mkdir of the batch reshapes that place.
//! Puts, mkdirs and symlinks beneath a staged directory are then made
//! directly in the staged tree, under their final names. The commit renames
//! the subtree's top into place at the position of its Mkdir, with
//! `RENAME_NOREPLACE`: if something appeared at that name meanwhile, nothing
//! of the subtree is placed and each of its operations is reported failed.
//!
//! The batch's order stays the order things happen in: an operation that is
//! not made inside the staged tree but touches it (a delete, chmod or put
//! the usual way beneath it, or a delete, symlink or mkdir above it) seals
//! the subtree. Later operations beneath a sealed subtree take the usual
//! way and apply at the commit after the subtree is in place, in order.

use crate::manifest::StatKey;
use crate::root::DIR_FLAGS;
use lks_proto::RelPath;
use rustix::fs::Mode;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// An operation made directly inside a staged subtree.
pub(super) enum Made {
    Dir {
        index: u64,
        path: RelPath,
        mode: u32,
    },
    File {
        index: u64,
        path: RelPath,
        hash: [u8; 32],
        mode: u32,
        /// Its stat when staged: renaming the subtree's top does not change
        /// a file's inode nor its ctime.
        key: StatKey,
    },
    Symlink {
        index: u64,
        path: RelPath,
        target: String,
    },
}

impl Made {
    pub(super) fn index(&self) -> u64 {
        match self {
            Made::Dir { index, .. } | Made::File { index, .. } | Made::Symlink { index, .. } => {
                *index
            }
        }
    }

    pub(super) fn path(&self) -> &RelPath {
        match self {
            Made::Dir { path, .. } | Made::File { path, .. } | Made::Symlink { path, .. } => path,
        }
    }
}

/// One new directory staged whole, with everything made beneath it.
pub(super) struct Subtree {
    /// Its final path.
    pub(super) top: RelPath,
    /// The index of its Mkdir.
    pub(super) index: u64,
    /// Its mode.
    pub(super) mode: u32,
    /// Its name in the staging directory.
    pub(super) stage: String,
    /// Later operations beneath it take the usual way.
    sealed: bool,
    /// What was made beneath it, in order.
    pub(super) made: Vec<Made>,
}

impl Subtree {
    /// Opens each directory of this subtree in the staging directory (its
    /// top open as `top`), parents before children, never following a
    /// symlink, and hands it to `visit` with its final path. Those that
    /// cannot be opened are left out.
    pub(super) fn each_dir(&self, top: OwnedFd, mut visit: impl FnMut(&OwnedFd, &str)) {
        visit(&top, self.top.as_str());
        // The directories opened last, each beneath the one before (a few:
        // a chain thousands of levels deep keeps its last ones).
        let mut chain: Vec<(String, OwnedFd)> = vec![(self.top.to_string(), top)];
        for made in &self.made {
            let Made::Dir { path, .. } = made else {
                continue;
            };
            let Some(parent) = path.parent() else {
                continue;
            };
            let parent = parent.as_str();
            while chain.len() > 1 && !is_at_or_beneath(parent, &chain[chain.len() - 1].0) {
                chain.pop();
            }
            // Down from the deepest one open to the parent, then the directory.
            let (base, _) = &chain[chain.len() - 1];
            let Some(rest) = path.as_str()[base.len()..].strip_prefix('/') else {
                continue;
            };
            let mut at = base.clone();
            for comp in rest.split('/') {
                let opened = {
                    let (_, fd) = &chain[chain.len() - 1];
                    rustix::fs::openat(fd, comp, DIR_FLAGS, Mode::empty())
                };
                let Ok(fd) = opened else { break };
                at = format!("{at}/{comp}");
                if at == path.as_str() {
                    visit(&fd, &at);
                }
                chain.push((at.clone(), fd));
                if chain.len() > 64 {
                    chain.remove(1);
                }
            }
        }
    }
}

/// Whether `path` is `dir` or beneath it.
fn is_at_or_beneath(path: &str, dir: &str) -> bool {
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// The staged subtrees of one batch.
#[derive(Default)]
pub(super) struct Subtrees {
    list: Vec<Subtree>,
    /// Every staged directory (tops and those beneath them) by its final
    /// path, with its subtree.
    dirs: HashMap<String, usize>,
    /// The tops by their final path: which subtrees a reshaping operation
    /// above them seals.
    tops: BTreeMap<String, usize>,
    /// The batch's staging directory, where the tops are.
    staging: Option<Arc<OwnedFd>>,
    /// The staged directory opened last (puts come sorted by path).
    last: Option<(String, Arc<OwnedFd>)>,
}

impl Subtrees {
    /// Stages the directory `path` (mode `mode`, made by operation `index`)
    /// as the top of a new subtree, named `stage` in `staging`.
    pub(super) fn stage_top(
        &mut self,
        staging: &Arc<OwnedFd>,
        stage: String,
        index: u64,
        path: &RelPath,
        mode: u32,
    ) -> std::io::Result<usize> {
        let fd = make_dir(staging, &stage, mode)?;
        let id = self.list.len();
        self.list.push(Subtree {
            top: path.clone(),
            index,
            mode,
            stage,
            sealed: false,
            made: Vec::new(),
        });
        self.staging = Some(staging.clone());
        self.dirs.insert(path.to_string(), id);
        self.tops.insert(path.to_string(), id);
        self.last = Some((path.to_string(), Arc::new(fd)));
        Ok(id)
    }

    /// The staged directory `dir`, if it is one and its subtree is not
    /// sealed: its subtree and its descriptor.
    pub(super) fn open(&mut self, dir: &str) -> Option<(usize, Arc<OwnedFd>)> {
        let id = *self.dirs.get(dir)?;
        if self.list[id].sealed {
            return None;
        }
        if let Some((last, fd)) = &self.last
            && last == dir
        {
            return Some((id, fd.clone()));
        }
        let fd = match self.walk_to(id, dir) {
            Ok(fd) => Arc::new(fd),
            Err(_) => {
                // Not where it was made: the usual way from now on.
                self.list[id].sealed = true;
                return None;
            }
        };
        self.last = Some((dir.to_string(), fd.clone()));
        Some((id, fd))
    }

    /// Opens the staged directory `dir` of subtree `id`: from the last one
    /// opened when that is its parent (a chain of new directories), else
    /// from the subtree's top, one component at a time, never following a
    /// symlink.
    fn walk_to(&self, id: usize, dir: &str) -> std::io::Result<OwnedFd> {
        if let Some((last, fd)) = &self.last
            && let Some((parent, name)) = dir.rsplit_once('/')
            && parent == last
        {
            return Ok(rustix::fs::openat(&**fd, name, DIR_FLAGS, Mode::empty())?);
        }
        let subtree = &self.list[id];
        let staging = self
            .staging
            .as_ref()
            .expect("a subtree has a staging directory");
        let mut fd =
            rustix::fs::openat(&**staging, subtree.stage.as_str(), DIR_FLAGS, Mode::empty())?;
        let rest = dir
            .strip_prefix(subtree.top.as_str())
            .and_then(|r| r.strip_prefix('/'));
        for comp in rest.into_iter().flat_map(|r| r.split('/')) {
            fd = rustix::fs::openat(&fd, comp, DIR_FLAGS, Mode::empty())?;
        }
        Ok(fd)
    }

    /// Makes the directory `path` in its staged parent `parent` of subtree
    /// `id`, or gives it `mode` if this batch made it already. None when it
    /// cannot be made there (the caller takes the usual way).
    pub(super) fn mkdir_in(
        &mut self,
        id: usize,
        parent: &OwnedFd,
        index: u64,
        path: &RelPath,
        mode: u32,
    ) -> Option<()> {
        let fd = make_dir(parent, path.file_name(), mode).ok()?;
        self.dirs.insert(path.to_string(), id);
        self.last = Some((path.to_string(), Arc::new(fd)));
        self.made(
            id,
            Made::Dir {
                index,
                path: path.clone(),
                mode,
            },
        );
        Some(())
    }

    /// Whether this batch staged the directory `dir`.
    pub(super) fn contains(&self, dir: &str) -> bool {
        self.dirs.contains_key(dir)
    }

    /// Gives the staged directory `path` the mode `mode`. None when its
    /// subtree is sealed or it cannot (the caller takes the usual way).
    pub(super) fn chmod(&mut self, index: u64, path: &RelPath, mode: u32) -> Option<()> {
        let (id, fd) = self.open(path.as_str())?;
        rustix::fs::fchmod(&*fd, Mode::from_raw_mode(mode & 0o777)).ok()?;
        self.made(
            id,
            Made::Dir {
                index,
                path: path.clone(),
                mode,
            },
        );
        Some(())
    }

    /// Records what was made directly in subtree `id`.
    pub(super) fn made(&mut self, id: usize, made: Made) {
        self.list[id].made.push(made);
    }

    /// An operation on `path` that is not made inside a staged tree (it
    /// applies at the commit, in order): it seals the subtree it is
    /// beneath, and with `reshapes` (a delete, symlink or mkdir) every
    /// subtree beneath it.
    pub(super) fn touch(&mut self, path: &RelPath, reshapes: bool) {
        if self.list.is_empty() {
            return;
        }
        let mut at = Some(path.as_str());
        while let Some(p) = at {
            if let Some(&id) = self.dirs.get(p) {
                self.list[id].sealed = true;
                break;
            }
            at = p.rsplit_once('/').map(|(parent, _)| parent);
        }
        if reshapes {
            let below = format!("{path}/");
            for (_, &id) in self
                .tops
                .range(below.clone()..)
                .take_while(|(top, _)| top.starts_with(&below))
            {
                self.list[id].sealed = true;
            }
        }
    }

    /// The subtree `id`, to be placed (once: the commit takes it).
    pub(super) fn take(&mut self, id: usize) -> Subtree {
        let subtree = &mut self.list[id];
        subtree.sealed = true;
        Subtree {
            top: subtree.top.clone(),
            index: subtree.index,
            mode: subtree.mode,
            stage: std::mem::take(&mut subtree.stage),
            sealed: true,
            made: std::mem::take(&mut subtree.made),
        }
    }

    /// The staging directory the tops are in.
    pub(super) fn staging(&self) -> Option<&Arc<OwnedFd>> {
        self.staging.as_ref()
    }
}

/// Makes the directory `name` in `dir` with exactly `mode` (a chmod only
/// when the umask takes bits away) and opens it.
fn make_dir(dir: &OwnedFd, name: &str, mode: u32) -> std::io::Result<OwnedFd> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode & 0o777))?;
    let fd = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
    if !crate::root::umask_keeps(mode) {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))?;
    }
    Ok(fd)
}
