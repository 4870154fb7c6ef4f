//! What `lks up` shows: it consumes the [events](crate::events) of every
//! service and prints one line per event, prefixed with the service's name in
//! its own color, a status line per change of status, and a spinner for long
//! work when stderr is a terminal.

use crate::events::{Event, Feed, Item, Status, SyncKind};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const COLORS: [anstyle::AnsiColor; 6] = {
    use anstyle::AnsiColor::*;
    [Cyan, Magenta, Yellow, Green, Blue, Red]
};

/// The console of one `lks up`.
pub struct Console {
    /// Told when stdout's reader went away (`lks up | head`): what a
    /// SIGPIPE would end, `lks up` ends, stopping what it started.
    gone: Arc<Notify>,
    width: usize,
    color: bool,
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
    colors: BTreeMap<String, anstyle::Style>,
    statuses: BTreeMap<String, Status>,
    /// How many services the run has.
    services: usize,
    /// On a terminal: the last line, a summary of every service's status.
    summary: Option<ProgressBar>,
}

impl Console {
    /// A console for these services.
    pub fn new(services: &[String]) -> Console {
        // A terminal that wants color (NO_COLOR, CLICOLOR, CLICOLOR_FORCE and
        // TERM=dumb are honoured, as anstream reads them).
        let color =
            anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never;
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let colors = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), COLORS[i % COLORS.len()].on_default()))
            .collect();
        let multi = MultiProgress::with_draw_target(target);
        let summary = (!multi.is_hidden()).then(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("{msg}").expect("template"));
            bar
        });
        let console = Console {
            gone: Arc::new(Notify::new()),
            width: services.iter().map(|s| s.len()).max().unwrap_or(0),
            color,
            multi,
            bars: BTreeMap::new(),
            colors,
            statuses: BTreeMap::new(),
            services: services.len(),
            summary,
        };
        console.summarize();
        console
    }

    /// Resolves once stdout's reader has gone away.
    pub fn reader_gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let gone = self.gone.clone();
        async move { gone.notified().await }
    }

    /// Renders the feed until every sender is gone, recording each
    /// service's events on `board`.
    pub async fn run(mut self, mut feed: Feed, board: crate::board::Shared) {
        while let Some(item) = feed.next().await {
            match item {
                Item::Note(text) => self.print(format!("lks: {text}")),
                Item::Service(service, event) => {
                    board.lock().unwrap().record(&service, &event);
                    self.show(&service, event, feed.is_stopping());
                }
            }
        }
    }

    fn show(&mut self, service: &str, event: Event, stopping: bool) {
        match event {
            Event::Status(status) => self.status(service, status, stopping),
            Event::StepFailed {
                ref output_tail, ..
            } => {
                self.line(service, &describe(&event));
                for line in output_tail.lines() {
                    self.line(service, &format!("  {line}"));
                }
            }
            _ => self.line(service, &describe(&event)),
        }
    }

    fn prefix(&self, service: &str) -> String {
        let padded = format!("{service:<w$}", w = self.width);
        match (self.color, self.colors.get(service)) {
            (true, Some(style)) => format!("{style}{padded} |{style:#}"),
            _ => format!("{padded} |"),
        }
    }

    fn print(&self, line: String) {
        if self.multi.is_hidden() {
            use std::io::Write;
            // A reader that went away (`lks up | head`) is not worth a
            // panic: `lks up` stops as a SIGPIPE would have stopped it, but
            // stops what it started.
            if let Err(e) = writeln!(std::io::stdout(), "{line}")
                && e.kind() == std::io::ErrorKind::BrokenPipe
            {
                self.gone.notify_one();
            }
        } else {
            let _ = self.multi.println(line);
        }
    }

    /// Prints one line for `service`.
    fn line(&self, service: &str, text: &str) {
        self.print(format!("{} {text}", self.prefix(service)));
    }

    /// Records and shows a new status; long-running ones get a spinner.
    fn status(&mut self, service: &str, status: Status, stopping: bool) {
        if stopping && matches!(status, Status::Error(_)) {
            return;
        }
        if self.statuses.get(service) == Some(&status) {
            return;
        }
        self.statuses.insert(service.to_string(), status.clone());
        self.line(service, &format!("[{status}]"));
        self.summarize();
        if status.is_long() {
            let (multi, summary) = (&self.multi, &self.summary);
            let bar = self.bars.entry(service.to_string()).or_insert_with(|| {
                // Above the summary, which stays the last line.
                let b = match summary {
                    Some(s) => multi.insert_before(s, ProgressBar::new_spinner()),
                    None => multi.add(ProgressBar::new_spinner()),
                };
                b.set_style(
                    ProgressStyle::with_template("{spinner} {prefix} {msg} {elapsed}")
                        .expect("template"),
                );
                b.set_prefix(service.to_string());
                b.enable_steady_tick(Duration::from_millis(120));
                b
            });
            bar.set_message(status.to_string());
        } else if let Some(bar) = self.bars.remove(service) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
}

