//! Host-side resources (`host:` in a service; what Tilt's `local_resource`
//! is for): a service without a runtime whose commands lks runs on the host
//! itself, whatever the runtime, reporting through the same typed events as
//! any service (so the console, the board, `lks status|logs|ci` and the
//! page see it as one).
//!
//! A small state machine in the shape of the agent's `supervise.rs`: after
//! its dependencies are ready, it runs its `run` commands in order (a
//! failure is an error status, the rest are not run), then starts its
//! `serve` process (restarted with backoff when it exits by itself, as the
//! agent restarts an app) and waits for its readiness check; then it is
//! ready and its dependents start. A change of a watched file runs it again;
//! in manual mode (`manual: true`, or `lks manual` through its
//! [`Steer`]) the change waits until triggered, and `lks trigger` runs it
//! then (with nothing waiting, the fleet starts it anew, which runs it too).
//! `lks restart` restarts its `serve` alone. A re-run keeps the old `serve`
//! running until the commands succeeded.
//!
//! - [`process`]: one process (a command, the serve), its group and output.
//! - [`watched`]: the globs that run it again.

mod process;
mod watched;

pub use process::Leftovers;

use super::State;
use crate::backoff::Backoff;
use crate::config::{Host, Service};
use crate::events::{Event, Reporter, Status};
use crate::steer::{Asks, LiveGuard, Steer};
use process::{Process, Role};
use std::collections::BTreeSet;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use watched::Watched;

/// A serve process up this long was healthy: the next crash is restarted
/// after the shortest delay again (as the agent does for an app).
const HEALTHY: Duration = Duration::from_secs(10);

/// Runs the host resource `service` (which has `host:`) until its task is
/// aborted; the processes it lets go of then are in `leftovers`. `steer` is
/// the hand on it (manual mode, trigger, restart of the serve alone).
pub async fn run(
    service: Service,
    to: Reporter,
    deps: Vec<(String, watch::Receiver<State>)>,
    state: Arc<watch::Sender<State>>,
    leftovers: Leftovers,
    steer: Arc<Steer>,
) {
    let Some(host) = service.host.clone() else {
        return;
    };
    // It runs on this machine: every service is reached where its ports
    // are, on 127.0.0.1 (published or forwarded there by every runtime).
    let service = Service {
        env: crate::runtime::expand_env(&service.env, |_| "127.0.0.1".into()),
        ..service
    };
    // `manual: true` is its mode until someone switches it by hand.
    if host.manual && *steer.subscribe().borrow() == Asks::default() {
        steer.set_manual(true);
        to.send(Event::TriggerMode { manual: true });
    }
    for (name, mut rx) in deps {
        to.status(Status::Waiting(name.clone()));
        let _ = rx.wait_for(|s| *s == State::Ready).await;
    }
    let span = tracing::info_span!("host", name = %service.name);
    let asks = steer.subscribe();
    let resource = Resource {
        steer,
        asks,
        waiting: BTreeSet::new(),
        service,
        host,
        to,
        state,
        leftovers,
        watched: None,
        serve: None,
        serve_due: None,
        serve_backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
        restarts: 0,
        crashes: 0,
        served_since: Instant::now(),
    };
    tracing::Instrument::instrument(resource.run(), span).await
}

/// What wakes a resource up.
enum Wake {
    /// Watched files changed (these paths).
    Changed(Vec<String>),
    /// Its serve process exited without being asked to.
    ServeExited(std::io::Result<ExitStatus>),
    /// Time to start the serve process again after it exited.
    ServeDue,
    /// Someone asked something of it by hand (what has been asked so far).
    Asked(Asks),
}

/// A failed command of `run`.
struct Failed {
    cmd: String,
    failure: String,
    output_tail: String,
}

struct Resource {
    steer: Arc<Steer>,
    /// What has been asked of it by hand; `borrow()` is what was seen.
    asks: watch::Receiver<Asks>,
    /// Changed paths that wait for a trigger (manual mode).
    waiting: BTreeSet<String>,
    service: Service,
    host: Host,
    to: Reporter,
    state: Arc<watch::Sender<State>>,
    leftovers: Leftovers,
    watched: Option<Watched>,
    serve: Option<Process>,
    /// When the serve process is to start again after it exited.
    serve_due: Option<tokio::time::Instant>,
    serve_backoff: Backoff,
    /// How many times the serve process started again.
    restarts: u32,
    /// Its exits in a row.
    crashes: u32,
    served_since: Instant,
}

