//! `lks sync`: keep an agent's root equal to a local directory.

use crate::backoff::Backoff;
use crate::ignores::Ignores;
use crate::mirror::{Mirror, Part, Pending};
use crate::progress::{Sent, Shown};
use crate::scan::Found;
use crate::session::{Followup, Report, Session, SessionError};
use crate::source::Source;
use crate::tree::Tree;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to sync, where, and how.
pub struct SyncOptions {
    /// The local directory.
    pub local: PathBuf,
    /// The agent's URL.
    pub url: String,
    /// The bearer token.
    pub token: String,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// Where the local files' hashes are kept between runs (a directory).
    pub hash_cache: Option<PathBuf>,
}

/// Where `lks sync` keeps hashes between runs when not told otherwise:
/// `$XDG_CACHE_HOME/lks/hashes`, else `~/.cache/lks/hashes`.
pub fn default_hash_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("lks").join("hashes"))
}

/// Opens the local directory of `lks sync`.
fn open(root: &Path, excludes: &[String]) -> anyhow::Result<Source> {
    let root = root
        .canonicalize()
        .with_context(|| format!("cannot open the local directory {}", root.display()))?;
    if !root.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    Ok(Source::new(&root, excludes))
}

fn warn(warnings: Vec<String>) {
    for w in warnings {
        eprintln!("lks: warning: {w}");
    }
}

fn summary(r: &Report, ms: f64) -> String {
    format!(
        "{} files, {} deleted, {} other, {} bytes sent, {:.1} ms",
        r.files, r.deleted, r.other, r.wire_bytes, ms
    )
}

/// What `lks sync --once` last found equal, kept beside the hash cache:
/// the agent's manifest version and the local tree's digest then.
struct Equal {
    version: String,
    local: String,
}

impl Equal {
    /// The file for `local` synced to `url` (with its excludes).
    fn file(dir: &Path, local: &Path, url: &str) -> PathBuf {
        let key = format!("{}\n{url}", local.display());
        crate::hashcache::file_for(dir, Path::new(&key)).with_extension("equal")
    }

    fn load(dir: &Path, local: &Path, url: &str) -> Option<Equal> {
        let text = std::fs::read_to_string(Equal::file(dir, local, url)).ok()?;
        let (version, local) = text.trim_end().split_once('\n')?;
        (!version.is_empty()).then(|| Equal {
            version: version.to_string(),
            local: local.to_string(),
        })
    }

    /// What was kept no longer holds (the trees are being compared and
    /// changed): the next run compares them unless this one keeps anew.
    fn forget(dir: &Path, local: &Path, url: &str) {
        let _ = std::fs::remove_file(Equal::file(dir, local, url));
    }

    /// Best effort: without it the next run compares everything.
    fn save(&self, dir: &Path, local: &Path, url: &str) {
        if self.version.is_empty() {
            return;
        }
        let file = Equal::file(dir, local, url);
        let tmp = file.with_extension("equal.tmp");
        let text = format!("{}\n{}\n", self.version, self.local);
        let _ = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &file));
    }
}

