//! Watching the local tree: inotify events (through `notify`) coalesced into
//! batches of dirty paths. Nothing is ever dropped: when the kernel queue
//! overflows or the watcher reports an error, the batch says "rescan".

use lks_proto::RelPath;
use notify::{EventKind, RecursiveMode, Watcher};
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

enum Signal {
    Paths(Vec<PathBuf>),
    Rescan(String),
}

/// A running watcher on one directory.
pub struct TreeWatcher {
    root: PathBuf,
    rx: mpsc::UnboundedReceiver<Signal>,
    _watcher: notify::RecommendedWatcher,
}

impl TreeWatcher {
    /// Starts watching `root` recursively.
    pub fn start(root: &Path) -> notify::Result<TreeWatcher> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let signal = match res {
                    Ok(ev) if ev.need_rescan() => {
                        Signal::Rescan("the kernel's event queue overflowed".into())
                    }
                    Ok(ev) => match ev.kind {
                        EventKind::Access(_) => return,
                        _ => Signal::Paths(ev.paths),
                    },
                    Err(e) => Signal::Rescan(format!("watcher error: {e}")),
                };
                let _ = tx.send(signal);
            })?;
        watcher.watch(root, RecursiveMode::Recursive)?;
        Ok(TreeWatcher {
            root: root.to_path_buf(),
            rx,
            _watcher: watcher,
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
