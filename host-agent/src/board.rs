//! The board: what a running `lks up` knows of each service, folded from the
//! same typed events the console renders: its status, where it runs, its app's
//! restarts, its last sync, its errors, and its recent log lines (a bounded
//! buffer each). `api.rs` serves it; `lks status` and `lks logs` read it.

use crate::events::{Event, Status, SyncKind};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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
}

/// What the board knows of one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceState {
    /// Its name.
    pub name: String,
    /// Its status as the console shows it (`ready`, `error: ...`).
    pub status: String,
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
        };
        board.share_log_budget();
        board
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
        if self.first_failure.is_none()
            && let Some(why) = failure(event)
        {
            self.first_failure = Some((service.to_string(), why));
        }
        let s = self.service(service);
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
                });
            }
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
                s.logs
                    .iter()
                    .filter(|l| l.seq > after && l.at_ms >= since_ms)
                    .map(move |l| (s.name.as_str(), l))
            })
            .collect();
        out.sort_by_key(|(_, l)| l.seq);
        let skip = out.len().saturating_sub(tail);
        out.drain(..skip);
        Ok(out)
    }
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