/// `--once`: makes the agent's root equal to the local tree, or fails.
///
/// The agent checks every file against its blake3 before it puts it in
/// place and answers for each operation: its tree is not fetched again to
/// check the result a second time.
pub async fn once(opts: SyncOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut local = open(&opts.local, &opts.excludes)?;
    if let Some(dir) = &opts.hash_cache {
        local = local.keep_hashes_in(dir);
    }
    let remote_filter = Ignores::load(&local.root, &opts.excludes);
    let root = local.root.clone();
    // Where to, and what is left out on both sides: another `--exclude`
    // may leave out what the agent has, with the same local tree.
    let to = format!("{}\n{:?}", opts.url, opts.excludes);
    // The local scan and the agent's manifest happen at the same time.
    let scan = tokio::task::spawn_blocking(move || {
        let found = local.scan();
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "scanned");
        (local, found)
    });
    let mut session = Session::open(&opts.url, &opts.token).await?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "connected");
    // The last run found both trees equal: when neither changed since,
    // there is nothing to fetch nor to compare.
    let last = opts
        .hash_cache
        .as_deref()
        .and_then(|dir| Equal::load(dir, &root, &to));
    let agent_unchanged = match &last {
        Some(last) => session.unchanged_since(&last.version).await?,
        None => false,
    };
    let fetch = async |session: &mut Session| -> anyhow::Result<()> {
        for w in session.fetch_manifest(&remote_filter, &Tree::new()).await? {
            eprintln!("lks: warning: {w}");
        }
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            entries = session.remote().len(),
            "fetched the manifest"
        );
        Ok(())
    };
    // Makes what the scan found the local tree (sorted, with the kept
    // hashes): only needed when the trees are compared.
    let adopt = |(mut local, found): (Source, Found)| {
        warn(local.take(found));
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "built the tree");
        local
    };
    let mut local = if agent_unchanged {
        let (mut local, found) = scan.await.context("the local scan failed")?;
        if last
            .as_ref()
            .is_some_and(|l| l.local == found.digest.to_string())
        {
            let mut warnings = local.warnings();
            warnings.extend(found.warnings);
            warn(warnings);
            println!("both sides unchanged since the last sync found them equal");
            println!(
                "synced: {}",
                summary(&Report::default(), started.elapsed().as_secs_f64() * 1000.0)
            );
            // The process ends now: freeing each entry would only delay it.
            std::mem::forget(found.entries);
            return Ok(());
        }
        fetch(&mut session).await?;
        adopt((local, found))
    } else {
        fetch(&mut session).await?;
        adopt(scan.await.context("the local scan failed")?)
    };
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "scanned and fetched the manifest"
    );
    if let Some(why) = local.safety_stop(session.remote()) {
        bail!("{why}");
    }
    let (ops, problems) = local.plan(session.remote());
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        ops = ops.len(),
        "planned"
    );
    let mut failures = problems;
    let mut report = Report::default();
    if let Some(dir) = &opts.hash_cache
        && last.is_some()
    {
        Equal::forget(dir, &root, &to);
    }
    // Nothing reads what the agent has once this run's batches are done.
    session.forget_confirmed();
    if !ops.is_empty() {
        let shown = show_progress(&mut session, "sync", crate::plan::files_in(&ops));
        report = session.apply(&local.tree, ops).await?;
        drop(shown);
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "applied");
        failures.extend(report.errors.iter().cloned());
    }
    // Both sides equal now, at the agent's version when it vouched for its
    // side (nothing but these batches changed it since the manifest).
    if failures.is_empty()
        && let Some(dir) = &opts.hash_cache
    {
        Equal {
            version: session.manifest_version.clone(),
            local: local.tree.digest().to_string(),
        }
        .save(dir, &root, &to);
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("lks: error: {f}");
        }
        bail!(
            "the agent's root is not equal to {} ({} problems above)",
            local.root.display(),
            failures.len()
        );
    }
    println!(
        "synced: {}",
        summary(&report, started.elapsed().as_secs_f64() * 1000.0)
    );
    Ok(())
}

