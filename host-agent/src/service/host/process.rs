//! One process of a host resource: a `run` command or its `serve`, started
//! in its own process group in the service's directory with its `env`, its
//! output sent line by line as the service's events, stopped as a group
//! (SIGTERM, grace period, SIGKILL: [`crate::procs::stop_group`]).
//!
//! A process its resource's task let go of while it still ran (the task was
//! aborted: the resource stopped, triggered, disabled or reloaded) is handed
//! to the resource's [`Leftovers`], which the fleet stops right after. Each
//! process is also recorded under `.lks/NAME/` ([`crate::claim`]), so one
//! whose `lks up` was killed is stopped by the next `lks up` or `lks down`.

use crate::config::Service;
use crate::events::{Event, Reporter};
use rustix::process::Pid;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Longest line passed on; a longer one is cut there (a child writing no
/// newlines cannot make lks buffer without bound).
const MAX_LINE: usize = 16 * 1024;
/// Lines kept for a failed command's output tail (as the agent keeps).
const TAIL_LINES: usize = 50;
/// Longest line kept in a tail.
const TAIL_LINE_BYTES: usize = 2000;
/// How long the rest of a process's output is waited for after it exited
/// (a child it left behind may hold the pipe open).
const OUTPUT_LINGER: Duration = Duration::from_millis(500);

/// What a process is to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A command of `run`: its lines are step output.
    Run,
    /// The long-running `serve`: its lines are app output.
    Serve,
}

impl Role {
    /// Its name in `.lks/NAME/ROLE.pid`.
    fn name(self) -> &'static str {
        match self {
            Role::Run => "run",
            Role::Serve => "serve",
        }
    }

    fn line(self, text: String) -> Event {
        match self {
            Role::Run => Event::StepOutput(text),
            Role::Serve => Event::AppOutput(text),
        }
    }
}

/// Where a process is recorded for the next `lks up`.
struct Record {
    work: PathBuf,
    service: String,
    role: Role,
}

impl Record {
    fn forget(&self) {
        crate::claim::forget(&self.work, &self.service, self.role.name());
    }
}

/// A process let go of while it ran.
struct Left {
    child: Child,
    pgid: Pid,
    record: Option<Record>,
}

/// The processes a resource's task let go of while they ran, for the fleet
/// to stop once it stopped the task.
#[derive(Clone, Default)]
pub struct Leftovers(Arc<Mutex<Vec<Left>>>);

impl Leftovers {
    /// Stops every process let go of so far, each group at once.
    pub async fn stop(&self) {
        let left = std::mem::take(&mut *self.0.lock().unwrap());
        futures::future::join_all(left.into_iter().map(|mut l| async move {
            crate::procs::stop_group(l.pgid, Some(&mut l.child)).await;
            if let Some(r) = &l.record {
                r.forget();
            }
        }))
        .await;
    }
}

/// The last lines a process printed.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// A running (or exited, not yet dropped) process of a host resource.
pub struct Process {
    /// Its pid, which is its process group's id too.
    pub pid: u32,
    /// None once stopped.
    child: Option<Child>,
    pgid: Pid,
    record: Option<Record>,
    leftovers: Leftovers,
    tail: Tail,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Process {
    /// Starts `argv` for `service` (in its directory, with its environment
    /// over lks's own, stdin from /dev/null) in a process group of its own,
    /// its output going to `to`.
    pub fn spawn(
        service: &Service,
        argv: &[String],
        role: Role,
        to: &Reporter,
        leftovers: &Leftovers,
    ) -> std::io::Result<Process> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("an empty command"))?;
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&service.dir)
            .envs(&service.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a stop reaches what it started, and the
            // terminal's Ctrl-C is lks's to handle (it stops it in order).
            .process_group(0)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        let pgid = Pid::from_raw(pid as i32).ok_or_else(|| std::io::Error::other("no pid"))?;
        let record = service.work_dir().map(|work| {
            crate::claim::record(work, &service.name, role.name(), pid);
            Record {
                work: work.to_path_buf(),
                service: service.name.clone(),
                role,
            }
        });
        let tail: Tail = Default::default();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(lines(out, to.clone(), role, tail.clone())));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(lines(err, to.clone(), role, tail.clone())));
        }
        Ok(Process {
            pid,
            child: Some(child),
            pgid,
            record,
            leftovers: leftovers.clone(),
            tail,
            readers,
        })
    }

    /// Waits until it exits, then (briefly) for the rest of its output.
    /// Cancel-safe; once it has exited, it answers at once.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(std::io::Error::other("stopped"));
        };
        let status = child.wait().await?;
        for r in &mut self.readers {
            let _ = tokio::time::timeout(OUTPUT_LINGER, r).await;
        }
        Ok(status)
    }

    /// Stops its process group (SIGTERM, grace period, SIGKILL) and reaps
    /// it. Cancelled half-way, the process goes to the leftovers.
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            crate::procs::stop_group(self.pgid, Some(child)).await;
        }
        self.child = None;
        if let Some(r) = &self.record {
            r.forget();
        }
    }

    /// The end of its output.
    pub fn tail(&self) -> String {
        let tail = self.tail.lock().unwrap();
        tail.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Process {
    /// A process that exited is forgotten; one still running (or whose
    /// group still has members) is handed to the leftovers.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        let group_left = rustix::process::test_kill_process_group(self.pgid).is_ok();
        if exited && !group_left {
            if let Some(r) = &self.record {
                r.forget();
            }
            return;
        }
        self.leftovers.0.lock().unwrap().push(Left {
            child,
            pgid: self.pgid,
            record: self.record.take(),
        });
    }
}

/// `exit code N` or `signal N`, as the agent says it.
pub fn how(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Sends what `stream` carries to `to`, a line at a time (cut at
/// [`MAX_LINE`]; not UTF-8: replaced), keeping the last ones in `tail`.
async fn lines(stream: impl AsyncRead + Unpin, to: Reporter, role: Role, tail: Tail) {
    let mut r = BufReader::new(stream);
    let mut line: Vec<u8> = Vec::new();
    let emit = |line: &mut Vec<u8>| {
        let mut text = String::from_utf8_lossy(line).into_owned();
        line.clear();
        while text.ends_with(['\n', '\r']) {
            text.pop();
        }
        let mut kept = text.clone();
        if kept.len() > TAIL_LINE_BYTES {
            let mut cut = TAIL_LINE_BYTES;
            while !kept.is_char_boundary(cut) {
                cut -= 1;
            }
            kept.truncate(cut);
        }
        {
            let mut t = tail.lock().unwrap();
            t.push_back(kept);
            if t.len() > TAIL_LINES {
                t.pop_front();
            }
        }
        to.send(role.line(text));
    };
    loop {
        let buf = match r.fill_buf().await {
            Ok(b) if !b.is_empty() => b,
            _ => break,
        };
        let room = MAX_LINE - line.len();
        let (take, end) = match buf.iter().take(room).position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len().min(room), false),
        };
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if end || line.len() >= MAX_LINE {
            emit(&mut line);
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
}
