//! Watching the workspace's own files (`lks.yaml` and every service file it
//! names) while `lks up` runs, so an edit reloads the workspace. Their
//! directories are watched, not the files: editors replace a file by
//! renaming another over it.

use crate::config::Workspace;
use notify::Watcher;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// Events that follow within this long belong to the same edit.
const SETTLE: Duration = Duration::from_millis(150);

/// The watch on a workspace's files.
pub struct ConfigWatch {
    files: BTreeSet<PathBuf>,
    rx: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl ConfigWatch {
    /// Watches the files of `ws`. A watcher that cannot start (a kernel
    /// limit) is said once, and the workspace is then not reloaded.
    pub fn new(ws: &Workspace) -> ConfigWatch {
        let mut files: BTreeSet<PathBuf> = BTreeSet::from([ws.file.clone()]);
        files.extend(ws.services.values().map(|s| s.file.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            if let Ok(e) = e {
                let _ = tx.send(e.paths);
            }
        });
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(PathBuf::from))
            .collect();
        let watcher = watcher.and_then(|mut w| {
            for d in &dirs {
                w.watch(d, notify::RecursiveMode::NonRecursive)?;
            }
            Ok(w)
        });
        let watcher = match watcher.map_err(crate::watch::explain) {
            Ok(w) => Some(w),
            Err(e) => {
                crate::console::say(&format!(
                    "warning: cannot watch lks.yaml and the service files ({e}); edits to them are not reloaded"
                ));
                None
            }
        };
        ConfigWatch {
            files,
            rx,
            _watcher: watcher,
        }
    }

    /// Resolves once one of the files changed (and the edit settled); the
    /// first one that did.
    pub async fn changed(&mut self) -> PathBuf {
        let first = loop {
            let Some(paths) = self.rx.recv().await else {
                return std::future::pending().await;
            };
            if let Some(p) = paths.into_iter().find(|p| self.files.contains(p)) {
                break p;
            }
        };
        // The rest of the same edit (a write in several steps, a rename).
        while let Ok(Some(_)) = tokio::time::timeout(SETTLE, self.rx.recv()).await {}
        first
    }
}
