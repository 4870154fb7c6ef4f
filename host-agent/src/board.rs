//! The board: what a running `lks up` knows of each service, folded from the
//! same typed events the console renders: its status, where it runs, its app's
//! restarts, its last sync, its errors, and its recent log lines (a bounded
//! buffer each). `api.rs` serves it; `lks status` and `lks logs` read it.

use crate::events::{Event, Status, SyncKind};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Log lines kept per service, at most.
pub const LOG_LINES: usize = 2000;

/// Bytes of log text kept for all services together: each keeps its share
/// (at least [`MIN_LOG_BYTES`]), so 300 chatty services cannot take lks past
/// its memory budget.
pub const LOG_BYTES: usize = 24 << 20;

/// The smallest share of [`LOG_BYTES`] a service keeps.
pub const MIN_LOG_BYTES: usize = 64 << 10;

/// Numbers every log line of the run, in order (for `lks logs -f`).
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Where a log line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// lks itself (statuses, syncs, errors).
    Lks,
    /// A build or live-update step.
    Step,
    /// The app.
    App,
}

impl Source {
    /// Its name, as the API writes it.
    pub fn name(self) -> &'static str {
        match self {
            Source::Lks => "lks",
            Source::Step => "step",
            Source::App => "app",
        }
    }
}

/// One log line.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// Its number in the run (increasing across services).
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who said it.
    pub source: Source,
    /// What was said.
    pub text: String,
}

/// The last sync of a service.
#[derive(Debug, Clone, Serialize)]
pub struct LastSync {
    /// When it ended, in ms since the Unix epoch.
    pub at_ms: u64,
    /// `first`, `rebuilt` or `batch`.
    pub kind: &'static str,
    /// Files written.
    pub files: usize,
    /// Paths deleted.
    pub deleted: usize,
    /// How long it took.
    pub ms: u64,
    /// Some of the paths it changed (a batch's).
    pub paths: Vec<String>,
}

/// What the board knows of one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceState {
    /// Its name.
    pub name: String,
    /// Its status as the console shows it (`ready`, `error: ...`).
    pub status: String,
    /// Where its updates are: `pending`, `building`, `syncing`,
    /// `running step`, `ok`, `error`.
    pub update: &'static str,
    /// Where what runs is: `waiting for deps`, `starting`, `restarting`,
    /// `ready`, `crash loop`, `error`, `stopped`, `disabled`.
    pub runtime: &'static str,
    /// Its group in the page: the smallest alias it is in, or none.
    pub group: Option<String>,
    /// What it depends on.
    pub deps: Vec<String>,
    /// Its declared ports, reached on 127.0.0.1 (forwarded from containers
    /// and pods).
    pub endpoints: Vec<String>,
    /// Changes wait for a trigger.
    pub manual: bool,
    /// How many changed paths wait for a trigger.
    pub waiting: usize,
    /// When what runs now was started, in ms since the Unix epoch.
    pub started_ms: Option<u64>,
    /// The board's tick at its last change (for deltas).
    pub version: u64,
    /// Whether it is ready.
    pub ready: bool,
    /// Since when it has its status, in ms since the Unix epoch.
    pub since_ms: u64,
    /// Its agent's pid (local runtime).
    pub agent_pid: Option<u32>,
    /// Its app's pid, when the agent reported it.
    pub app_pid: Option<u32>,
    /// Where its files live (a path, a container, a pod).
    pub location: Option<String>,
    /// How many times its app restarted.
    pub restarts: u32,
    /// Errors seen since `lks up` started.
    pub errors: u32,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The last sync.
    pub last_sync: Option<LastSync>,
    #[serde(skip)]
    logs: VecDeque<Line>,
    #[serde(skip)]
    log_bytes: usize,
    #[serde(skip)]
    log_budget: usize,
}

/// Every service of the run, in launch order.
#[derive(Debug, Default)]
pub struct Board {
    order: Vec<String>,
    services: BTreeMap<String, ServiceState>,
    /// The first failure of the run: the service and what failed.
    first_failure: Option<(String, String)>,
    /// Counts the changes; watched by the API's streams.
    tick: Tick,
}