impl Console {
    /// Updates the summary line (on a terminal).
    fn summarize(&self) {
        if let Some(bar) = &self.summary {
            bar.set_message(summary(&self.statuses, self.services));
        }
    }
}

/// `lks: 3/5 ready · 1 error · 1 busy`: what every service is at.
fn summary(statuses: &BTreeMap<String, Status>, services: usize) -> String {
    let count = |f: &dyn Fn(&Status) -> bool| statuses.values().filter(|s| f(s)).count();
    let ready = count(&|s| *s == Status::Ready);
    let errors = count(&|s| matches!(s, Status::Error(_)));
    let stopped = count(&|s| matches!(s, Status::Stopped | Status::Disabled));
    let waiting = count(&|s| matches!(s, Status::Waiting(_)));
    let busy = statuses.len() - ready - errors - stopped - waiting;
    let mut parts = vec![format!("lks: {ready}/{services} ready")];
    for (n, what) in [
        (errors, if errors == 1 { "error" } else { "errors" }),
        (busy, "busy"),
        (waiting, "waiting"),
        (stopped, "stopped"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(" · ")
}

/// An event as one line of text (without the service's prefix): what the
/// console prints and the board logs. A status is shown as `[status]`; a
/// failed step's output tail is printed by the console after this line.
pub fn describe(event: &Event) -> String {
    match event {
        Event::Status(status) => format!("[{status}]"),
        Event::Progress(line)
        | Event::Held(line)
        | Event::AppOutput(line)
        | Event::PodProblem(line) => line.clone(),
        Event::AgentStarted { pid, at, location } => {
            let pid = pid.map(|p| format!(" pid {p}")).unwrap_or_default();
            format!("agent{pid} at {at} ({location})")
        }
        Event::NotLive => "not live updated (not named --local)".into(),
        Event::Unreachable(why) => format!("cannot reach the agent yet: {why}"),
        Event::Reconnecting(gone) => format!("{gone}; reconnecting"),
        Event::Retrying(delay) => format!("starting again in {:.1}s", delay.as_secs_f64()),
        Event::SyncRetry(delay) => format!(
            "trying the failed operations again in {:.1}s",
            delay.as_secs_f64()
        ),
        Event::NotRetried => {
            "not starting it again: fix what the error says, then run lks up again (lks config \
             check checks the definitions)"
                .into()
        }
        Event::Synced { kind, summary, ms } => {
            let what = match kind {
                SyncKind::First | SyncKind::Batch => "synced",
                SyncKind::Rebuilt => "rebuilt:",
            };
            format!("{what} {summary} in {ms} ms")
        }
        Event::Warning(w) => format!("warning: {w}"),
        Event::Rebuilding(why) => format!("rebuilding: {why}"),
        Event::SyncError(e) => format!("sync error: {e}"),
        Event::StepFailed {
            cmd,
            failure,
            keeps_previous,
            ..
        } => {
            let still = if *keeps_previous {
                "; the app keeps running the previous version"
            } else {
                ""
            };
            format!("step `{cmd}` failed ({failure}){still}")
        }
        Event::StepOutput(line) => format!("  > {line}"),
        Event::AppStarted { pid, restarts } => {
            format!("app started (pid {pid}, restart {restarts})")
        }
        Event::AppExited {
            how,
            crashes_in_a_row,
            restart_in_ms,
        } => format!(
            "app exited with {how} ({crashes_in_a_row} crash(es) in a row); restarting in {restart_in_ms} ms"
        ),
        Event::AgentWarning(w) => format!("agent warning: {w}"),
        Event::PodRuns(pod) => format!("pod {pod} runs"),
        Event::StopFailed(e) => format!("stopping: {e}"),
        Event::TriggerMode { manual: true } => {
            "manual trigger mode: changes wait for lks trigger".into()
        }
        Event::TriggerMode { manual: false } => "changes apply as they come".into(),
        Event::ChangesWaiting(0) => "no changes wait any more".into(),
        Event::ChangesWaiting(n) => format!("{n} changed path(s) wait for lks trigger"),
    }
}

/// A line on stderr outside the console (before it starts, after it stops);
/// a closed stderr is not worth a panic.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "lks: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_what_every_service_is_at() {
        let statuses: BTreeMap<String, Status> = [
            ("a", Status::Ready),
            ("b", Status::Ready),
            ("c", Status::Error("boom".into())),
            ("d", Status::Building),
            ("e", Status::Waiting("a".into())),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        assert_eq!(
            summary(&statuses, 6),
            "lks: 2/6 ready · 1 error · 1 busy · 1 waiting"
        );
        assert_eq!(summary(&BTreeMap::new(), 3), "lks: 0/3 ready");
    }
}
