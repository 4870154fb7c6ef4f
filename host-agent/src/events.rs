//! What happens to the services of `lks up`, as typed events on one channel:
//! the service loops and the runtimes send them, the console renders them
//! (and a session API can consume them the same way). No consumer parses
//! text to learn what happened.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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
    /// Stopped by hand (`lks disable`), until `lks enable`.
    Disabled,
}

impl Status {
    /// Whether the status is long work (the console shows a spinner).
    pub fn is_long(&self) -> bool {
        matches!(
            self,
            Status::Starting
                | Status::Building
                | Status::Syncing
                | Status::RunningStep(_)
                | Status::CheckingReadiness
        )
    }
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
            Status::Disabled => f.write_str("disabled"),
        }
    }
}

/// What a batch (or a full sync) did on the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files written.
    pub files: usize,
    /// Paths deleted.
    pub deleted: usize,
    /// Bytes sent.
    pub wire_bytes: u64,
    /// The steps that ran: index, success, milliseconds.
    pub steps: Vec<(u32, bool, u64)>,
    /// Whether the app restarted.
    pub restarted: bool,
    /// Some of the changed paths (a batch's; at most [`Summary::PATHS`]).
    pub paths: Vec<String>,
}

impl Summary {
    /// How many changed paths a summary names.
    pub const PATHS: usize = 20;
}

impl From<&crate::session::Report> for Summary {
    fn from(r: &crate::session::Report) -> Summary {
        Summary {
            files: r.files,
            deleted: r.deleted,
            wire_bytes: r.wire_bytes,
            steps: r
                .steps
                .iter()
                .map(|s| (s.index, s.success, s.duration_ms))
                .collect(),
            restarted: r.restarted,
            paths: Vec::new(),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files, {} deleted, {} bytes sent",
            self.files, self.deleted, self.wire_bytes
        )?;
        for (index, success, ms) in &self.steps {
            write!(
                f,
                ", step {} {} ({ms} ms)",
                index + 1,
                if *success { "ok" } else { "failed" }
            )?;
        }
        if self.restarted {
            f.write_str(", restarted")?;
        }
        Ok(())
    }
}

/// Which sync a [`Event::Synced`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// The first full sync of a started agent.
    First,
    /// The first full sync after a rebuild.
    Rebuilt,
    /// A batch of changes.
    Batch,
}

/// One thing that happened to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Its status changed.
    Status(Status),
    /// Long work (an image build, a rollout) said something.
    Progress(String),
    /// Its agent was started: how it is reached and where its files are.
    AgentStarted {
        /// The agent's process id, when it is a local process.
        pid: Option<u32>,
        /// The tunnel's address.
        at: String,
        /// Where the service's files live.
        location: String,
    },
    /// It is not live updated: it runs as it is, watched for readiness.
    NotLive,
    /// Its agent cannot be reached yet (it is retried until it can).
    Unreachable(String),
    /// Its agent went away; lks reconnects without starting it anew.
    Reconnecting(String),
    /// It failed and starts again after this delay.
    Retrying(Duration),
    /// Operations the agent refused are tried again after this delay.
    SyncRetry(Duration),
    /// It cannot start as it is defined: it is not started again.
    NotRetried,
    /// Files were synced.
    Synced {
        /// Which sync.
        kind: SyncKind,
        /// What it did.
        summary: Summary,
        /// How long it took, from the first file event (a batch) or the
        /// start of the sync.
        ms: u128,
    },
    /// Mirroring now would copy damage; nothing was sent (why).
    Held(String),
    /// Something worth knowing that did not stop anything.
    Warning(String),
    /// A change needs a new image or new objects (why).
    Rebuilding(String),
    /// The agent refused an operation.
    SyncError(String),
    /// A live-update step failed; the app keeps the previous version.
    StepFailed {
        /// The step's command.
        cmd: String,
        /// Why (an exit code or the error).
        failure: String,
        /// The end of its output.
        output_tail: String,
        /// Whether the app runs on with its previous version (a live
        /// update's step; not a first start's build step).
        keeps_previous: bool,
    },
    /// A line a step printed.
    StepOutput(String),
    /// A line the app printed.
    AppOutput(String),
    /// The app (re)started.
    AppStarted {
        /// Its process id.
        pid: u32,
        /// How many restarts before this one.
        restarts: u32,
    },
    /// The app exited without being asked to.
    AppExited {
        /// `exit code N` or `signal N`.
        how: String,
        /// Crashes in a row.
        crashes_in_a_row: u32,
        /// When the agent starts it again.
        restart_in_ms: u64,
    },
    /// The agent warned.
    AgentWarning(String),
    /// What keeps its pods from running, in the cluster's words.
    PodProblem(String),
    /// Its pods run again (the pod that runs now).
    PodRuns(String),
    /// Stopping it failed.
    StopFailed(String),
    /// Its trigger mode was set: manual (changes wait for a trigger) or not.
    TriggerMode {
        /// Whether changes wait.
        manual: bool,
    },
    /// This many changed paths wait for a trigger (manual mode; 0: none
    /// wait any more).
    ChangesWaiting(usize),
}

