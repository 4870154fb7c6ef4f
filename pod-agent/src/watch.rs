//! The watch of the agent's root: one inotify instance, one watch per
//! directory, and what its events say: which paths changed since the
//! manifest last looked (and whether the kernel's queue overflowed, after
//! which nothing it says can be trusted until a full rescan).
//!
//! A directory is watched by the descriptor the descriptor walk opened
//! (`O_NOFOLLOW | O_DIRECTORY`), named as `/proc/self/fd/N`: that magic link
//! leads to exactly the opened directory, never to a path looked up again
//! (so `IN_DONT_FOLLOW`, which would stop at the link itself, is not used).
//! Staging directories are never watched, and their names in events are
//! left out.
//!
//! The agent's own commits tell the manifest what they changed; a rename
//! into a watched directory announces its `IN_MOVED_TO` first
//! ([`RootWatch::expect`]), so its event does not make the path changed
//! again. An event of someone else can only be taken for the agent's own
//! when it came before the agent's rename of that very name, which the
//! manifest then recorded (its own event still comes, and marks the path).

use lks_proto::is_staging_name;
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use std::collections::{HashMap, HashSet};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long the reader waits for events before it looks whether the watch
/// is still wanted.
const QUIET: Duration = Duration::from_secs(1);

/// How long the reader lets events gather once some came, so it reads
/// them by the thousand (the agent's own commit makes one per file) rather
/// than waking for each. Well within what the kernel's queue holds.
const GATHER: Duration = Duration::from_millis(10);

/// What a directory's watch reports: entries created, deleted, written,
/// changed in mode or times, renamed (the directory's own changes come
/// through its parent).
const EVENTS: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::ONLYDIR)
    // A file unlinked while open for writing reports nothing more.
    .union(WatchFlags::EXCL_UNLINK);

/// Why the root cannot be watched (the manifest then rescans on every request).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The user has as many inotify instances as the kernel allows.
    #[error(
        "the root is not watched: this user has all the inotify instances the kernel allows \
         (raise it with `sysctl fs.inotify.max_user_instances=1024`); every manifest \
         rescans the root"
    )]
    Instances,
    /// The user has as many inotify watches as the kernel allows.
    #[error(
        "the root is not watched: this user has all the inotify watches the kernel allows \
         (raise it with `sysctl fs.inotify.max_user_watches=1048576`); every manifest \
         rescans the root"
    )]
    Watches,
    /// Anything else (no /proc, say).
    #[error("the root is not watched ({0}); every manifest rescans the root")]
    Other(std::io::Error),
}

impl WatchError {
    fn of(e: Errno) -> WatchError {
        match e {
            Errno::MFILE => WatchError::Instances,
            Errno::NOSPC => WatchError::Watches,
            e => WatchError::Other(e.into()),
        }
    }
}

/// What the events said since the manifest last took them.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Paths (relative to the root, "" for the root itself) that changed.
    pub paths: HashSet<Box<str>>,
    /// The kernel's queue overflowed: events were lost.
    pub overflowed: bool,
    /// Everything is to be looked at again: a directory could not be
    /// watched (changes in it went unseen), or more paths changed than are
    /// worth keeping one by one.
    pub everything: bool,
}

/// The watch of one root.
pub struct RootWatch {
    fd: OwnedFd,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each watch's directory, "" for the root.
    dirs: HashMap<i32, Box<str>>,
    /// What changed since the manifest last took it.
    changes: Changes,
    /// Renames the agent is making into watched directories: by watch,
    /// by name, how many of each.
    expected: HashMap<i32, HashMap<Box<str>, u32>>,
}

