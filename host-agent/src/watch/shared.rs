//! One inotify instance for every tree `lks` watches (the kernel allows a
//! user 128 by default: one per service stopped `lks up` near its 113th).
//! Each watched root is a route; the instance watches the fewest roots that
//! cover them all (a root beneath another is covered by it), and an event
//! goes to every route whose root holds its path.

use super::Signal;
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc;

struct Route {
    id: u64,
    root: PathBuf,
    tx: mpsc::UnboundedSender<Signal>,
}

struct Shared {
    watcher: notify::RecommendedWatcher,
    routes: Arc<Mutex<Vec<Route>>>,
    /// The roots watched now: none beneath another.
    watched: Vec<PathBuf>,
    /// Roots whose directory was seen removed (notify's `DELETE_SELF`),
    /// until a watch of the same root is confirmed.
    removed: Arc<Mutex<std::collections::HashSet<PathBuf>>>,
    next_id: u64,
}

static SHARED: OnceLock<Mutex<Option<Shared>>> = OnceLock::new();

/// A route, removed when dropped.
pub(super) struct Registration {
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(lock) = SHARED.get() else { return };
        let mut guard = lock.lock().unwrap();
        if let Some(shared) = guard.as_mut() {
            shared.routes.lock().unwrap().retain(|r| r.id != self.id);
            let _ = shared.rewatch();
        }
    }
}

/// The fewest roots that cover `roots`.
fn cover(roots: impl Iterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = roots.collect();
    roots.sort();
    roots.dedup();
    let mut out: Vec<PathBuf> = Vec::new();
    for r in roots {
        // Sorted: an ancestor comes before what it holds.
        if !out.iter().any(|o| r.starts_with(o)) {
            out.push(r);
        }
    }
    out
}

impl Shared {
    fn start() -> notify::Result<Shared> {
        let routes: Arc<Mutex<Vec<Route>>> = Arc::new(Mutex::new(Vec::new()));
        let to = routes.clone();
        let removed: Arc<Mutex<std::collections::HashSet<PathBuf>>> = Default::default();
        let seen_removed = removed.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let routes = to.lock().unwrap();
            let everyone = |why: String| {
                for r in routes.iter() {
                    let _ = r.tx.send(Signal::Rescan(why.clone()));
                }
            };
            match res {
                Ok(ev) if ev.need_rescan() => {
                    everyone("the kernel's event queue overflowed".into())
                }
                Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
                Ok(ev) => {
                    if matches!(ev.kind, EventKind::Remove(_)) {
                        for p in &ev.paths {
                            if routes.iter().any(|r| r.root == *p) {
                                seen_removed.lock().unwrap().insert(p.clone());
                            }
                        }
                    }
                    for r in routes.iter() {
                        let mine: Vec<PathBuf> = ev
                            .paths
                            .iter()
                            .filter(|p| p.starts_with(&r.root))
                            .cloned()
                            .collect();
                        if !mine.is_empty() {
                            let _ = r.tx.send(Signal::Paths(mine));
                        }
                    }
                }
                Err(e) => everyone(format!("watcher error: {}", super::explain(e))),
            }
        })
        .map_err(super::explain)?;
        Ok(Shared {
            watcher,
            routes,
            watched: Vec::new(),
            removed,
            next_id: 0,
        })
    }

    /// Watches the cover of the routes' roots. A root nested with one no
    /// longer watched (inotify shares a directory's watch between them) is
    /// watched again, and the routes beneath it rescan: events may have been
    /// missed while the watches moved.
    fn rewatch(&mut self) -> notify::Result<()> {
        let wanted = cover(self.routes.lock().unwrap().iter().map(|r| r.root.clone()));
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|w| !wanted.contains(w))
            .cloned()
            .collect();
        for w in &gone {
            let _ = self.watcher.unwatch(w);
        }
        let mut result = Ok(());
        let mut now = Vec::new();
        for w in wanted {
            let moved = gone.iter().any(|g| w.starts_with(g) || g.starts_with(&w));
            if (!self.watched.contains(&w) || moved)
                && let Err(e) = self.watcher.watch(&w, RecursiveMode::Recursive)
            {
                result = Err(super::explain(e));
                continue;
            }
            if moved {
                for r in self.routes.lock().unwrap().iter() {
                    if r.root.starts_with(&w) {
                        let _ =
                            r.tx.send(Signal::Rescan("the watches were rearranged".into()));
                    }
                }
            }
            now.push(w);
        }
        self.watched = now;
        result
    }
}

/// Routes the events beneath `root` to `tx`, watching it if no watched root
/// covers it yet.
pub(super) fn register(
    root: &Path,
    tx: mpsc::UnboundedSender<Signal>,
) -> notify::Result<Registration> {
    let lock = SHARED.get_or_init(|| Mutex::new(None));
    let mut guard = lock.lock().unwrap();
    if guard.is_none() {
        *guard = Some(Shared::start()?);
    }
    let shared = guard.as_mut().expect("started");
    let id = shared.next_id;
    shared.next_id += 1;
    shared.routes.lock().unwrap().push(Route {
        id,
        root: root.to_path_buf(),
        tx,
    });
    let already = shared.watched.iter().any(|w| w == root);
    let result = match shared.rewatch() {
        // Watched already (by a watcher of the same root about to go, e.g.
        // a directory that vanished and is back, as another inode): watched
        // again, so the watch is on the directory that is there now.
        Ok(()) if already => {
            let watched = shared
                .watcher
                .watch(root, RecursiveMode::Recursive)
                .map_err(super::explain);
            if watched.is_ok() {
                confirm_later(root.to_path_buf(), id);
            }
            watched
        }
        other => other,
    };
    if let Err(e) = result {
        shared.routes.lock().unwrap().retain(|r| r.id != id);
        let _ = shared.rewatch();
        return Err(e);
    }
    Ok(Registration { id })
}

/// How long after a root was watched again its watch is confirmed.
const CONFIRM_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

/// A root watched again (a second service in the same directory, or a
/// directory replaced by another): notify keys its watches by path, so a
/// replaced directory's late `DELETE_SELF` can remove the new watch (the path
/// is the same). Shortly after, if the root's directory was seen removed,
/// the root is watched once more and its routes rescan, for the events of
/// the window; two services sharing a directory are left alone.
fn confirm_later(root: PathBuf, id: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(CONFIRM_AFTER);
        let Some(lock) = SHARED.get() else { return };
        let mut guard = lock.lock().unwrap();
        let Some(shared) = guard.as_mut() else { return };
        if !shared.routes.lock().unwrap().iter().any(|r| r.id == id)
            || !shared.removed.lock().unwrap().remove(&root)
        {
            return;
        }
        let _ = shared.watcher.watch(&root, RecursiveMode::Recursive);
        for r in shared.routes.lock().unwrap().iter() {
            if r.root.starts_with(&root) {
                let _ =
                    r.tx.send(Signal::Rescan("the directory was replaced".into()));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cover_keeps_the_outermost_roots() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            cover([p("/ws/b"), p("/ws"), p("/other"), p("/ws/b/c"), p("/ws-2")].into_iter()),
            vec![p("/other"), p("/ws"), p("/ws-2")]
        );
    }
}