/// What a change of the board touched.
enum Changed<'a> {
    /// Only log lines were added.
    Lines,
    /// One service's state.
    Service(&'a str),
    /// Every service's.
    All,
}

/// The board's change counter, which the streams of the API wait on.
#[derive(Debug)]
struct Tick(watch::Sender<u64>);

impl Default for Tick {
    fn default() -> Tick {
        Tick(watch::channel(0).0)
    }
}

/// The board, shared by the console that fills it and the API that reads it.
pub type Shared = Arc<Mutex<Board>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ServiceState {
    fn new(name: &str) -> ServiceState {
        ServiceState {
            name: name.to_string(),
            status: Status::Waiting("its turn".into()).to_string(),
            update: "pending",
            runtime: "waiting for deps",
            group: None,
            deps: Vec::new(),
            endpoints: Vec::new(),
            manual: false,
            waiting: 0,
            started_ms: None,
            version: 0,
            ready: false,
            since_ms: now_ms(),
            agent_pid: None,
            app_pid: None,
            location: None,
            restarts: 0,
            errors: 0,
            last_error: None,
            last_sync: None,
            logs: VecDeque::new(),
            log_bytes: 0,
            log_budget: LOG_BYTES,
        }
    }

    fn log(&mut self, source: Source, text: String) {
        self.log_bytes += text.len();
        self.logs.push_back(Line {
            seq: SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            at_ms: now_ms(),
            source,
            text,
        });
        self.trim();
    }

    /// Drops the oldest lines past the line and byte budgets.
    fn trim(&mut self) {
        while self.logs.len() > LOG_LINES
            || (self.log_bytes > self.log_budget && self.logs.len() > 1)
        {
            if let Some(l) = self.logs.pop_front() {
                self.log_bytes -= l.text.len();
            }
        }
    }

    /// Where its updates and what runs are after `event`.
    fn phases(&mut self, event: &Event) {
        match event {
            Event::Status(status) => match status {
                Status::Waiting(_) => (self.update, self.runtime) = ("pending", "waiting for deps"),
                Status::Starting => {
                    self.runtime = "starting";
                    self.started_ms = Some(now_ms());
                }
                Status::Building => self.update = "building",
                Status::Syncing => self.update = "syncing",
                Status::RunningStep(_) => self.update = "running step",
                Status::Restarting => self.runtime = "restarting",
                Status::CheckingReadiness => {
                    if self.runtime != "crash loop" {
                        self.runtime = "starting";
                    }
                    if self.update != "error" {
                        self.update = "ok";
                    }
                }
                Status::Ready => (self.update, self.runtime) = ("ok", "ready"),
                // A crash loop is the runtime's error, not the update's.
                Status::Error(_) if self.runtime == "crash loop" => {}
                Status::Error(_) => {
                    self.update = "error";
                    if self.runtime != "ready" {
                        self.runtime = "error";
                    }
                }
                Status::Stopped => self.runtime = "stopped",
                Status::Disabled => self.runtime = "disabled",
            },
            Event::Synced { .. } if self.update != "error" => self.update = "ok",
            Event::StepFailed { .. } | Event::SyncError(_) => self.update = "error",
            Event::AppExited {
                crashes_in_a_row, ..
            } => {
                self.runtime = if *crashes_in_a_row >= 2 {
                    "crash loop"
                } else {
                    "restarting"
                }
            }
            _ => {}
        }
    }

    fn error(&mut self, text: String) {
        self.errors += 1;
        self.last_error = Some(text);
    }
}

impl Board {
    /// A board for the services of a run.
    pub fn new(order: &[String]) -> Board {
        let mut board = Board {
            order: order.to_vec(),
            services: order
                .iter()
                .map(|s| (s.clone(), ServiceState::new(s)))
                .collect(),
            first_failure: None,
            tick: Tick::default(),
        };
        board.share_log_budget();
        board
    }

