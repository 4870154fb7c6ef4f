//! A mirror: a watched local directory kept equal, part by part, to
//! directories of one agent. It owns the whole cycle — drain the watcher,
//! refresh the trees, let deletions settle, apply the safety stops, plan,
//! apply — and its recovery: after an operation the agent refused it learns
//! what the agent really has, and when the directory vanishes it waits for it
//! to come back and starts watching again. `lks sync` (one part) and `lks up`
//! (one part per sync mapping) both drive it; the tree each agent directory
//! last confirmed is its own.

use crate::filter::Filter;
use crate::ignores::Ignores;
use crate::plan::Op;
use crate::session::{Followup, Report, Session, SessionError};
use crate::source::Source;
use crate::watch::{Changes, TreeWatcher};
use lks_proto::RelPath;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One part: a local directory (the watched one or beneath it) and the
/// session that mirrors it onto the agent.
pub struct Part {
    source: Source,
    session: Session,
}

impl Part {
    /// Mirrors `local` (with gitignore-style `excludes`) through `session`,
    /// keeping its hashes between runs in `hashes` (a directory) if given.
    pub fn new(local: &Path, filter: &Filter, session: Session, hashes: Option<&Path>) -> Part {
        let source = Source::with_filter(local, filter);
        Part {
            source: match hashes {
                Some(dir) => source.keep_hashes_in(dir),
                None => source,
            },
            session,
        }
    }

    /// The path of `p` (absolute) relative to the part, if inside it (`None`
    /// inside: the part's directory itself).
    fn relative(&self, p: &Path) -> Option<Option<RelPath>> {
        let rel = p.strip_prefix(&self.source.root).ok()?;
        if rel.as_os_str().is_empty() {
            return Some(None);
        }
        Some(rel.to_str().and_then(|s| RelPath::new(s).ok()))
    }

    fn refresh(&mut self, dir: &Path, changes: &Changes) -> Vec<String> {
        let rels: Vec<Option<RelPath>> = changes
            .paths
            .iter()
            .filter_map(|p| self.relative(&dir.join(p.as_str())))
            .collect();
        self.source
            .apply(changes.rescan, rels.iter().map(Option::as_ref))
    }
}

/// What a batch of changes comes to.
pub enum Pending {
    /// What to send.
    Planned(Plan),
    /// Mirroring now would copy damage (why); nothing is sent.
    Held(String),
    /// The directory is gone (why): nothing is sent, and the mirror waits
    /// for it to come back (its next [`Mirror::changes`] returns then).
    Gone(String),
}

/// The operations planned for each part, and what they mean.
pub struct Plan {
    ops: Vec<Vec<Op>>,
    /// Where each part's paths start, relative to the watched directory.
    bases: Vec<PathBuf>,
    /// The planned paths, relative to the watched directory (what globs
    /// match), made when first asked for: `lks sync` never asks, and a
    /// first sync of 100,000 files would hold 100,000 strings.
    changed: std::sync::OnceLock<Vec<String>>,
    /// What could not be planned (unreadable files and the like).
    pub problems: Vec<String>,
    /// The watcher's changes the plan comes from (empty for a resync).
    pub changes: Changes,
}

impl Plan {
    /// The planned paths, relative to the watched directory (what globs
    /// match).
    pub fn changed(&self) -> &[String] {
        self.changed.get_or_init(|| {
            self.ops
                .iter()
                .zip(&self.bases)
                .flat_map(|(ops, base)| {
                    ops.iter()
                        .map(|op| base.join(op.path().as_str()).to_string_lossy().into_owned())
                })
                .collect()
        })
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.ops.iter().all(Vec::is_empty)
    }

    /// The files it sends, and their bytes.
    pub fn files(&self) -> (u64, u64) {
        self.ops
            .iter()
            .map(|ops| crate::plan::files_in(ops))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}

/// A watched directory mirrored onto an agent.
pub struct Mirror {
    dir: PathBuf,
    watcher: TreeWatcher,
    parts: Vec<Part>,
    scanned: bool,
    gone: bool,
    warnings: Vec<String>,
    retry: Retry,
}

/// Operations the agent refused for a reason that may pass (a full disk, a
/// busy file) are tried again after a delay that doubles (0.5 s to 30 s),
/// without waiting for another local edit, until a batch succeeds.
struct Retry {
    backoff: crate::backoff::Backoff,
    at: Option<Instant>,
}

impl Retry {
    fn new() -> Retry {
        Retry {
            backoff: crate::backoff::Backoff::new(
                Duration::from_millis(500),
                Duration::from_secs(30),
            ),
            at: None,
        }
    }