impl Resource {
    async fn run(mut self) {
        // Watching first: an edit during the first run is not missed.
        match Watched::start(&self.service, &self.host) {
            Ok(w) => self.watched = w,
            Err(e) => self.to.send(Event::Warning(format!(
                "cannot watch {}: {e}; changes do not run it again",
                self.service.dir.display()
            ))),
        }
        // With a serve, `lks restart` restarts it alone.
        // A new life: nothing waits for a trigger (any more).
        if self.steer.held() > 0 {
            self.steer.set_held(0);
            self.to.send(Event::ChangesWaiting(0));
        }
        let steer = self.steer.clone();
        let _live = (!self.host.serve.is_empty()).then(|| LiveGuard::new(&steer));
        let mut seen = self.asks.borrow_and_update().clone();
        self.update().await;
        loop {
            match self.next().await {
                Wake::Changed(paths) => self.on_change(paths, seen.manual).await,
                Wake::ServeExited(status) => self.on_serve_exit(status),
                Wake::ServeDue => self.on_serve_due().await,
                Wake::Asked(now) => {
                    self.on_asked(&seen, &now).await;
                    seen = now;
                }
            }
        }
    }

    async fn next(&mut self) -> Wake {
        let due = self.serve_due;
        tokio::select! {
            paths = changed(&mut self.watched) => Wake::Changed(paths),
            status = exited(&mut self.serve) => Wake::ServeExited(status),
            () = until(due) => Wake::ServeDue,
            Ok(()) = self.asks.changed() => Wake::Asked(self.asks.borrow_and_update().clone()),
        }
    }

    /// Runs its commands; once they succeeded, (re)starts its serve process
    /// and waits for its readiness.
    async fn update(&mut self) {
        let _ = self.state.send(State::Pending);
        self.to.status(Status::Building);
        let started = Instant::now();
        if let Err(f) = self.run_commands().await {
            let keeps_previous = self.serve.is_some();
            self.to.send(Event::StepFailed {
                cmd: f.cmd.clone(),
                failure: f.failure.clone(),
                output_tail: f.output_tail,
                keeps_previous,
            });
            let why = format!("`{}` failed: {}", f.cmd, f.failure);
            self.to.status(Status::Error(why.clone()));
            let _ = self.state.send(State::Failed(why));
            return;
        }
        if !self.host.run.is_empty() {
            self.to.send(Event::Progress(format!(
                "ran {} command(s) in {} ms",
                self.host.run.len(),
                started.elapsed().as_millis()
            )));
        }
        if !self.host.serve.is_empty() {
            if let Some(mut old) = self.serve.take() {
                self.to.status(Status::Restarting);
                old.stop().await;
                self.restarts += 1;
            }
            self.serve_due = None;
            self.crashes = 0;
            self.serve_backoff.reset();
            if !self.start_serve() {
                return;
            }
        }
        self.check_readiness().await;
    }

    /// The commands of `run`, in order, until one fails.
    async fn run_commands(&mut self) -> Result<(), Failed> {
        for argv in self.host.run.clone() {
            let cmd = shell_words::join(&argv);
            self.to.status(Status::RunningStep(cmd.clone()));
            let spawned =
                Process::spawn(&self.service, &argv, Role::Run, &self.to, &self.leftovers);
            let mut p = spawned.map_err(|e| Failed {
                cmd: cmd.clone(),
                failure: format!("cannot start it: {e}"),
                output_tail: String::new(),
            })?;
            let failure = match p.wait().await {
                Ok(status) if status.success() => continue,
                Ok(status) => process::how(status),
                Err(e) => e.to_string(),
            };
            return Err(Failed {
                cmd,
                failure,
                output_tail: p.tail(),
            });
        }
        Ok(())
    }

    /// Starts the serve process; false (the error reported) when it cannot.
    /// A port it is to listen on that another process holds is named with
    /// that process, and the start tried again later (never ready behind it).
    fn start_serve(&mut self) -> bool {
        let ports = crate::ports::of_local_service(&self.service);
        if let Err(e) = crate::runtime::RuntimeError::check_ports(&self.service, &ports) {
            let why = e.to_string();
            let delay = self.serve_backoff.next_delay();
            self.to.status(Status::Error(why.clone()));
            let _ = self.state.send(State::Failed(why));
            self.to.send(Event::Retrying(delay));
            self.serve_due = Some(tokio::time::Instant::now() + delay);
            return false;
        }
        match Process::spawn(
            &self.service,
            &self.host.serve,
            Role::Serve,
            &self.to,
            &self.leftovers,
        ) {
            Ok(p) => {
                self.to.send(Event::AppStarted {
                    pid: p.pid,
                    restarts: self.restarts,
                });
                self.served_since = Instant::now();
                self.serve = Some(p);
                true
            }
            Err(e) => {
                let why = format!(
                    "cannot start `{}`: {e}",
                    shell_words::join(&self.host.serve)
                );
                self.to.status(Status::Error(why.clone()));
                let _ = self.state.send(State::Failed(why));
                false
            }
        }
    }

