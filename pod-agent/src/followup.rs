//! The follow-up of a committed batch: its steps in order, then (if all
//! succeeded and the batch asks for it) a restart of the app. A failing step
//! stops the later steps and the restart: the app keeps running the previous
//! version, and `restart_skipped` says why.

use crate::steps::StepRunner;
use crate::supervise::App;
use lks_proto::v1::{Commit, StepResult};

/// Longest command shown in a `restart_skipped` message.
const SHOWN_COMMAND: usize = 80;

/// What runs after a batch's files are in place.
#[derive(Clone)]
pub struct Followup {
    /// Runs the steps.
    pub steps: StepRunner,
    /// The supervised app; `None` under `lks-agent serve`.
    pub app: Option<App>,
}

/// The part of `ApplyResult` the follow-up fills.
#[derive(Default)]
pub struct Outcome {
    /// One per step that ran.
    pub steps: Vec<StepResult>,
    /// Whether the app was restarted.
    pub restarted: bool,
    /// Why a requested restart did not happen; empty otherwise.
    pub restart_skipped: String,
}

impl Followup {
    /// Runs the steps of `commit`, then the restart it asks for.
    pub async fn run(&self, commit: &Commit) -> Outcome {
        let mut outcome = Outcome::default();
        let mut failed = None;
        for (i, step) in commit.steps.iter().enumerate() {
            let ran = self.steps.run(&commit.batch_id, i as u32, step).await;
            outcome.steps.push(ran.result);
            if let Some(why) = ran.failure {
                failed = Some(format!(
                    "step {} (`{}`) {why}",
                    i + 1,
                    shown_command(&step.argv)
                ));
                break;
            }
        }
        if commit.restart {
            match (failed, &self.app) {
                (Some(why), _) => outcome.restart_skipped = why,
                (None, None) => {
                    outcome.restart_skipped = "no app is supervised (lks-agent serve)".into()
                }
                (None, Some(app)) => match app.restart().await {
                    Ok(_) => outcome.restarted = true,
                    Err(e) => outcome.restart_skipped = e.to_string(),
                },
            }
        }
        // An app held for the first sync starts with whatever came.
        if !outcome.restarted
            && let Some(app) = &self.app
        {
            app.synced().await;
        }
        outcome
    }
}

/// `argv` joined by spaces, shortened to fit a one-line message.
fn shown_command(argv: &[String]) -> String {
    let full = argv.join(" ");
    if full.chars().count() <= SHOWN_COMMAND {
        return full;
    }
    let mut short: String = full.chars().take(SHOWN_COMMAND - 3).collect();
    short.push_str("...");
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_command_is_shortened_in_messages() {
        assert_eq!(shown_command(&["go".into(), "build".into()]), "go build");
        let long = vec!["x".repeat(200)];
        let shown = shown_command(&long);
        assert_eq!(shown.chars().count(), SHOWN_COMMAND);
        assert!(shown.ends_with("..."));
    }
}
