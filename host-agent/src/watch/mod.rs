//! Watching the local tree: inotify events (through `notify`) coalesced into
//! batches of dirty paths. Nothing is ever dropped: when the kernel queue
//! overflows or the watcher reports an error, the batch says "rescan".

use lks_proto::RelPath;
mod shared;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A batch is closed once no event arrived for this long...
pub const QUIET: Duration = Duration::from_millis(3);
/// ...or once it is this old, whichever comes first.
pub const MAX_WAIT: Duration = Duration::from_millis(50);

/// Changes seen since the last batch.
#[derive(Debug, Default)]
pub struct Changes {
    /// Paths (relative to the root) that may have changed.
    pub paths: BTreeSet<RelPath>,
    /// The watch data cannot be trusted: rescan everything.
    pub rescan: bool,
    /// When the first event of the batch arrived.
    pub first_event: Option<Instant>,
}

/// What a watch reports: paths that may have changed, or that everything
/// must be looked at again.
enum Signal {
    Paths(Vec<PathBuf>),
    Rescan(String),
}

/// A running watcher on one directory.
pub struct TreeWatcher {
    root: PathBuf,
    rx: mpsc::UnboundedReceiver<Signal>,
    _registration: shared::Registration,
}

impl TreeWatcher {
    /// Starts watching `root` recursively (on the process's one inotify
    /// instance, see [`shared`]).
    pub fn start(root: &Path) -> notify::Result<TreeWatcher> {
        let (tx, rx) = mpsc::unbounded_channel();
        let registration = shared::register(root, tx)?;
        Ok(TreeWatcher {
            root: root.to_path_buf(),
            rx,
            _registration: registration,
        })
    }