impl RootWatch {
    /// A new inotify instance for the root (no watch yet), and a thread
    /// that reads its events as they come (so the kernel's queue does not
    /// overflow between two manifests) until the watch is dropped.
    pub fn start() -> Result<Arc<RootWatch>, WatchError> {
        let fd =
            inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).map_err(WatchError::of)?;
        let watch = Arc::new(RootWatch {
            fd,
            state: Mutex::default(),
        });
        let weak = Arc::downgrade(&watch);
        if let Err(e) = std::thread::Builder::new()
            .name("root-watch".into())
            .spawn(move || read_events(weak))
        {
            tracing::warn!("root watch: events are read only on requests: {e}");
        }
        Ok(watch)
    }

    /// Watches the directory open as `dir`, at `path` ("" for the root);
    /// returns its watch (the same one again for a directory watched
    /// already, now at `path`) and whether it is new at `path`.
    pub fn add(&self, dir: &OwnedFd, path: &str) -> Result<(i32, bool), WatchError> {
        let name = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let wd = inotify::add_watch(&self.fd, name.as_str(), EVENTS).map_err(WatchError::of)?;
        let mut state = self.state.lock().unwrap();
        match state.dirs.get(&wd) {
            Some(p) if **p == *path => Ok((wd, false)),
            _ => {
                state.dirs.insert(wd, path.into());
                Ok((wd, true))
            }
        }
    }

    /// Stops watching the directory that was at `path` with watch `wd`
    /// (unless that watch is another path's now: the directory moved).
    pub fn remove(&self, wd: i32, path: &str) {
        let mut state = self.state.lock().unwrap();
        if state.dirs.get(&wd).is_some_and(|p| **p == *path) {
            state.dirs.remove(&wd);
            state.expected.remove(&wd);
            let _ = inotify::remove_watch(&self.fd, wd);
        }
    }

    /// The agent is about to rename something to `name` in the directory
    /// of watch `wd`: its `IN_MOVED_TO` is its own.
    pub fn expect(&self, wd: i32, name: &str) {
        let mut state = self.state.lock().unwrap();
        let names = state.expected.entry(wd).or_default();
        match names.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                names.insert(name.into(), 1);
            }
        }
    }

    /// The rename announced did not happen: whatever happened at `path`
    /// (`name` in the directory of watch `wd`) is looked at again.
    pub fn not_done(&self, wd: i32, name: &str, path: &str) {
        let mut state = self.state.lock().unwrap();
        state.consume(wd, name);
        state.changes.mark(path.into());
    }

    /// Something may have gone unseen (a directory could not be watched):
    /// the next request looks at everything, as after an overflow.
    pub fn lost(&self) {
        self.state.lock().unwrap().changes.everything = true;
    }

    /// Marks `path` changed: the manifest looks at it again.
    pub fn mark(&self, path: &str) {
        self.state.lock().unwrap().changes.mark(path.into());
    }

    /// Reads every event queued so far, then hands over what changed since
    /// the last time. After an overflow, the announced renames are
    /// forgotten too: their events may be lost, and the rescan that follows
    /// sees everything anyway.
    pub fn take(&self) -> Changes {
        let mut state = self.state.lock().unwrap();
        self.drain(&mut state);
        if state.changes.overflowed || state.changes.everything {
            state.expected.clear();
        }
        std::mem::take(&mut state.changes)
    }

    /// Reads the events queued so far (the lock held: one reader at a time).
    fn drain(&self, state: &mut State) {
        let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
        let mut events = inotify::Reader::new(&self.fd, &mut buf);
        loop {
            match events.next() {
                Ok(event) => state.on_event(event.wd(), event.events(), event.file_name()),
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::warn!("root watch: reading events failed ({e}): rescanning");
                    state.changes.overflowed = true;
                    return;
                }
            }
        }
    }
}

impl State {
    /// Takes one announced rename to `name` in the directory of watch
    /// `wd`, if there is one.
    fn consume(&mut self, wd: i32, name: &str) -> bool {
        let Some(names) = self.expected.get_mut(&wd) else {
            return false;
        };
        let Some(n) = names.get_mut(name) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            names.remove(name);
            if names.is_empty() {
                self.expected.remove(&wd);
            }
        }
        true
    }

    /// One event: the path it names is changed, unless it is a rename the
    /// agent announced.
    fn on_event(&mut self, wd: i32, flags: ReadFlags, name: Option<&std::ffi::CStr>) {
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            self.changes.overflowed = true;
            return;
        }
        if flags.contains(ReadFlags::IGNORED) {
            // The watch is gone (its directory was removed).
            self.dirs.remove(&wd);
            self.expected.remove(&wd);
            return;
        }
        if !self.dirs.contains_key(&wd) {
            return;
        }
        let name = name.map(|n| n.to_string_lossy());
        if let Some(name) = &name
            && (is_staging_name(name)
                || (flags.contains(ReadFlags::MOVED_TO) && self.consume(wd, name)))
        {
            return;
        }
        let dir = &self.dirs[&wd];
        let path: Box<str> = match name {
            None => dir.clone(),
            Some(name) => {
                if dir.is_empty() {
                    name.into()
                } else {
                    format!("{dir}/{name}").into()
                }
            }
        };
        self.changes.mark(path);
    }
}

/// More changed paths than this (a build writing into the root, say) are
/// not kept one by one: the next request looks at everything.
const MAX_CHANGED_PATHS: usize = 1 << 16;