    /// After a batch: schedules a try, or (all applied) starts over.
    fn after(&mut self, report: &Report) {
        if report.errors.is_empty() {
            self.backoff.reset();
            self.at = None;
        } else {
            self.at = Some(Instant::now() + self.backoff.next_delay());
        }
    }
}

impl Mirror {
    /// Starts watching `dir` (before anything is scanned, so nothing that
    /// happens meanwhile is missed) for `parts`, which lie in it.
    pub fn watch(dir: &Path, parts: Vec<Part>) -> std::io::Result<Mirror> {
        assert!(!parts.is_empty(), "a mirror has a part");
        let watcher = TreeWatcher::start(dir)
            .map_err(|e| std::io::Error::other(format!("cannot watch {}: {e}", dir.display())))?;
        Ok(Mirror {
            dir: dir.to_path_buf(),
            watcher,
            parts,
            scanned: false,
            gone: false,
            warnings: Vec::new(),
            retry: Retry::new(),
        })
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The session of the first part (readiness probes, the agent's events).
    pub fn agent(&mut self) -> &mut Session {
        &mut self.parts[0].session
    }

    /// Replaces the parts' sessions (one each, in order) after the agent was
    /// reached again; the next [`resync`](Self::resync) learns what it has.
    pub fn reattach(&mut self, sessions: Vec<Session>) {
        assert_eq!(sessions.len(), self.parts.len(), "one session per part");
        for (part, session) in self.parts.iter_mut().zip(sessions) {
            part.session = session;
        }
    }

    /// What the scans and the agent said that is worth a warning, since the
    /// last call.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The next batch of changes (see [`Changed::next`]).
    pub async fn changes(&mut self) -> Option<Changes> {
        self.split().0.next().await
    }

    /// The watch and the first part's session, to wait for changes while
    /// the session is in use (a readiness check).
    pub fn split(&mut self) -> (Changed<'_>, &mut Session) {
        (
            Changed {
                dir: &self.dir,
                watcher: &mut self.watcher,
                gone: &mut self.gone,
                warnings: &mut self.warnings,
                retry_at: &mut self.retry.at,
            },
            &mut self.parts[0].session,
        )
    }

    /// Brings the trees up to date with `changes` (and whatever else is
    /// queued), lets deletions settle (an `rm -rf` in progress is seen whole,
    /// so the safety stops see its end), and plans.
    pub async fn take(&mut self, mut changes: Changes) -> Pending {
        self.watcher.drain_into(&mut changes);
        self.refresh(&changes);
        if self.parts.iter().any(|p| {
            p.source.safety_stop(p.session.remote()).is_none()
                && p.source.deletes_pending(p.session.remote())
        }) {
            let mut more = Changes::default();
            self.watcher.settle_deletions(&mut more).await;
            if more.first_event.is_some() {
                self.refresh(&more);
                changes.rescan |= more.rescan;
                changes.paths.extend(more.paths);
            }
        }
        self.plan(changes)
    }

    /// Learns what the agent has (leaving alone, with `keep_agent_only`, the
    /// paths only it has: an image's build outputs), brings the trees up to
    /// date with everything that changed since the last look (all of it, the
    /// first time), and plans.
    pub async fn resync(&mut self, keep_agent_only: bool) -> Result<Pending, SessionError> {
        let mut changes = Changes::default();
        self.watcher.drain_into(&mut changes);
        if !self.scanned || changes.rescan {
            for p in &mut self.parts {
                let w = p.source.rescan();
                self.warnings.extend(w);
            }
            self.scanned = true;
        } else {
            self.refresh(&changes);
        }
        for p in &mut self.parts {
            let w = p
                .session
                .fetch_manifest(&p.source.ignores, &p.source.tree.nodes)
                .await?;
            self.warnings.extend(w);
            p.source.unsettled();
            if keep_agent_only {
                let tree = &p.source.tree.nodes;
                let kept = p.session.keep_only(|path| tree.contains_key(path));
                if kept > 0 {
                    tracing::debug!(dir = %p.source.root.display(), kept, "paths only the agent has, left alone");
                }
            }
        }
        Ok(self.plan(Changes::default()))
    }

    /// Sends the plan; `followup` (steps, a restart) rides on the last
    /// part's batch, so it runs once every part is in place. After an
    /// operation the agent refused, what it really has is fetched again so
    /// the next plan starts from the truth.
    ///
    /// An agent that restarted since the plan was made (a tunnel reconnects
    /// by itself) refuses the batch whole: what it really has is fetched, the
    /// batch planned again against that, and sent once more.
    pub async fn apply(&mut self, plan: Plan, followup: Followup) -> Result<Report, SessionError> {
        let whole = plan.problems.is_empty();
        let report = match self.apply_once(plan, followup).await {
            Ok(report) => report,
            Err(e) => {
                // What the agent has now is not known: the next plan (after
                // its tree is fetched again) looks at everything.
                self.unsettled();
                return Err(e);
            }
        };
        self.retry.after(&report);
        if whole && report.errors.is_empty() && report.vanished == 0 {
            // Both trees are equal now: the next plan looks only at what
            // changes from here.
            for p in &mut self.parts {
                p.source.settled();
            }
        } else {
            self.unsettled();
        }
        Ok(report)
    }

    fn unsettled(&mut self) {
        for p in &mut self.parts {
            p.source.unsettled();
        }
    }

    /// When the operations that failed are tried again (None: nothing
    /// failed); a [`Changed::next`] brings an empty batch then, which plans
    /// them against what the agent has.
    pub fn retry_in(&self) -> Option<Duration> {
        self.retry
            .at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    async fn apply_once(&mut self, plan: Plan, followup: Followup) -> Result<Report, SessionError> {
        match self.send(plan, &followup).await {
            Err(SessionError::Restarted { .. }) => {
                for p in &mut self.parts {
                    p.session.hello_again().await?;
                    let w = p
                        .session
                        .fetch_manifest(&p.source.ignores, &p.source.tree.nodes)
                        .await?;
                    self.warnings.extend(w);
                    p.source.unsettled();
                }
                self.warnings.push(
                    "the agent restarted since the last batch; resynced against what it has".into(),
                );
                match self.plan(Changes::default()) {
                    Pending::Planned(plan) => self.send(plan, &followup).await,
                    Pending::Held(why) | Pending::Gone(why) => {
                        self.warnings.push(why);
                        Ok(Report::default())
                    }
                }
            }
            other => other,
        }
    }

    async fn send(&mut self, plan: Plan, followup: &Followup) -> Result<Report, SessionError> {
        let last = self.parts.len() - 1;
        let mut report = Report::default();
        for (i, (p, ops)) in self.parts.iter_mut().zip(plan.ops).enumerate() {
            let f = if i == last {
                followup.clone()
            } else {
                Followup::default()
            };
            report.absorb(p.session.apply_with(&p.source.tree, ops, f).await?);
        }
        if !report.errors.is_empty() {
            for p in &mut self.parts {
                let w = p
                    .session
                    .fetch_manifest(&p.source.ignores, &p.source.tree.nodes)
                    .await?;
                self.warnings.extend(w);
                p.source.unsettled();
            }
        }
        Ok(report)
    }

    /// The absolute paths among `changes` that matter: not in `.git`, not
    /// ignored by their part's rules or, outside every part, by `outside`.
    pub fn touched(&self, changes: &Changes, outside: &Ignores) -> Vec<PathBuf> {
        changes
            .paths
            .iter()
            .filter_map(|rel| {
                if rel.components().any(|c| c == ".git") {
                    return None;
                }
                let abs = self.dir.join(rel.as_str());
                let is_dir = abs.is_dir();
                let mut inside = self
                    .parts
                    .iter()
                    .filter_map(|p| Some((p, p.relative(&abs)?)));
                match inside.next() {
                    Some((p, Some(r))) if p.source.ignores.ignores_path(&r, is_dir) => None,
                    Some(_) => Some(abs),
                    None if outside.ignores_path(rel, is_dir) => None,
                    None => Some(abs),
                }
            })
            .collect()
    }

    fn refresh(&mut self, changes: &Changes) {
        for p in &mut self.parts {
            let w = p.refresh(&self.dir, changes);
            self.warnings.extend(w);
        }
    }

    fn plan(&mut self, changes: Changes) -> Pending {
        if let Some(why) = self
            .parts
            .iter()
            .find_map(|p| p.source.safety_stop(p.session.remote()))
        {
            if !self.dir.is_dir() {
                self.gone = true;
                return Pending::Gone(why);
            }
            return Pending::Held(why);
        }
        let mut ops = Vec::with_capacity(self.parts.len());
        let mut bases = Vec::with_capacity(self.parts.len());
        let mut problems = Vec::new();
        for p in &mut self.parts {
            let (part_ops, part_problems) = p.source.plan(p.session.remote());
            problems.extend(part_problems);
            let base = p
                .source
                .root
                .strip_prefix(&self.dir)
                .unwrap_or(Path::new(""));
            bases.push(base.to_path_buf());
            ops.push(part_ops);
        }
        Pending::Planned(Plan {
            ops,
            bases,
            changed: std::sync::OnceLock::new(),
            problems,
            changes,
        })
    }
}

/// The watch of a mirror.
pub struct Changed<'a> {
    dir: &'a Path,
    watcher: &'a mut TreeWatcher,
    gone: &'a mut bool,
    warnings: &'a mut Vec<String>,
    retry_at: &'a mut Option<Instant>,
}

impl Changed<'_> {
    /// The next batch of changes (an empty one when failed operations are
    /// due to be tried again). Cancel-safe: nothing is lost when the
    /// future is dropped. When the directory went away, it resolves once it
    /// is back (as a change of everything), watched again.
    pub async fn next(self) -> Option<Changes> {
        if *self.gone {
            while !self.dir.is_dir() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            *self.watcher = match TreeWatcher::start(self.dir) {
                Ok(w) => w,
                Err(e) => {
                    self.warnings
                        .push(format!("cannot watch {}: {e}", self.dir.display()));
                    return None;
                }
            };
            *self.gone = false;
            return Some(Changes {
                rescan: true,
                first_event: Some(Instant::now()),
                ..Changes::default()
            });
        }
        let retry = async {
            match *self.retry_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            c = self.watcher.next() => c,
            () = retry => {
                // Failed operations, tried again: an empty batch plans them.
                *self.retry_at = None;
                Some(Changes {
                    first_event: Some(Instant::now()),
                    ..Changes::default()
                })
            }
        }
    }
}
