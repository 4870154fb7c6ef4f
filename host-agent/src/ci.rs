//! `lks ci`: the workspace brought up headless, judged, and removed. It
//! succeeds once every service is ready, and fails at the first thing that
//! would stop a developer: a build that failed, a failing step, an app that
//! exited, a readiness check that timed out, or the whole run past its
//! timeout. The failure names the service and shows the end of its log.

use crate::board::Shared;
use std::time::{Duration, Instant};

/// How `lks ci` ended.
#[derive(Debug)]
pub enum Verdict {
    /// Every service is ready.
    Ready(Duration),
    /// A service failed.
    Failed {
        /// The service.
        service: String,
        /// What failed.
        reason: String,
        /// The end of its log.
        tail: Vec<String>,
    },
    /// Past the timeout, these were not ready.
    TimedOut(Duration, Vec<String>),
}

/// Log lines shown with a failure.
const TAIL: usize = 30;

/// Watches `board` until a verdict.
pub async fn judge(board: Shared, timeout: Duration) -> Verdict {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let board = board.lock().unwrap();
        if let Some((service, reason)) = board.first_failure() {
            let tail = board
                .logs(service, TAIL)
                .unwrap_or_default()
                .into_iter()
                .map(|l| format!("{:<4} {}", l.source.name(), l.text))
                .collect();
            return Verdict::Failed {
                service: service.to_string(),
                reason: reason.to_string(),
                tail,
            };
        }
        let waiting = board.not_ready();
        if waiting.is_empty() {
            return Verdict::Ready(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return Verdict::TimedOut(timeout, waiting);
        }
    }
}

impl Verdict {
    /// `Ok` with the line to print, or the error to fail with.
    pub fn into_result(self, services: usize) -> anyhow::Result<String> {
        match self {
            Verdict::Ready(took) => Ok(format!(
                "lks ci: all {services} services ready after {:.1}s",
                took.as_secs_f64()
            )),
            Verdict::Failed {
                service,
                reason,
                tail,
            } => {
                let tail = tail.join("\n  ");
                anyhow::bail!("lks ci: {service} failed: {reason}\nthe end of its log:\n  {tail}")
            }
            Verdict::TimedOut(timeout, waiting) => anyhow::bail!(
                "lks ci: not every service was ready after {:.0}s; still waiting for: {}",
                timeout.as_secs_f64(),
                waiting.join(", ")
            ),
        }
    }
}
