//! The supervised app of `lks-agent supervise`, as a job: one task owns the app
//! process and obeys a small control queue (restart, stop); everything else holds
//! an [`App`] handle. The app runs in a process group of its own, so stopping it
//! stops everything it started, not just its first process.
//!
//! An app that exits on its own is a crash: it is reported and started again
//! after a delay that doubles with each crash in a row (never a tight loop). A
//! restart asked for by a batch starts it at once and forgets the crashes.

use crate::children::{self, Children, Exit, WorkDir};
use crate::output::{self, Console, Origin};
use crate::root::Root;
use lks_proto::RelPath;
use lks_proto::v1::{AppExited, AppStarted, Event, Warning, event};
use rustix::process::Pid;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

/// Delay before the first restart after a crash; doubles with each crash in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest delay between two starts of a crashing app.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An app that stayed up this long had a fresh start: its crash count resets.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Under [`Start::AfterSync`], how long the app waits for a connected client's
/// first batch (a cold sync of a large tree) before it starts anyway.
const FIRST_BATCH_WAIT: Duration = Duration::from_secs(60);

/// What to run and how to stop it.
pub struct AppSpec {
    /// The command and its arguments; `argv[0]` is looked up in PATH.
    pub argv: Vec<String>,
    /// Its working directory (the root unless `--workdir` says otherwise).
    pub cwd: AppDir,
    /// How long it gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// When it first starts.
    pub start: Start,
}

/// The app's working directory.
pub enum AppDir {
    /// A directory beneath the root (the root itself for `None`), opened by
    /// the descriptor walk at every start: one swapped for a symlink is
    /// refused, the app never runs through it outside the root.
    InRoot {
        /// The root.
        root: Arc<Root>,
        /// The directory beneath it.
        dir: Option<RelPath>,
    },
    /// A path as `--workdir` gave it (relative: to the agent's own working
    /// directory; empty: not settled yet, the root). Outside the root it
    /// stays a path: the container's WORKDIR is not lks's to guard.
    Path(PathBuf),
}

impl AppDir {
    /// Whether no directory was named (the root is meant).
    pub fn is_unset(&self) -> bool {
        matches!(self, AppDir::Path(p) if p.as_os_str().is_empty())
    }

    /// The directory once the root is open: [`AppDir::InRoot`] when it lies
    /// beneath the root (compared by its components, without following
    /// symlinks), the path otherwise.
    pub fn settle(self, root: &Arc<Root>) -> AppDir {
        let AppDir::Path(path) = self else {
            return self;
        };
        let in_root = |dir| AppDir::InRoot {
            root: root.clone(),
            dir,
        };
        if path.as_os_str().is_empty() {
            return in_root(None);
        }
        let absolute = match std::env::current_dir() {
            Ok(cwd) if path.is_relative() => cwd.join(&path),
            _ => path.clone(),
        };
        let Ok(rest) = absolute.strip_prefix(root.path()) else {
            return AppDir::Path(path);
        };
        if rest.as_os_str().is_empty() {
            return in_root(None);
        }
        match rest.to_str().map(RelPath::new) {
            Some(Ok(dir)) => in_root(Some(dir)),
            _ => AppDir::Path(path),
        }
    }

    /// Opens the directory for one start of the app.
    fn open(&self) -> Result<WorkDir, String> {
        match self {
            AppDir::InRoot { root, dir } => WorkDir::beneath(root, dir.as_ref()),
            AppDir::Path(path) => Ok(WorkDir::Path(path.clone())),
        }
    }
}

/// When the app first starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At once.
    Now,
    /// Only when a batch asks for a restart (the first batch's steps may build it).
    OnRestart,
    /// With the first batch, whatever it asks, so the app never serves the
    /// image's stale files before lks synced them (a new pod). Bounded: when
    /// no client connects within `wait`, or a connected one sends no batch
    /// within [`FIRST_BATCH_WAIT`], the app starts anyway.
    AfterSync {
        /// How long to wait for a client to connect.
        wait: Duration,
    },
}

/// A handle on the supervised app.
#[derive(Clone)]
pub struct App {
    control: mpsc::Sender<Control>,
}

/// The control queue's commands.
enum Control {
    /// Stop the app (if running) and start it again; replies with the new pid.
    Restart {
        reply: oneshot::Sender<Result<u32, String>>,
    },
    /// Stop the app for good; replies once it is gone.
    Stop { reply: oneshot::Sender<()> },
    /// A batch was applied: an app held for the first sync starts now.
    Synced,
    /// A client connected: an app held for the first sync waits for its batch.
    Connected,
}

