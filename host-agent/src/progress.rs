//! What a long sync has sent so far, shown on a terminal.
//!
//! A first sync of a `node_modules` tree takes seconds here and minutes over
//! a slow port-forward; `lks sync` said nothing until it was done. The wire
//! counts what it takes ([`Sent`], bumped as each message leaves the
//! batch's read-ahead queue) and, when stderr is a terminal, a line under
//! the output says how far it got, from half a second into the sync until
//! its end, and is cleared then: what stays is the usual summary line.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lks_proto::v1::{ApplyRequest, apply_request::Op};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Files and bytes the wire took so far, of how many planned.
#[derive(Debug, Default)]
pub struct Sent {
    files: AtomicU64,
    bytes: AtomicU64,
    planned: (u64, u64),
}

impl Sent {
    /// Counts towards `files` files of `bytes` in all.
    pub fn of(files: u64, bytes: u64) -> Sent {
        Sent {
            planned: (files, bytes),
            ..Sent::default()
        }
    }

    /// Counts the files and file bytes `req` carries.
    pub fn count(&self, req: &ApplyRequest) {
        let (files, bytes) = match &req.op {
            Some(Op::Put(p)) => (1, p.data.len()),
            Some(Op::Puts(p)) => (p.puts.len(), p.puts.iter().map(|p| p.data.len()).sum()),
            Some(Op::Data(d)) => (0, d.bytes.len()),
            _ => (0, 0),
        };
        self.files.fetch_add(files as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// (files, bytes) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// How long a sync runs before its progress is shown (a short one never
/// flickers).
const SHOWN_AFTER: Duration = Duration::from_millis(500);

/// The progress line of one sync; gone when dropped.
pub struct Shown {
    bar: ProgressBar,
    updater: tokio::task::JoinHandle<()>,
}

impl Shown {
    /// Shows what `sent` counts as `what` goes, when stderr is a terminal
    /// and `LKS_PROGRESS` is not `never`.
    pub fn start(what: &'static str, sent: Arc<Sent>) -> Option<Shown> {
        let hidden = std::env::var("LKS_PROGRESS").is_ok_and(|v| v == "never");
        if hidden || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .expect("template")
                .tick_chars("|/-\\ "),
        );
        let shown = bar.clone();
        let updater = tokio::spawn(async move {
            let started = Instant::now();
            tokio::time::sleep(SHOWN_AFTER).await;
            loop {
                shown.set_message(message(what, sent.get(), sent.planned, started.elapsed()));
                shown.tick();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Some(Shown { bar, updater })
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.updater.abort();
        self.bar.finish_and_clear();
    }
}

/// The line: what, how many files and bytes of how many, for how long.
fn message(what: &str, sent: (u64, u64), planned: (u64, u64), took: Duration) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let took = took.as_secs_f64();
    if sent.0 < planned.0 {
        format!(
            "{what}: sent {} of {} files ({:.1} of {:.1} MiB), {took:.1}s",
            sent.0,
            planned.0,
            mib(sent.1),
            mib(planned.1)
        )
    } else {
        // The rest is the agent's: writing, checking, putting in place.
        format!(
            "{what}: sent all {} files ({:.1} MiB); the agent is putting them in place, {took:.1}s",
            sent.0,
            mib(sent.1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lks_proto::v1::{Data, Mkdir, Put, Puts};

    fn put(n: usize) -> Put {
        Put {
            data: vec![1; n],
            ..Put::default()
        }
    }

    #[test]
    fn the_wire_counts_files_and_their_bytes_whatever_message_carries_them() {
        let sent = Sent::default();
        for op in [
            Op::Put(put(10)),
            Op::Puts(Puts {
                puts: vec![put(1), put(2), put(3)],
            }),
            Op::Put(put(0)),
            Op::Data(Data {
                bytes: vec![0; 100],
            }),
            Op::Mkdir(Mkdir::default()),
        ] {
            sent.count(&ApplyRequest { op: Some(op) });
        }
        assert_eq!(sent.get(), (5, 116));
        let mib = 1024 * 1024;
        assert_eq!(
            message(
                "sync",
                (5, mib / 2),
                (8, 2 * mib),
                Duration::from_millis(2500)
            ),
            "sync: sent 5 of 8 files (0.5 of 2.0 MiB), 2.5s"
        );
        assert_eq!(
            message(
                "initial sync",
                (8, 2 * mib),
                (8, 2 * mib),
                Duration::from_secs(3)
            ),
            "initial sync: sent all 8 files (2.0 MiB); the agent is putting them in place, 3.0s"
        );
    }
}
