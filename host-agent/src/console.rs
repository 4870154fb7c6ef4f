//! What `lks up` shows: one line per event, prefixed with the service's name in
//! its own color, a status per service (building, syncing, running step,
//! restarting, ready, error), and a spinner for long work when stderr is a
//! terminal.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a service is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Waiting for its dependencies.
    Waiting(String),
    /// Starting its agent (or container).
    Starting,
    /// Building (local build commands, an image).
    Building,
    /// Syncing files.
    Syncing,
    /// Running a live-update step.
    RunningStep(String),
    /// Restarting the app.
    Restarting,
    /// Waiting for the readiness check.
    CheckingReadiness,
    /// Ready.
    Ready,
    /// Something failed; the service keeps its previous version if it has one.
    Error(String),
    /// Stopped.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Waiting(on) => write!(f, "waiting for {on}"),
            Status::Starting => f.write_str("starting"),
            Status::Building => f.write_str("building"),
            Status::Syncing => f.write_str("syncing"),
            Status::RunningStep(s) => write!(f, "running step `{s}`"),
            Status::Restarting => f.write_str("restarting"),
            Status::CheckingReadiness => f.write_str("checking readiness"),
            Status::Ready => f.write_str("ready"),
            Status::Error(e) => write!(f, "error: {e}"),
            Status::Stopped => f.write_str("stopped"),
        }
    }
}

const COLORS: [&str; 6] = ["36", "35", "33", "32", "34", "31"];

/// The shared console.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    width: usize,
    color: bool,
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    colors: BTreeMap<String, &'static str>,
    statuses: Mutex<BTreeMap<String, Status>>,
    /// Set once lks is shutting down: agents going away is expected then.
    stopping: std::sync::atomic::AtomicBool,
}

impl Console {
    /// A console for these services.
    pub fn new(services: &[String]) -> Console {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let colors = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), COLORS[i % COLORS.len()]))
            .collect();
        Console {
            inner: Arc::new(Inner {
                width: services.iter().map(|s| s.len()).max().unwrap_or(0),
                color,
                multi: MultiProgress::with_draw_target(target),
                bars: Mutex::new(BTreeMap::new()),
                colors,
                statuses: Mutex::new(BTreeMap::new()),
                stopping: Default::default(),
            }),
        }
    }

    fn prefix(&self, service: &str) -> String {
        let padded = format!("{service:<w$}", w = self.inner.width);
        match (self.inner.color, self.inner.colors.get(service)) {
            (true, Some(c)) => format!("\x1b[{c}m{padded} |\x1b[0m"),
            _ => format!("{padded} |"),
        }
    }

    /// Prints one line for `service`.
    pub fn line(&self, service: &str, text: &str) {
        let line = format!("{} {text}", self.prefix(service));
        if self.inner.multi.is_hidden() {
            println!("{line}");
        } else {
            let _ = self.inner.multi.println(line);
        }
    }

    /// Prints a line from lks itself (not a service).
    pub fn note(&self, text: &str) {
        if self.inner.multi.is_hidden() {
            println!("lks: {text}");
        } else {
            let _ = self.inner.multi.println(format!("lks: {text}"));
        }
    }

    /// Marks the start of the shutdown (Ctrl-C): errors from agents that the
    /// terminal's signal reached first are no longer reported.
    pub fn set_stopping(&self) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether lks is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records and shows a new status; long-running ones get a spinner.
    pub fn status(&self, service: &str, status: Status) {
        if self.is_stopping() && matches!(status, Status::Error(_)) {
            return;
        }
        {
            let mut st = self.inner.statuses.lock().unwrap();
            if st.get(service) == Some(&status) {
                return;
            }
            st.insert(service.to_string(), status.clone());
        }
        self.line(service, &format!("[{status}]"));
        let long = matches!(
            status,
            Status::Starting
                | Status::Building
                | Status::Syncing
                | Status::RunningStep(_)
                | Status::CheckingReadiness
        );
        let mut bars = self.inner.bars.lock().unwrap();
        if long {
            let bar = bars.entry(service.to_string()).or_insert_with(|| {
                let b = self.inner.multi.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("{spinner} {prefix} {msg} {elapsed}")
                        .expect("template"),
                );
                b.set_prefix(service.to_string());
                b.enable_steady_tick(Duration::from_millis(120));
                b
            });
            bar.set_message(status.to_string());
        } else if let Some(bar) = bars.remove(service) {
            bar.finish_and_clear();
            self.inner.multi.remove(&bar);
        }
    }
}