/// Why a restart did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// The supervisor has stopped (the agent is shutting down).
    #[error("the app is stopped: the agent is shutting down")]
    Stopped,
    /// The old process was stopped but the new one could not be started.
    #[error("the app could not be started again: {0}")]
    NotStarted(String),
}

impl App {
    /// Starts the app and the task that supervises it.
    pub fn start(
        spec: AppSpec,
        children: Children,
        events: broadcast::Sender<Event>,
        console: Console,
    ) -> App {
        let (control, rx) = mpsc::channel(8);
        let supervisor = Supervisor {
            spec,
            children,
            events,
            console,
            current: None,
            starts: 0,
            crashes: 0,
            retry_at: None,
            held: false,
        };
        tokio::spawn(supervisor.run(rx));
        App { control }
    }

    /// Stops the app (SIGTERM to its group, the grace period, SIGKILL) and starts
    /// it again at once; returns the new pid.
    pub async fn restart(&self) -> Result<u32, RestartError> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::Restart { reply })
            .await
            .map_err(|_| RestartError::Stopped)?;
        rx.await
            .map_err(|_| RestartError::Stopped)?
            .map_err(RestartError::NotStarted)
    }

    /// Tells the supervisor a batch was applied (see [`Start::AfterSync`]).
    pub async fn synced(&self) {
        let _ = self.control.send(Control::Synced).await;
    }

    /// Tells the supervisor a client connected (see [`Start::AfterSync`]).
    pub fn connected(&self) {
        // Best effort: a full queue means the supervisor is busy anyway.
        let _ = self.control.try_send(Control::Connected);
    }

    /// Stops the app for good; returns once it is gone.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.control.send(Control::Stop { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The running app process.
struct Running {
    pid: Pid,
    exit: Exit,
    started: Instant,
}

/// What woke the supervisor.
enum Wake {
    Control(Option<Control>),
    Exited(Option<ExitStatus>),
    RetryDue,
}

/// The task that owns the app process.
struct Supervisor {
    spec: AppSpec,
    children: Children,
    events: broadcast::Sender<Event>,
    console: Console,
    current: Option<Running>,
    /// Processes started so far.
    starts: u32,
    /// Crashes in a row.
    crashes: u32,
    /// When to start the app again after a crash, or (held for the first
    /// sync) at the latest.
    retry_at: Option<Instant>,
    /// The app waits for the first sync (see [`Start::AfterSync`]).
    held: bool,
}