    /// What the workspace says of each service: its group, deps and
    /// endpoints.
    pub fn describe(&mut self, ws: &crate::config::Workspace) {
        // A reload's removed services leave the board.
        self.services
            .retain(|name, _| ws.services.contains_key(name));
        self.order.retain(|name| ws.services.contains_key(name));
        for (name, service) in &ws.services {
            let Some(s) = self.services.get_mut(name) else {
                continue;
            };
            s.group = group_of(ws, name);
            s.deps = service.deps.clone();
            s.endpoints = service
                .ports
                .iter()
                .map(|p| format!("http://127.0.0.1:{p}/"))
                .collect();
        }
        self.bump(Changed::All);
    }

    /// Counts a change (of `service`, when it is one service's).
    fn bump(&mut self, changed: Changed) {
        self.tick.0.send_modify(|t| *t += 1);
        let tick = *self.tick.0.borrow();
        match changed {
            Changed::Lines => {}
            Changed::Service(name) => {
                if let Some(s) = self.services.get_mut(name) {
                    s.version = tick;
                }
            }
            Changed::All => self.services.values_mut().for_each(|s| s.version = tick),
        }
    }

    /// The tick now, and a receiver that wakes at every change.
    pub fn watch(&self) -> (u64, watch::Receiver<u64>) {
        (*self.tick.0.borrow(), self.tick.0.subscribe())
    }

    /// The services changed after tick `since`, in launch order.
    pub fn changed_since(&self, since: u64) -> Vec<&ServiceState> {
        self.states()
            .into_iter()
            .filter(|s| s.version > since)
            .collect()
    }

    /// The number of the last log line written.
    pub fn last_seq() -> u64 {
        SEQ.load(std::sync::atomic::Ordering::Relaxed) - 1
    }

    fn service(&mut self, name: &str) -> &mut ServiceState {
        if !self.services.contains_key(name) {
            self.order.push(name.to_string());
            self.services
                .insert(name.to_string(), ServiceState::new(name));
            self.share_log_budget();
        }
        self.services.get_mut(name).expect("inserted")
    }

    /// Gives each service its share of [`LOG_BYTES`].
    fn share_log_budget(&mut self) {
        let share = (LOG_BYTES / self.services.len().max(1)).max(MIN_LOG_BYTES);
        for s in self.services.values_mut() {
            s.log_budget = share;
            s.trim();
        }
    }

    /// Folds one event of `service` in.
    pub fn record(&mut self, service: &str, event: &Event) {
        self.fold(service, event);
        // A line of output is a new line, not a new state: deltas carry
        // only the services whose state changed.
        let output = matches!(event, Event::AppOutput(_) | Event::StepOutput(_));
        self.bump(match output {
            true => Changed::Lines,
            false => Changed::Service(service),
        });
    }

    fn fold(&mut self, service: &str, event: &Event) {
        if self.first_failure.is_none()
            && let Some(why) = failure(event)
        {
            self.first_failure = Some((service.to_string(), why));
        }
        let s = self.service(service);
        s.phases(event);
        match event {
            Event::Status(status) => {
                let text = status.to_string();
                if s.status != text {
                    s.status = text.clone();
                    s.since_ms = now_ms();
                    s.ready = *status == Status::Ready;
                    if let Status::Error(e) = status {
                        s.error(e.clone());
                    }
                    s.log(Source::Lks, format!("[{text}]"));
                }
                return;
            }
            Event::AgentStarted { pid, location, .. } => {
                s.agent_pid = *pid;
                s.location = Some(location.clone());
            }
            Event::AppStarted { pid, restarts } => {
                s.app_pid = Some(*pid);
                s.restarts = *restarts;
            }
            Event::Synced { kind, summary, ms } => {
                s.last_sync = Some(LastSync {
                    at_ms: now_ms(),
                    kind: match kind {
                        SyncKind::First => "first",
                        SyncKind::Rebuilt => "rebuilt",
                        SyncKind::Batch => "batch",
                    },
                    files: summary.files,
                    deleted: summary.deleted,
                    ms: *ms as u64,
                    paths: summary.paths.clone(),
                });
            }
            Event::TriggerMode { manual } => s.manual = *manual,
            Event::ChangesWaiting(n) => s.waiting = *n,
            Event::SyncError(e) => s.error(e.clone()),
            Event::StepFailed {
                cmd,
                failure,
                output_tail,
                ..
            } => {
                s.error(format!("`{cmd}` {failure}"));
                s.log(Source::Lks, crate::console::describe(event));
                for line in output_tail.lines() {
                    s.log(Source::Step, line.to_string());
                }
                return;
            }
            Event::StepOutput(line) => return s.log(Source::Step, line.clone()),
            Event::AppOutput(line) => return s.log(Source::App, line.clone()),
            _ => {}
        }
        s.log(Source::Lks, crate::console::describe(event));
    }

