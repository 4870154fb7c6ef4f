//! Line capture for the app and the steps: each line a child writes becomes an
//! `Output` event; the app's lines are also mirrored on the agent's own stdout and
//! stderr (so `kubectl logs` and `docker logs` still show the app), and a step's
//! last lines are kept for its result.

use lks_proto::v1::{Event, Output, OutputSource, OutputStream, event};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// Longest line sent as one; a longer run without a newline is cut into pieces,
/// so a child writing no newlines cannot make the agent buffer without bound.
const MAX_LINE: usize = 16 * 1024;

/// Lines kept for a step's `output_tail`.
const TAIL_LINES: usize = 50;

/// Longest line kept in a tail, so a result stays well under the message limit.
const TAIL_LINE_BYTES: usize = 2000;

/// Lines waiting for the console; a full queue slows the child down as a full
/// pipe would.
const CONSOLE_QUEUE: usize = 256;

/// The agent's own stdout and stderr, written by one thread so lines from the
/// app's two streams never interleave mid-line.
#[derive(Clone)]
pub struct Console {
    tx: mpsc::Sender<(OutputStream, String)>,
}

impl Console {
    /// Starts the writer thread.
    pub fn start() -> Console {
        let (tx, mut rx) = mpsc::channel::<(OutputStream, String)>(CONSOLE_QUEUE);
        std::thread::spawn(move || {
            while let Some((stream, line)) = rx.blocking_recv() {
                // Nobody reading (a closed pipe) is not the app's problem.
                let _ = if stream == OutputStream::Stderr {
                    writeln!(std::io::stderr().lock(), "{line}")
                } else {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{line}").and_then(|()| out.flush())
                };
            }
        });
        Console { tx }
    }
}

/// The last lines of a step's output.
#[derive(Default)]
pub struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, line: &str) {
        if self.0.len() == TAIL_LINES {
            self.0.pop_front();
        }
        let mut cut = line.len().min(TAIL_LINE_BYTES);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        self.0.push_back(line[..cut].to_string());
    }

    /// The kept lines, newline-separated.
    pub fn text(&self) -> String {
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Who wrote the lines, and where they go besides the event stream.
#[derive(Clone)]
pub enum Origin {
    /// The supervised app: mirrored on the console.
    App(Console),
    /// A step of a batch: kept in its tail.
    Step {
        /// The batch it belongs to.
        batch_id: String,
        /// Its index in the batch.
        index: u32,
        /// Its last lines.
        tail: Arc<Mutex<Tail>>,
    },
}

impl Origin {
    async fn deliver(&self, events: &broadcast::Sender<Event>, stream: OutputStream, line: String) {
        let (source, batch_id, step_index) = match self {
            Origin::App(console) => {
                let _ = console.tx.send((stream, line.clone())).await;
                (OutputSource::App, String::new(), 0)
            }
            Origin::Step {
                batch_id,
                index,
                tail,
            } => {
                tail.lock().unwrap_or_else(|e| e.into_inner()).push(&line);
                (OutputSource::Step, batch_id.clone(), *index)
            }
        };
        // No subscriber is fine: the event is simply not seen.
        let _ = events.send(Event {
            kind: Some(event::Kind::Output(Output {
                source: source as i32,
                stream: stream as i32,
                line,
                batch_id,
                step_index,
            })),
        });
    }
}

/// Captures a child's stdout and stderr line by line until both close.
pub fn capture(
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
    origin: Origin,
    events: broadcast::Sender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let out = async {
            if let Some(s) = stdout.and_then(|s| tokio::process::ChildStdout::from_std(s).ok()) {
                pump(s, OutputStream::Stdout, &origin, &events).await;
            }
        };
        let err = async {
            if let Some(s) = stderr.and_then(|s| tokio::process::ChildStderr::from_std(s).ok()) {
                pump(s, OutputStream::Stderr, &origin, &events).await;
            }
        };
        tokio::join!(out, err);
    })
}

/// Reads `r` to its end, delivering each line (without its `\n` or `\r\n`).
async fn pump(
    r: impl AsyncRead + Unpin,
    stream: OutputStream,
    origin: &Origin,
    events: &broadcast::Sender<Event>,
) {
    let mut reader = BufReader::new(r);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let chunk = match reader.fill_buf().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("reading a child's output: {e}");
                break;
            }
        };
        if chunk.is_empty() {
            break;
        }
        let (used, complete) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&chunk[..i]);
                (i + 1, true)
            }
            None => {
                let n = chunk.len().min(MAX_LINE.saturating_sub(line.len()));
                line.extend_from_slice(&chunk[..n]);
                (n, line.len() >= MAX_LINE)
            }
        };
        reader.consume(used);
        if complete {
            origin.deliver(events, stream, take_line(&mut line)).await;
        }
    }
    if !line.is_empty() {
        origin.deliver(events, stream, take_line(&mut line)).await;
    }
}

fn take_line(buf: &mut Vec<u8>) -> String {
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    let line = String::from_utf8_lossy(buf).into_owned();
    buf.clear();
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_lines_and_cuts_long_ones_on_a_char_boundary() {
        let mut t = Tail::default();
        for i in 0..(TAIL_LINES + 5) {
            t.push(&format!("line {i}"));
        }
        let text = t.text();
        assert!(text.starts_with("line 5\n"), "{text}");
        assert!(text.ends_with(&format!("line {}", TAIL_LINES + 4)));
        let mut t = Tail::default();
        t.push(&"é".repeat(TAIL_LINE_BYTES));
        assert_eq!(t.text().len(), TAIL_LINE_BYTES);
    }

    #[tokio::test]
    async fn lines_are_split_on_newlines_and_over_long_runs_are_cut() {
        let (events, mut rx) = broadcast::channel(64);
        let tail = Arc::new(Mutex::new(Tail::default()));
        let origin = Origin::Step {
            batch_id: "b".into(),
            index: 0,
            tail: tail.clone(),
        };
        let mut input = b"one\r\ntwo\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE + 3]);
        pump(&input[..], OutputStream::Stdout, &origin, &events).await;
        let mut lines = Vec::new();
        while let Ok(Event {
            kind: Some(event::Kind::Output(o)),
        }) = rx.try_recv()
        {
            lines.push(o.line);
        }
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "one");
        assert_eq!(lines[1], "two");
        assert_eq!(lines[2].len(), MAX_LINE);
        assert_eq!(lines[3], "xxx");
    }
}