/// A message on the channel.
enum Message {
    Service(String, Event),
    Note(String),
    Flush(oneshot::Sender<()>),
}

/// The sending side of the channel, shared by everything `lks up` runs.
#[derive(Clone)]
pub struct Hub {
    tx: mpsc::UnboundedSender<Message>,
    stopping: Arc<AtomicBool>,
}

/// The receiving side: what the console consumes.
pub struct Feed {
    rx: mpsc::UnboundedReceiver<Message>,
    stopping: Arc<AtomicBool>,
}

/// One item of the feed.
pub enum Item {
    /// An event of a service.
    Service(String, Event),
    /// A line from lks itself.
    Note(String),
}

/// A new channel.
pub fn channel() -> (Hub, Feed) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stopping = Arc::new(AtomicBool::new(false));
    (
        Hub {
            tx,
            stopping: stopping.clone(),
        },
        Feed { rx, stopping },
    )
}

impl Hub {
    /// The sender for one service's events.
    pub fn service(&self, name: &str) -> Reporter {
        Reporter {
            name: name.to_string(),
            hub: self.clone(),
        }
    }

    /// A line from lks itself.
    pub fn note(&self, text: impl Into<String>) {
        let _ = self.tx.send(Message::Note(text.into()));
    }

    /// Marks the start of the shutdown (Ctrl-C): errors from agents that the
    /// terminal's signal reached first are no longer reported.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether lks is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Waits until the consumer handled everything sent before.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Feed {
    /// The next item; `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            match self.rx.recv().await? {
                Message::Service(s, e) => return Some(Item::Service(s, e)),
                Message::Note(n) => return Some(Item::Note(n)),
                Message::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Whether lks is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Sends one service's events.
#[derive(Clone)]
pub struct Reporter {
    name: String,
    hub: Hub,
}

impl Reporter {
    /// Sends an event.
    pub fn send(&self, event: Event) {
        let _ = self.hub.tx.send(Message::Service(self.name.clone(), event));
    }

    /// Sends a status change.
    pub fn status(&self, status: Status) {
        self.send(Event::Status(status));
    }

    /// Whether lks is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.hub.is_stopping()
    }
}

/// What long work (an image build, a rollout, a registry start) reports as
/// it goes. Any `Fn(&str)` is one that only prints.
pub trait Progress: Send + Sync {
    /// A line about the work.
    fn say(&self, line: &str);
    /// An image build begins (the service is building).
    fn building(&self, line: &str) {
        self.say(line)
    }
}

impl<F: Fn(&str) + Send + Sync> Progress for F {
    fn say(&self, line: &str) {
        self(line)
    }
}

impl Progress for Reporter {
    fn say(&self, line: &str) {
        self.send(Event::Progress(line.to_string()));
    }
    fn building(&self, line: &str) {
        self.status(Status::Building);
        self.say(line);
    }
}
