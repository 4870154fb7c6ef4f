//! Running one step of a batch: a command the host sent, in its own process
//! group, with the app's environment plus the step's, its output captured line
//! by line. A step that fails, or cannot even start, is a result to report (a
//! runtime error), never an error of the agent.

use crate::children::{self, Children, WorkDir};
use crate::output::{self, Origin, Tail};
use crate::root::Root;
use lks_proto::RelPath;
use lks_proto::v1::{Event, Step, StepFinished, StepResult, StepStarted, event};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// After a step exits, how long its output may still drain (a background process
/// it left may hold the pipe open forever).
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// How long a step gets between SIGTERM and SIGKILL when the agent shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where and how steps run.
#[derive(Clone)]
pub struct StepRunner {
    /// The root; workdirs are relative to it, and opened from it by the
    /// descriptor walk.
    pub root: Arc<Root>,
    /// Starts and reaps the step processes.
    pub children: Children,
    /// Where step events go.
    pub events: broadcast::Sender<Event>,
    /// Becomes true when the agent shuts down: a running step is stopped.
    pub shutdown: watch::Receiver<bool>,
}

/// A finished step: its result, and when it failed, why in one phrase
/// ("failed with exit code 1", "could not start: ...").
pub struct Ran {
    /// The result the host receives.
    pub result: StepResult,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

impl StepRunner {
    /// Runs step `index` of batch `batch_id`, emitting StepStarted, Output and
    /// StepFinished events.
    pub async fn run(&self, batch_id: &str, index: u32, step: &Step) -> Ran {
        let started = Instant::now();
        self.emit(event::Kind::StepStarted(StepStarted {
            batch_id: batch_id.to_string(),
            index,
            argv: step.argv.clone(),
        }));
        let tail = Arc::new(Mutex::new(Tail::default()));
        let outcome = match self.prepare(step) {
            Ok(cwd) => self.execute(batch_id, index, step, &cwd, &tail).await,
            Err(why) => Outcome::NotStarted(why),
        };
        let output_tail = tail.lock().unwrap_or_else(|e| e.into_inner()).text();
        let (exit_code, error, failure) = match outcome {
            Outcome::Exited(status) => match (status.code(), status.signal()) {
                (Some(0), _) => (0, String::new(), None),
                (Some(code), _) => (
                    code,
                    String::new(),
                    Some(format!("failed with exit code {code}")),
                ),
                (None, Some(sig)) => (
                    -1,
                    String::new(),
                    Some(format!("was killed by signal {sig}")),
                ),
                (None, None) => (-1, String::new(), Some(format!("ended with {status}"))),
            },
            Outcome::NotStarted(why) => (-1, why.clone(), Some(format!("could not start: {why}"))),
            Outcome::Interrupted(why) => (-1, why.clone(), Some(why)),
        };
        let result = StepResult {
            index,
            exit_code,
            success: failure.is_none(),
            output_tail,
            duration_ms: started.elapsed().as_millis() as u64,
            error,
        };
        match &failure {
            None => tracing::info!(batch = batch_id, index, argv = ?step.argv, "step succeeded"),
            Some(why) => tracing::warn!(batch = batch_id, index, argv = ?step.argv, "step {why}"),
        }
        self.emit(event::Kind::StepFinished(StepFinished {
            batch_id: batch_id.to_string(),
            result: Some(result.clone()),
        }));
        Ran { result, failure }
    }

    /// Checks the step before anything runs; returns its working directory,
    /// opened by the descriptor walk (a symlink on the way is refused).
    fn prepare(&self, step: &Step) -> Result<WorkDir, String> {
        if *self.shutdown.borrow() {
            return Err("the agent is shutting down".into());
        }
        if step.argv.first().is_none_or(|a| a.is_empty()) {
            return Err("the step has no command (its argv is empty)".into());
        }
        if step.workdir.is_empty() {
            return WorkDir::beneath(&self.root, None);
        }
        let workdir = RelPath::new(step.workdir.clone())
            .map_err(|e| format!("refused workdir {:?}: {e}", step.workdir))?;
        WorkDir::beneath(&self.root, Some(&workdir))
    }

    async fn execute(
        &self,
        batch_id: &str,
        index: u32,
        step: &Step,
        cwd: &WorkDir,
        tail: &Arc<Mutex<Tail>>,
    ) -> Outcome {
        let mut cmd = children::command(&step.argv, cwd, &step.env);
        let spawned = match self.children.spawn(&mut cmd) {
            Ok(s) => s,
            Err(e) => return Outcome::NotStarted(children::spawn_error(&step.argv[0], &e)),
        };
        let origin = Origin::Step {
            batch_id: batch_id.to_string(),
            index,
            tail: tail.clone(),
        };
        let capture = output::capture(spawned.stdout, spawned.stderr, origin, self.events.clone());
        let mut shutdown = self.shutdown.clone();
        let outcome = tokio::select! {
            status = spawned.exit => match status {
                Some(status) => Outcome::Exited(status),
                None => Outcome::Interrupted("its exit status was lost".into()),
            },
            () = shutting_down(&mut shutdown) => {
                children::stop_group(spawned.pid, SHUTDOWN_GRACE).await;
                Outcome::Interrupted("stopped: the agent is shutting down".into())
            }
        };
        let _ = tokio::time::timeout(OUTPUT_DRAIN, capture).await;
        outcome
    }

    fn emit(&self, kind: event::Kind) {
        let _ = self.events.send(Event { kind: Some(kind) });
    }
}

/// How a step ended.
enum Outcome {
    Exited(std::process::ExitStatus),
    NotStarted(String),
    Interrupted(String),
}

/// Resolves once the shutdown flag is set (never if its sender is gone unset).
async fn shutting_down(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|&down| down).await.is_err() {
        std::future::pending::<()>().await;
    }
}