impl Supervisor {
    async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        match self.spec.start {
            Start::Now => {
                let _ = self.start_app();
            }
            Start::OnRestart => {
                tracing::info!("the app starts with the first batch that asks for a restart")
            }
            Start::AfterSync { wait } => {
                tracing::info!(
                    "the app starts with the first batch (or in {:.1}s if no lks connects)",
                    wait.as_secs_f64()
                );
                self.held = true;
                self.retry_at = Some(Instant::now() + wait);
            }
        }
        loop {
            let wake = tokio::select! {
                cmd = control.recv() => Wake::Control(cmd),
                status = app_exit(&mut self.current) => Wake::Exited(status),
                () = retry_due(self.retry_at) => Wake::RetryDue,
            };
            match wake {
                Wake::Control(Some(Control::Restart { reply })) => {
                    let _ = reply.send(self.on_restart().await);
                }
                Wake::Control(Some(Control::Stop { reply })) => {
                    self.on_stop().await;
                    let _ = reply.send(());
                    return;
                }
                Wake::Control(Some(Control::Synced)) => self.on_synced(),
                Wake::Control(Some(Control::Connected)) => self.on_connected(),
                Wake::Control(None) => {
                    self.on_stop().await;
                    return;
                }
                Wake::Exited(status) => self.on_crash(status).await,
                Wake::RetryDue => self.on_retry_due(),
            }
        }
    }

    /// A batch asked for a restart: stop, forget the crashes, start now.
    async fn on_restart(&mut self) -> Result<u32, String> {
        self.retry_at = None;
        self.crashes = 0;
        self.stop_current().await;
        self.start_app()
    }

    /// A batch was applied: an app held for it starts.
    fn on_synced(&mut self) {
        if self.held {
            self.retry_at = None;
            let _ = self.start_app();
        }
    }

    /// A client connected: an app held for the first sync gives its batch
    /// time to arrive.
    fn on_connected(&mut self) {
        if self.held {
            self.retry_at = Some(Instant::now() + FIRST_BATCH_WAIT);
        }
    }

    /// The agent is shutting down.
    async fn on_stop(&mut self) {
        self.retry_at = None;
        self.stop_current().await;
    }

    /// The app exited on its own: report it, clear what it left in its group,
    /// and schedule the next start.
    async fn on_crash(&mut self, status: Option<ExitStatus>) {
        let Some(running) = self.current.take() else {
            return;
        };
        let exited_at = Instant::now();
        if running.started.elapsed() >= STABLE_AFTER {
            self.crashes = 0;
        }
        self.crashes += 1;
        let delay = backoff(self.crashes);
        let (exit_code, signal) = describe(status);
        tracing::warn!(
            pid = running.pid.as_raw_pid(),
            exit_code,
            signal,
            crashes_in_a_row = self.crashes,
            "the app exited; starting it again in {} ms",
            delay.as_millis()
        );
        self.emit(event::Kind::AppExited(AppExited {
            pid: running.pid.as_raw_pid() as u32,
            exit_code,
            signal,
            requested: false,
            restart_in_ms: delay.as_millis() as u64,
            crashes_in_a_row: self.crashes,
        }));
        // Its children may still run in its group (and hold its port).
        children::stop_group(running.pid, self.spec.grace).await;
        self.retry_at = Some(exited_at + delay);
    }

    fn on_retry_due(&mut self) {
        self.retry_at = None;
        if self.held {
            tracing::warn!("no batch from lks in time: starting the app with the files it has");
        }
        let _ = self.start_app();
    }

    /// Stops the running app, if any, and reports it as a requested exit.
    async fn stop_current(&mut self) {
        let Some(running) = self.current.take() else {
            return;
        };
        let pid = running.pid.as_raw_pid();
        tracing::info!(pid, "stopping the app");
        children::stop_group(running.pid, self.spec.grace).await;
        // The group is empty, so the app has been reaped; the bound only guards
        // against a process the kernel cannot kill.
        let status = tokio::time::timeout(Duration::from_secs(5), running.exit)
            .await
            .ok()
            .flatten();
        let (exit_code, signal) = describe(status);
        self.emit(event::Kind::AppExited(AppExited {
            pid: pid as u32,
            exit_code,
            signal,
            requested: true,
            restart_in_ms: 0,
            crashes_in_a_row: 0,
        }));
    }

    /// Starts the app; on failure, schedules another try as after a crash.
    fn start_app(&mut self) -> Result<u32, String> {
        self.held = false;
        let spawned = self.spec.cwd.open().and_then(|cwd| {
            let mut cmd = children::command(&self.spec.argv, &cwd, []);
            self.children
                .spawn(&mut cmd)
                .map_err(|e| children::spawn_error(&self.spec.argv[0], &e))
        });
        match spawned {
            Ok(spawned) => {
                let pid = spawned.pid.as_raw_pid() as u32;
                output::capture(
                    spawned.stdout,
                    spawned.stderr,
                    Origin::App(self.console.clone()),
                    self.events.clone(),
                );
                tracing::info!(pid, restarts = self.starts, "app started");
                self.emit(event::Kind::AppStarted(AppStarted {
                    pid,
                    restarts: self.starts,
                    argv: self.spec.argv.clone(),
                }));
                self.starts += 1;
                self.current = Some(Running {
                    pid: spawned.pid,
                    exit: spawned.exit,
                    started: Instant::now(),
                });
                Ok(pid)
            }
            Err(why) => {
                self.crashes += 1;
                let delay = backoff(self.crashes);
                let message = format!(
                    "cannot start the app: {why}; trying again in {} ms",
                    delay.as_millis()
                );
                tracing::warn!("{message}");
                self.emit(event::Kind::Warning(Warning { message }));
                self.retry_at = Some(Instant::now() + delay);
                Err(why)
            }
        }
    }

    fn emit(&self, kind: event::Kind) {
        let _ = self.events.send(Event { kind: Some(kind) });
    }
}

/// Resolves when the running app exits; never if there is none.
async fn app_exit(current: &mut Option<Running>) -> Option<ExitStatus> {
    match current {
        Some(running) => (&mut running.exit).await,
        None => std::future::pending().await,
    }
}

/// Resolves when a scheduled start is due; never if none is.
async fn retry_due(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The delay before the next start after `crashes` crashes in a row.
fn backoff(crashes: u32) -> Duration {
    let doublings = crashes.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// (exit code or -1, signal or 0), as `AppExited` spells them.
fn describe(status: Option<ExitStatus>) -> (i32, i32) {
    match status {
        Some(s) => (s.code().unwrap_or(-1), s.signal().unwrap_or(0)),
        None => (-1, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_200_ms_up_to_10_s() {
        let delays: Vec<u128> = (1..=9).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