    /// Waits for the next batch of changes: blocks until one event arrives,
    /// then gathers more until [`QUIET`] passes without one or the batch is
    /// [`MAX_WAIT`] old. `None` when the watcher is gone.
    pub async fn next(&mut self) -> Option<Changes> {
        let first = self.rx.recv().await?;
        let mut changes = Changes {
            first_event: Some(Instant::now()),
            ..Default::default()
        };
        self.add(&mut changes, first);
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let quiet = tokio::time::Instant::now() + QUIET;
            match tokio::time::timeout_at(quiet.min(deadline), self.rx.recv()).await {
                Ok(Some(s)) => self.add(&mut changes, s),
                Ok(None) | Err(_) => break,
            }
        }
        Some(changes)
    }

    /// Takes whatever is already queued without waiting (used after a batch so
    /// events that arrived meanwhile are not delayed by another quiet period).
    /// Waits until no event has arrived for `quiet` (or `cap` has passed),
    /// adding everything that arrives to `changes`. A batch with deletions
    /// uses it so an `rm -rf` in progress is seen whole, however slow it is.
    pub async fn settle(&mut self, changes: &mut Changes, quiet: Duration, cap: Duration) {
        let deadline = tokio::time::Instant::now() + cap;
        loop {
            let until = (tokio::time::Instant::now() + quiet).min(deadline);
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(s)) => {
                    if changes.first_event.is_none() {
                        changes.first_event = Some(Instant::now());
                    }
                    self.add(changes, s);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// [`settle`](Self::settle) with the delays for a batch with deletions:
    /// it is sent once no event has arrived for 50 ms (an `rm -rf` in
    /// progress keeps it waiting, so the safety stops see its end), or after
    /// 2 s at most.
    pub async fn settle_deletions(&mut self, changes: &mut Changes) {
        self.settle(changes, Duration::from_millis(50), Duration::from_secs(2))
            .await
    }

    pub fn drain_into(&mut self, changes: &mut Changes) {
        while let Ok(s) = self.rx.try_recv() {
            if changes.first_event.is_none() {
                changes.first_event = Some(Instant::now());
            }
            self.add(changes, s);
        }
    }

    fn add(&self, changes: &mut Changes, s: Signal) {
        match s {
            Signal::Rescan(why) => {
                tracing::warn!("{why}; rescanning the whole tree");
                changes.rescan = true;
            }
            Signal::Paths(paths) => {
                for p in paths {
                    match p.strip_prefix(&self.root) {
                        Ok(rel) if rel.as_os_str().is_empty() => changes.rescan = true,
                        Ok(rel) => match rel.to_str().map(RelPath::new) {
                            Some(Ok(r)) => {
                                changes.paths.insert(r);
                            }
                            // Staging names and the like are not ours to sync.
                            Some(Err(lks_proto::PathError::Reserved(_))) => {}
                            _ => changes.rescan = true,
                        },
                        Err(_) => changes.rescan = true,
                    }
                }
            }
        }
    }
}

/// A watch error, with what to do when it is a kernel limit: the limit, its
/// value, and the `sysctl` that raises it.
pub fn explain(e: notify::Error) -> notify::Error {
    let limit = |name: &str, raise: &str| {
        let now = std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        notify::Error::generic(&format!(
            "the kernel's limit fs.inotify.{name} ({now}) is reached; raise it with \
             `sudo sysctl fs.inotify.{name}={raise}` (and in /etc/sysctl.d/ to keep it)"
        ))
    };
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => limit("max_user_watches", "524288"),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28) => {
            // ENOSPC from inotify_add_watch: out of watches.
            limit("max_user_watches", "524288")
        }
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(24) => {
            // EMFILE from inotify_init: out of instances (or descriptors).
            limit("max_user_instances", "1024")
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_limit_is_named_with_the_sysctl_that_raises_it() {
        let instances = explain(notify::Error::io(std::io::Error::from_raw_os_error(24)));
        assert!(
            instances
                .to_string()
                .contains("fs.inotify.max_user_instances"),
            "{instances}"
        );
        assert!(instances.to_string().contains("sudo sysctl"), "{instances}");
        let watches = explain(notify::Error::new(notify::ErrorKind::MaxFilesWatch));
        assert!(
            watches.to_string().contains("fs.inotify.max_user_watches"),
            "{watches}"
        );
    }

    async fn wait(w: &mut TreeWatcher) -> Changes {
        tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("an event within 5 s")
            .expect("a watcher")
    }

    #[tokio::test]
    async fn nested_and_separate_roots_share_one_instance_and_each_gets_its_events() {
        let tmp = tempfile::tempdir().unwrap();
        let (outer, inner, other) = (
            tmp.path().join("ws"),
            tmp.path().join("ws/inner"),
            tmp.path().join("other"),
        );
        for d in [&outer, &inner, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut w_inner = TreeWatcher::start(&inner).unwrap();
        let mut w_outer = TreeWatcher::start(&outer).unwrap();
        let mut w_other = TreeWatcher::start(&other).unwrap();
        std::fs::write(inner.join("a.txt"), "a").unwrap();
        let got = |c: Changes| c.paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let c = wait(&mut w_inner).await;
        assert!(c.rescan || got(c).contains(&"a.txt".to_string()));
        let c = wait(&mut w_outer).await;
        assert!(c.rescan || got(c).contains(&"inner/a.txt".to_string()));
        // The outer watch goes: the inner root is still watched.
        drop(w_outer);
        w_inner.drain_into(&mut Changes::default());
        std::fs::write(inner.join("b.txt"), "b").unwrap();
        let c = wait(&mut w_inner).await;
        assert!(
            c.rescan || got(c).contains(&"b.txt".to_string()),
            "inner lost its watch"
        );
        std::fs::write(other.join("c.txt"), "c").unwrap();
        let c = wait(&mut w_other).await;
        assert!(got(c).contains(&"c.txt".to_string()));
    }

    #[tokio::test]
    async fn a_root_removed_and_made_again_is_watched_anew() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("svc");
        std::fs::create_dir_all(&root).unwrap();
        let old = TreeWatcher::start(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        // As the mirror does: the new watcher first, then the old one goes.
        let mut new = TreeWatcher::start(&root).unwrap();
        drop(old);
        new.drain_into(&mut Changes::default());
        std::fs::write(root.join("back.txt"), "b").unwrap();
        let c = wait(&mut new).await;
        let paths: Vec<String> = c.paths.iter().map(|p| p.to_string()).collect();
        assert!(
            c.rescan || paths.contains(&"back.txt".to_string()),
            "{paths:?}"
        );
    }
}