    /// Its readiness check (none: ready now), given up on if the serve
    /// process exits meanwhile.
    async fn check_readiness(&mut self) {
        let Some(readiness) = self.service.readiness.clone() else {
            return self.ready();
        };
        self.to.status(Status::CheckingReadiness);
        let mut here = OnHost(&self.service);
        let result = tokio::select! {
            r = crate::readiness::wait(&readiness, &mut here) => r,
            status = exited(&mut self.serve) => return self.on_serve_exit(status),
        };
        match result {
            Ok(_) => self.ready(),
            Err(why) => {
                self.to.status(Status::Error(why.clone()));
                let _ = self.state.send(State::Failed(why));
            }
        }
    }

    fn ready(&self) {
        self.to.status(Status::Ready);
        let _ = self.state.send(State::Ready);
    }

    /// Watched files changed: run it again, or (manual) say they wait.
    async fn on_change(&mut self, paths: Vec<String>, manual: bool) {
        let shown = shown(&paths);
        if manual {
            self.to.send(Event::Progress(format!(
                "changed: {shown}; waits for `lks trigger {}`",
                self.service.name
            )));
            self.waiting.extend(paths);
            self.steer.set_held(self.waiting.len());
            self.to.send(Event::ChangesWaiting(self.waiting.len()));
            return;
        }
        self.to.send(Event::Progress(format!(
            "changed: {shown}; running it again"
        )));
        self.update().await;
    }

    /// What was asked by hand since `seen`: run it for the changes that
    /// waited (a trigger, or manual mode switched off); restart its serve
    /// alone.
    async fn on_asked(&mut self, seen: &Asks, now: &Asks) {
        if now.release > seen.release && !self.waiting.is_empty() {
            let paths: Vec<String> = std::mem::take(&mut self.waiting).into_iter().collect();
            self.steer.set_held(0);
            self.to.send(Event::ChangesWaiting(0));
            self.to.send(Event::Progress(format!(
                "triggered: {}; running it again",
                shown(&paths)
            )));
            return self.update().await;
        }
        if now.restart > seen.restart
            && let Some(mut old) = self.serve.take()
        {
            self.to.status(Status::Restarting);
            old.stop().await;
            self.restarts += 1;
            self.serve_due = None;
            if self.start_serve() {
                self.check_readiness().await;
            }
        }
    }

    /// The serve process exited by itself: reported, started again after a
    /// delay that doubles with each exit in a row.
    fn on_serve_exit(&mut self, status: std::io::Result<ExitStatus>) {
        self.serve = None;
        if self.served_since.elapsed() >= HEALTHY {
            self.serve_backoff.reset();
            self.crashes = 0;
        }
        self.crashes += 1;
        let delay = self.serve_backoff.next_delay();
        let how = match status {
            Ok(s) => process::how(s),
            Err(e) => e.to_string(),
        };
        self.to.send(Event::AppExited {
            how,
            crashes_in_a_row: self.crashes,
            restart_in_ms: delay.as_millis() as u64,
        });
        let _ = self.state.send(State::Pending);
        if self.crashes >= 3 {
            self.to.status(Status::Error(format!(
                "crash loop: {} crashes in a row",
                self.crashes
            )));
        }
        self.serve_due = Some(tokio::time::Instant::now() + delay);
    }

    async fn on_serve_due(&mut self) {
        self.serve_due = None;
        self.restarts += 1;
        self.to.status(Status::Restarting);
        if self.start_serve() {
            self.check_readiness().await;
        }
    }
}

/// The next watched change; never without a watch.
async fn changed(watched: &mut Option<Watched>) -> Vec<String> {
    match watched {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// The exit of the serve process; never without one.
async fn exited(serve: &mut Option<Process>) -> std::io::Result<ExitStatus> {
    match serve {
        Some(p) => p.wait().await,
        None => std::future::pending().await,
    }
}

async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// At most a few changed paths, for a line.
fn shown(paths: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut s = paths[..paths.len().min(SHOWN)].join(", ");
    if paths.len() > SHOWN {
        s.push_str(&format!(" and {} more", paths.len() - SHOWN));
    }
    s
}

/// An `exec` readiness check, run on the host as the resource's commands
/// are (its output is not the user's business); 10 s at most.
/// A host resource's checks run here.
struct OnHost<'a>(&'a Service);

impl crate::readiness::Where for OnHost<'_> {
    async fn exec(&mut self, argv: Vec<String>) -> Result<(), String> {
        exec(self.0, argv).await
    }

    async fn connect(&mut self, _: u16) -> Option<Result<(), String>> {
        None
    }
}

async fn exec(service: &Service, argv: Vec<String>) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("an empty command".into());
    };
    let status = tokio::process::Command::new(program)
        .args(args)
        .current_dir(&service.dir)
        .envs(&service.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(10), status).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!(
            "`{}` failed ({})",
            shell_words::join(&argv),
            process::how(s)
        )),
        Ok(Err(e)) => Err(format!("cannot run `{}`: {e}", shell_words::join(&argv))),
        Err(_) => Err(format!("`{}` timed out", shell_words::join(&argv))),
    }
}