    /// The first failure of the run, if any: the service and what failed.
    pub fn first_failure(&self) -> Option<(&str, &str)> {
        self.first_failure
            .as_ref()
            .map(|(s, why)| (s.as_str(), why.as_str()))
    }

    /// The services not ready now, in launch order.
    pub fn not_ready(&self) -> Vec<String> {
        self.states()
            .into_iter()
            .filter(|s| !s.ready)
            .map(|s| s.name.clone())
            .collect()
    }

    /// Every service, in launch order.
    pub fn states(&self) -> Vec<&ServiceState> {
        self.order
            .iter()
            .filter_map(|n| self.services.get(n))
            .collect()
    }

    /// The last `tail` log lines of `service` (None: no such service).
    pub fn logs(&self, service: &str, tail: usize) -> Option<Vec<Line>> {
        let s = self.services.get(service)?;
        let skip = s.logs.len().saturating_sub(tail);
        Some(s.logs.iter().skip(skip).cloned().collect())
    }

    /// The log lines of `services` (every service when empty) numbered
    /// after `after` and written at or after `since_ms`, in order, the last
    /// `tail` of them, each with its service. Err: a name that is not a
    /// service of the run.
    pub fn lines(
        &self,
        services: &[String],
        after: u64,
        since_ms: u64,
        tail: usize,
    ) -> Result<Vec<(&str, &Line)>, String> {
        let chosen: Vec<&ServiceState> = if services.is_empty() {
            self.states()
        } else {
            services
                .iter()
                .map(|n| {
                    self.services
                        .get(n)
                        .ok_or_else(|| format!("no service {n:?} in this run"))
                })
                .collect::<Result<_, _>>()?
        };
        let mut out: Vec<(&str, &Line)> = chosen
            .iter()
            .flat_map(|s| {
                // Numbered in order: the lines after `after` are a suffix.
                let first = s.logs.partition_point(|l| l.seq <= after);
                s.logs
                    .range(first..)
                    .filter(|l| l.at_ms >= since_ms)
                    .map(move |l| (s.name.as_str(), l))
            })
            .collect();
        out.sort_by_key(|(_, l)| l.seq);
        let skip = out.len().saturating_sub(tail);
        out.drain(..skip);
        Ok(out)
    }
}

/// Log lines with their services, as the API gives them: `{service, seq,
/// at_ms, source, text}`.
pub fn lines_json(lines: &[(&str, &Line)]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|(service, l)| {
            serde_json::json!({
                "service": service,
                "seq": l.seq,
                "at_ms": l.at_ms,
                "source": l.source,
                "text": l.text,
            })
        })
        .collect()
}

/// The smallest alias `name` is in (through aliases of aliases), or none.
fn group_of(ws: &crate::config::Workspace, name: &str) -> Option<String> {
    fn members(ws: &crate::config::Workspace, alias: &str, depth: usize) -> Vec<String> {
        let Some(names) = ws.aliases.get(alias) else {
            return vec![alias.to_string()];
        };
        if depth > 32 {
            return Vec::new();
        }
        names
            .iter()
            .flat_map(|n| members(ws, n, depth + 1))
            .collect()
    }
    ws.aliases
        .keys()
        .map(|a| (members(ws, a, 0), a))
        .filter(|(m, _)| m.iter().any(|n| n == name))
        .min_by_key(|(m, _)| m.len())
        .map(|(_, a)| a.clone())
}

