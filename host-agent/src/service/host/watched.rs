//! The files a host resource watches: its `watch` globs over its directory,
//! on the process's one inotify instance ([`crate::watch`]), with the
//! ignores every service has (`.git`, editors' temporary files,
//! `.dockerignore`, `.lksignore`) and lks's own files (`lks.yaml`, `.lks/`)
//! left out.

use crate::config::{Host, Service};
use crate::ignores::Ignores;
use crate::watch::TreeWatcher;
use globset::GlobSet;
use std::path::PathBuf;

/// The watch of one host resource.
pub struct Watched {
    watcher: TreeWatcher,
    dir: PathBuf,
    matcher: GlobSet,
    ignores: Ignores,
    /// lks's own files beneath the directory, relative to it.
    own: Vec<String>,
}

impl Watched {
    /// Watches what `host` names; None when it names nothing, Err (said by
    /// the caller) when the watcher cannot start.
    pub fn start(service: &Service, host: &Host) -> Result<Option<Watched>, String> {
        if host.watch.is_empty() {
            return Ok(None);
        }
        let watcher =
            TreeWatcher::start(&service.dir).map_err(|e| crate::watch::explain(e).to_string())?;
        let own = service
            .own_files()
            .iter()
            .filter_map(|f| f.strip_prefix(&service.dir).ok())
            .filter_map(|r| r.to_str().map(str::to_string))
            .filter(|r| !r.is_empty())
            .collect();
        Ok(Some(Watched {
            watcher,
            dir: service.dir.clone(),
            matcher: host.watch_matcher.clone(),
            ignores: own_ignores(&service.dir),
            own,
        }))
    }

    /// The next batch of changes with paths the globs match (relative to
    /// the directory, sorted); batches with none are passed over. A batch
    /// the watcher could not trust (its queue overflowed) counts as a change.
    pub async fn next(&mut self) -> Vec<String> {
        loop {
            let Some(changes) = self.watcher.next().await else {
                return std::future::pending().await;
            };
            if changes.paths.iter().any(Ignores::is_rule_file) {
                self.ignores = own_ignores(&self.dir);
            }
            let mut matched: Vec<String> = changes
                .paths
                .iter()
                .filter(|p| {
                    let s = p.as_str();
                    !self
                        .own
                        .iter()
                        .any(|o| s == o || s.starts_with(&format!("{o}/")))
                })
                .filter(|p| {
                    let is_dir = self.dir.join(p.as_str()).is_dir();
                    !self.ignores.ignores_path(p, is_dir) && self.matcher.is_match(p.as_str())
                })
                .map(|p| p.to_string())
                .collect();
            if changes.rescan && matched.is_empty() {
                matched.push("(everything: the watcher lost events)".into());
            }
            if !matched.is_empty() {
                return matched;
            }
        }
    }
}

/// What a host resource's watch leaves out: `.git`, editors' temporary
/// files and `.lksignore` patterns, but not its directory's `.dockerignore`
/// (no image is built from it; it often shares the directory of a service
/// whose image leaves the sources out).
fn own_ignores(dir: &std::path::Path) -> Ignores {
    let filter = crate::filter::Filter {
        no_dockerignore: true,
        ..Default::default()
    };
    Ignores::with_filter(dir, &filter)
}