impl Changes {
    fn mark(&mut self, path: Box<str>) {
        if self.everything {
            return;
        }
        if self.paths.len() >= MAX_CHANGED_PATHS {
            self.everything = true;
            self.paths = HashSet::new();
            return;
        }
        self.paths.insert(path);
    }
}

/// What woke the reader.
enum Wake {
    Events,
    Quiet,
    /// The watch was dropped (or polling failed).
    Gone,
}

/// Reads events as they come, until the watch is dropped. It holds the
/// watch only while it reads: dropping the watch closes its descriptor
/// (and with it every watch) within [`QUIET`].
fn read_events(watch: Weak<RootWatch>) {
    loop {
        let wake = match watch.upgrade() {
            Some(w) => wait(&w),
            None => Wake::Gone,
        };
        match wake {
            Wake::Events => {
                std::thread::sleep(GATHER);
                if let Some(w) = watch.upgrade() {
                    on_events(&w);
                }
            }
            Wake::Quiet => {}
            Wake::Gone => return,
        }
    }
}

/// Waits for events, at most [`QUIET`].
fn wait(watch: &RootWatch) -> Wake {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let timeout = Timespec {
        tv_sec: QUIET.as_secs() as _,
        tv_nsec: 0,
    };
    let mut fds = [PollFd::new(&watch.fd, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) | Err(Errno::INTR) => Wake::Quiet,
        Ok(_) => Wake::Events,
        Err(e) => {
            tracing::warn!("root watch: events are read only on requests: {e}");
            Wake::Gone
        }
    }
}

/// Events are queued: take them in.
fn on_events(watch: &RootWatch) {
    let mut state = watch.state.lock().unwrap();
    watch.drain(&mut state);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(dirs: &[(i32, &str)]) -> State {
        State {
            dirs: dirs.iter().map(|(w, p)| (*w, Box::from(*p))).collect(),
            ..Default::default()
        }
    }

    fn paths(state: &State) -> Vec<&str> {
        let mut p: Vec<&str> = state.changes.paths.iter().map(|p| &**p).collect();
        p.sort();
        p
    }

    #[test]
    fn events_name_the_changed_paths_beneath_the_root() {
        let mut s = state_with(&[(1, ""), (2, "src"), (3, "src/lib")]);
        s.on_event(1, ReadFlags::CREATE, Some(c"new.txt"));
        s.on_event(3, ReadFlags::MODIFY, Some(c"a.rs"));
        s.on_event(2, ReadFlags::ATTRIB, None);
        s.on_event(2, ReadFlags::CREATE, Some(c".lks-stage.12"));
        s.on_event(9, ReadFlags::CREATE, Some(c"unknown-watch"));
        assert_eq!(paths(&s), ["new.txt", "src", "src/lib/a.rs"]);
        assert!(!s.changes.overflowed);
    }

    #[test]
    fn more_changed_paths_than_are_kept_mean_looking_at_everything() {
        let mut s = state_with(&[(1, "")]);
        for i in 0..=MAX_CHANGED_PATHS {
            s.on_event(
                1,
                ReadFlags::CREATE,
                Some(&std::ffi::CString::new(format!("f{i}")).unwrap()),
            );
        }
        assert!(s.changes.everything && s.changes.paths.is_empty());
        assert!(!s.changes.overflowed);
    }

    #[test]
    fn an_overflow_of_the_kernel_queue_is_remembered_until_taken() {
        let mut s = state_with(&[(1, "")]);
        s.on_event(-1, ReadFlags::QUEUE_OVERFLOW, None);
        s.on_event(1, ReadFlags::CREATE, Some(c"after.txt"));
        assert!(s.changes.overflowed);
        assert_eq!(paths(&s), ["after.txt"]);
    }

    #[test]
    fn an_announced_rename_is_the_agents_own_once_and_others_still_count() {
        let mut s = state_with(&[(1, ""), (2, "d")]);
        s.expected.entry(2).or_default().insert("f".into(), 1);
        s.on_event(2, ReadFlags::MOVED_TO, Some(c"f"));
        assert!(s.changes.paths.is_empty(), "the agent's own rename");
        // The same name again: someone else's.
        s.on_event(2, ReadFlags::MOVED_TO, Some(c"f"));
        // A write to an announced name is never taken for the rename.
        s.expected.entry(2).or_default().insert("g".into(), 1);
        s.on_event(2, ReadFlags::MODIFY, Some(c"g"));
        assert_eq!(paths(&s), ["d/f", "d/g"]);
        // A removed watch forgets its directory and what was announced there.
        s.on_event(2, ReadFlags::IGNORED, None);
        assert!(s.expected.is_empty() && !s.dirs.contains_key(&2));
    }
}