/// What `event` says failed, if it is a failure: a status of error (a start
/// or build that failed, a readiness check that timed out), a failing step,
/// an app that exited without being asked to.
fn failure(event: &Event) -> Option<String> {
    match event {
        Event::Status(Status::Error(e)) => Some(e.clone()),
        Event::StepFailed { cmd, failure, .. } => Some(format!("step `{cmd}` failed ({failure})")),
        Event::AppExited { how, .. } => Some(format!("the app exited with {how}")),
        Event::SyncError(e) => Some(format!("sync error: {e}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_carry_the_services_whose_state_changed_not_those_that_only_logged() {
        let mut b = Board::new(&["a".into(), "b".into()]);
        let (t0, _) = b.watch();
        b.record("a", &Event::Status(Status::Ready));
        b.record("b", &Event::AppOutput("hello".into()));
        let (t1, _) = b.watch();
        assert!(t1 > t0, "the tick counts every change");
        let names: Vec<&str> = b
            .changed_since(t0)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["a"]);
        assert!(b.changed_since(t1).is_empty());
        assert_eq!(b.lines(&[], 0, 0, 10).unwrap().len(), 2);
    }

    #[test]
    fn events_fold_into_each_services_state_and_logs() {
        let mut b = Board::new(&["api".into(), "web".into()]);
        b.record("web", &Event::Status(Status::Starting));
        b.record(
            "web",
            &Event::AgentStarted {
                pid: Some(41),
                at: "http://127.0.0.1:1".into(),
                location: ".lks/web/root".into(),
            },
        );
        b.record(
            "web",
            &Event::AppStarted {
                pid: 42,
                restarts: 3,
            },
        );
        b.record("web", &Event::AppOutput("listening".into()));
        b.record("web", &Event::Status(Status::Error("boom".into())));
        b.record("web", &Event::Status(Status::Ready));
        let names: Vec<&str> = b.states().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        let web = b.states()[1].clone();
        assert_eq!(web.status, "ready");
        assert!(web.ready);
        assert_eq!(
            (web.agent_pid, web.app_pid, web.restarts),
            (Some(41), Some(42), 3)
        );
        assert_eq!((web.errors, web.last_error.as_deref()), (1, Some("boom")));
        let logs = b.logs("web", 100).unwrap();
        assert!(
            logs.iter()
                .any(|l| l.source == Source::App && l.text == "listening")
        );
        assert_eq!(b.logs("web", 1).unwrap().len(), 1);
        assert!(b.logs("nope", 1).is_none());
    }

    #[test]
    fn lines_of_several_services_come_in_order_after_a_number() {
        let mut b = Board::new(&["a".into(), "b".into()]);
        b.record("a", &Event::AppOutput("a1".into()));
        b.record("b", &Event::AppOutput("b1".into()));
        b.record("a", &Event::AppOutput("a2".into()));
        let all = b.lines(&[], 0, 0, 100).unwrap();
        let texts: Vec<&str> = all.iter().map(|(_, l)| l.text.as_str()).collect();
        assert_eq!(texts, ["a1", "b1", "a2"]);
        let after = all[0].1.seq;
        let rest = b.lines(&["a".into()], after, 0, 100).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].0, rest[0].1.text.as_str()), ("a", "a2"));
        assert_eq!(b.lines(&[], 0, 0, 1).unwrap().len(), 1);
        assert!(b.lines(&["nope".into()], 0, 0, 1).is_err());
    }

    #[test]
    fn the_logs_of_many_services_stay_within_the_byte_budget() {
        let names: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
        let mut b = Board::new(&names);
        let line = "x".repeat(1000);
        for n in &names {
            for _ in 0..LOG_LINES {
                b.record(n, &Event::AppOutput(line.clone()));
            }
        }
        let kept: usize = names
            .iter()
            .map(|n| {
                b.logs(n, usize::MAX)
                    .unwrap()
                    .iter()
                    .map(|l| l.text.len())
                    .sum::<usize>()
            })
            .sum();
        assert!(kept <= LOG_BYTES, "{kept} bytes kept");
        assert!(kept >= LOG_BYTES / 2, "{kept} bytes kept");
    }

    #[test]
    fn a_services_log_is_bounded() {
        let mut b = Board::new(&["web".into()]);
        for i in 0..LOG_LINES + 10 {
            b.record("web", &Event::AppOutput(format!("line {i}")));
        }
        let logs = b.logs("web", usize::MAX).unwrap();
        assert_eq!(logs.len(), LOG_LINES);
        assert_eq!(logs[0].text, "line 10");
    }
}