/// Watch mode: sync, then apply each change as it happens, reconnecting with
/// backoff whenever the agent goes away. Returns on SIGINT/SIGTERM.
pub async fn watch(opts: SyncOptions) -> anyhow::Result<()> {
    let root = open(&opts.local, &opts.excludes)?.root.clone();
    let mut shutdown = shutdown_signal();
    // Between reconnection attempts: 100 ms doubling to 5 s.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut mirror: Option<Mirror> = None;
    let mut batch_no = 0u64;
    let mut last_boot: Option<String> = None;
    loop {
        let session = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            s = Session::open(&opts.url, &opts.token) => s,
        };
        let session = match session {
            Ok(s) => s,
            // A refused token is retried too: the agent may be restarted
            // with the right one (the message says what is wrong each time).
            Err(e) if e.is_retryable() || matches!(e, SessionError::Unauthenticated { .. }) => {
                let wait = backoff.next_delay();
                eprintln!("lks: {e}; retrying in {:.1}s", wait.as_secs_f64());
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
            Err(e) => return Err(e.into()),
        };
        match &last_boot {
            Some(b) if *b != session.boot_id => eprintln!("lks: the agent restarted; resyncing"),
            Some(_) => eprintln!("lks: reconnected; resyncing"),
            None => {}
        }
        last_boot = Some(session.boot_id.clone());
        let mirror = match &mut mirror {
            Some(m) => {
                m.reattach(vec![session]);
                m
            }
            None => mirror.insert(Mirror::watch(
                &root,
                vec![Part::new(
                    &root,
                    &crate::filter::Filter::excludes(&opts.excludes),
                    session,
                    opts.hash_cache.as_deref(),
                )],
            )?),
        };
        let started = Instant::now();
        match full_sync(mirror).await {
            Ok(report) => {
                println!(
                    "initial sync: {}",
                    summary(&report, started.elapsed().as_secs_f64() * 1000.0)
                );
                print_errors(&report, mirror);
                backoff.reset();
            }
            Err(e) if e.is_retryable() => {
                eprintln!("lks: {e}; reconnecting");
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        // The agent's events end when it goes away, also while nothing
        // changes here: then reconnect and resync against what the agent
        // that runs now has (a restarted one may have lost files).
        let mut events = match mirror.agent().events().await {
            Ok(e) => e,
            Err(e) if e.is_retryable() => {
                eprintln!("lks: {e}; reconnecting");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let agent_gone = async move { while events.next().await.is_some() {} };
        tokio::pin!(agent_gone);
        // Apply changes as they come.
        let mut was_gone = false;
        loop {
            let changes = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                () = &mut agent_gone => {
                    eprintln!("lks: the agent went away; reconnecting");
                    break;
                }
                c = mirror.changes() => match c {
                    Some(c) => c,
                    None => bail!("the file watcher stopped"),
                },
            };
            if std::mem::take(&mut was_gone) {
                eprintln!("lks: {} is back; resyncing", mirror.dir().display());
            }
            let pending = mirror.take(changes).await;
            warn(mirror.take_warnings());
            let plan = match pending {
                Pending::Planned(plan) => plan,
                Pending::Held(why) => {
                    eprintln!("lks: {why}");
                    continue;
                }
                Pending::Gone(why) => {
                    // The watch died with the directory: the mirror waits
                    // for it to come back.
                    eprintln!("lks: {why}");
                    was_gone = true;
                    continue;
                }
            };
            for p in &plan.problems {
                eprintln!("lks: warning: {p}");
            }
            if plan.is_empty() {
                continue;
            }
            batch_no += 1;
            let first_event = plan.changes.first_event;
            match mirror.apply(plan, Followup::default()).await {
                Ok(report) => {
                    let ms = first_event
                        .map(|t| t.elapsed().as_secs_f64() * 1000.0)
                        .unwrap_or(0.0);
                    println!("batch {batch_no}: {}", summary(&report, ms));
                    print_errors(&report, mirror);
                }
                Err(e) if e.is_retryable() => {
                    eprintln!("lks: {e}; reconnecting");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

async fn full_sync(mirror: &mut Mirror) -> Result<Report, SessionError> {
    let pending = mirror.resync(false).await?;
    warn(mirror.take_warnings());
    let plan = match pending {
        Pending::Planned(plan) => plan,
        Pending::Held(why) | Pending::Gone(why) => {
            eprintln!("lks: {why}");
            return Ok(Report::default());
        }
    };
    for p in &plan.problems {
        eprintln!("lks: warning: {p}");
    }
    let shown = show_progress(mirror.agent(), "initial sync", plan.files());
    let report = mirror.apply(plan, Followup::default()).await;
    mirror.agent().count_sent_in(None);
    drop(shown);
    report
}

/// Shows, on a terminal, what `session` sends of the `planned` files and
/// bytes, until the returned line is dropped.
fn show_progress(session: &mut Session, what: &'static str, planned: (u64, u64)) -> Option<Shown> {
    let sent = Arc::new(Sent::of(planned.0, planned.1));
    let shown = Shown::start(what, sent.clone());
    session.count_sent_in(shown.is_some().then_some(sent));
    shown
}

fn print_errors(report: &Report, mirror: &Mirror) {
    for e in &report.errors {
        eprintln!("lks: error: {e}");
    }
    if let Some(d) = mirror.retry_in() {
        eprintln!(
            "lks: trying the failed operations again in {:.1}s",
            d.as_secs_f64()
        );
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP received from now on: the handlers
/// are in place when this returns (call it before starting anything, or a
/// signal in between ends the process without its cleanup).
pub fn shutdown_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    // Its terminal closed.
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    Box::pin(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    })
}
