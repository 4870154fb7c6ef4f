//! The agent's child processes (the app and the steps): how they are started,
//! how their process groups are signalled, and the one place that waits for them.
//!
//! Why one waiter: as PID 1 (or as a child subreaper) the agent inherits every
//! orphan in the container and must reap it, which takes `waitpid(-1)`. But a
//! `waitpid(-1)` also reaps the children that `tokio::process` waits for by pid;
//! tokio's `wait()` then fails with ECHILD and the exit status is lost. So here
//! nobody else waits: children are spawned with `std::process` (which never waits
//! unless asked), registered under the same lock the reaper holds while it
//! reaps, so none can be reaped before it is registered, and the reaper hands each
//! registered child's status to whoever awaits it. Anything else it reaps is an
//! orphan and is simply discarded. The same code serves PID 1 and any other pid.

use crate::root::{Root, RootError};
use lks_proto::RelPath;
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The variable that carries the agent's token; never passed on to a child.
pub use lks_proto::launch::TOKEN_ENV;

/// How often the reaper looks for exited children even without a SIGCHLD
/// (signals coalesce, and one may arrive before the handler exists).
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// How often a process group is checked while waiting for it to empty.
const GROUP_POLL: Duration = Duration::from_millis(20);

type Waiting = Arc<Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>>;

/// Starts children and reaps them (and, as PID 1 or subreaper, every orphan).
#[derive(Clone)]
pub struct Children {
    waiting: Waiting,
}

/// A child that was started: its pid (also its process group id) and its pipes.
pub struct Spawned {
    /// The child's pid, which is also the id of its process group.
    pub pid: Pid,
    /// Its stdout, when piped.
    pub stdout: Option<std::process::ChildStdout>,
    /// Its stderr, when piped.
    pub stderr: Option<std::process::ChildStderr>,
    /// Resolves once the child has exited and been reaped.
    pub exit: Exit,
}

/// The exit of one child; `None` only if the reaper is gone (runtime shutdown).
pub struct Exit(oneshot::Receiver<ExitStatus>);

impl Future for Exit {
    type Output = Option<ExitStatus>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.ok())
    }
}

impl Children {
    /// Starts the reaper. Call inside the runtime, before the first spawn.
    pub fn start() -> std::io::Result<Children> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigchld = signal(SignalKind::child())?;
        let children = Children {
            waiting: Waiting::default(),
        };
        let waiting = children.waiting.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_INTERVAL);
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tick.tick() => {}
                }
                reap(&waiting);
            }
        });
        Ok(children)
    }

    /// Spawns `cmd` and registers it, so its exit is delivered to [`Spawned::exit`].
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<Spawned> {
        // Held across the fork: the reaper cannot reap this child before it is
        // known. (If exec fails, std reaps the child itself, also under the lock.)
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let mut child = cmd.spawn()?;
        let pid = Pid::from_child(&child);
        let (tx, rx) = oneshot::channel();
        waiting.insert(pid.as_raw_pid(), tx);
        drop(waiting);
        Ok(Spawned {
            pid,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            exit: Exit(rx),
        })
    }
}

/// Reaps every child that has exited, without blocking.
fn reap(waiting: &Waiting) {
    let mut waiting = waiting.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                let status = ExitStatus::from_raw(status.as_raw());
                match waiting.remove(&pid.as_raw_pid()) {
                    Some(tx) => {
                        let _ = tx.send(status);
                    }
                    None => tracing::debug!(pid = pid.as_raw_pid(), %status, "reaped an orphan"),
                }
            }
            Ok(None) | Err(Errno::CHILD) => return,
            Err(Errno::INTR) => continue,
            Err(e) => {
                tracing::warn!("waitpid failed: {e}");
                return;
            }
        }
    }
}

/// Where a child of the agent starts.
pub enum WorkDir {
    /// A directory beneath the root, opened by the descriptor walk: the
    /// child enters it with fchdir(2) on this descriptor just before exec,
    /// so its path is never resolved again after the walk (a directory
    /// swapped for a symlink since leads nowhere).
    Opened(Arc<OwnedFd>),
    /// A directory outside the root (the container's own WORKDIR, named by
    /// `--workdir`), entered by path.
    Path(PathBuf),
}

impl WorkDir {
    /// The directory `dir` beneath `root` (the root itself for `None`),
    /// opened by the descriptor walk; why not, in words that name it.
    pub fn beneath(root: &Root, dir: Option<&RelPath>) -> Result<WorkDir, String> {
        let opened = match dir {
            None => root
                .open_root()
                .map_err(|e| format!("cannot open the root {}: {e}", root.path().display())),
            Some(dir) => root.open_dir(dir).map_err(|e| workdir_error(dir, &e)),
        };
        opened.map(|fd| WorkDir::Opened(Arc::new(fd)))
    }
}

/// Why the working directory `dir` cannot be entered.
fn workdir_error(dir: &RelPath, e: &RootError) -> String {
    match e {
        RootError::ThroughSymlink { component, .. } => format!(
            "the working directory {dir} is refused: `{component}` is a symlink, and lks-agent \
             runs commands only in real directories beneath the root (make it a directory)"
        ),
        RootError::NotADirectory { component, .. } => {
            format!("the working directory {dir} is refused: `{component}` is not a directory")
        }
        RootError::Missing { .. } => format!(
            "the working directory {dir} does not exist beneath the root (sync it first, or \
             fix the workdir)"
        ),
        e => format!("cannot open the working directory {dir}: {e}"),
    }
}

/// A command for a child of the agent: `argv` in `cwd`, in a process group of its
/// own (so the whole tree it starts can be signalled at once), stdin from
/// /dev/null, stdout and stderr piped, and the agent's environment without the
/// token. `argv[0]` is looked up in PATH (the child's, if `extra_env` sets one).
pub fn command<'a>(
    argv: &[String],
    cwd: &WorkDir,
    extra_env: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_remove(TOKEN_ENV)
        .envs(extra_env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    match cwd {
        WorkDir::Opened(dir) => enter_before_exec(&mut cmd, dir.clone()),
        WorkDir::Path(path) => {
            cmd.current_dir(path);
        }
    }
    cmd
}

/// Makes the child enter `dir` with fchdir(2) between fork and exec. The
/// agent's one use of `unsafe`.
#[allow(unsafe_code)]
fn enter_before_exec(cmd: &mut Command, dir: Arc<OwnedFd>) {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes one system call
    // (fchdir) and allocates nothing (an error is made from its errno). The
    // descriptor stays open in the child until exec (it is close-on-exec).
    unsafe {
        cmd.pre_exec(move || rustix::process::fchdir(&*dir).map_err(std::io::Error::from));
    }
}

/// A readable reason why `argv0` could not be started.
pub fn spawn_error(argv0: &str, e: &std::io::Error) -> String {
    match e.kind() {
        // lks runs `sh:` steps and commands with the image's /bin/sh.
        std::io::ErrorKind::NotFound if argv0 == "/bin/sh" => format!(
            "the image has no shell (`/bin/sh` does not exist), and this command is written \
             with `sh:`: write it as `cmd:` with an argv (e.g. cmd: [\"/app/tool\", \"arg\"]), \
             which lks-agent runs without a shell ({e})"
        ),
        std::io::ErrorKind::NotFound if argv0.contains('/') => {
            format!("`{argv0}` does not exist ({e})")
        }
        std::io::ErrorKind::NotFound => format!(
            "`{argv0}` was not found on PATH ({}): is it installed in the image?",
            std::env::var("PATH").unwrap_or_default()
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("`{argv0}` is not executable ({e})")
        }
        _ => format!("cannot start `{argv0}`: {e}"),
    }
}

/// Sends `sig` to every process of the group `pgid`; an empty group is fine.
pub fn signal_group(pgid: Pid, sig: Signal) {
    match rustix::process::kill_process_group(pgid, sig) {
        Ok(()) | Err(Errno::SRCH) => {}
        Err(e) => tracing::warn!(
            pgid = pgid.as_raw_pid(),
            "cannot signal the process group: {e}"
        ),
    }
}

/// Whether any process (zombies included) is still in the group `pgid`.
pub fn group_exists(pgid: Pid) -> bool {
    !matches!(
        rustix::process::test_kill_process_group(pgid),
        Err(Errno::SRCH)
    )
}

/// Waits until the group `pgid` is empty; false if it is not by `deadline`.
pub async fn group_gone_by(pgid: Pid, deadline: Instant) -> bool {
    // Most apps exit within milliseconds of SIGTERM, and a restart waits for
    // this: poll fast at first, then back off to GROUP_POLL.
    let mut pause = Duration::from_millis(1);
    loop {
        if !group_exists(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(GROUP_POLL);
    }
}

/// Stops a whole process group: SIGTERM, up to `grace` for it to empty, then
/// SIGKILL. Returns whether SIGKILL was needed.
pub async fn stop_group(pgid: Pid, grace: Duration) -> bool {
    /// After SIGKILL only the reaping is left; this bounds a process stuck in
    /// the kernel (uninterruptible sleep).
    const AFTER_KILL: Duration = Duration::from_secs(5);
    if !group_exists(pgid) {
        return false;
    }
    signal_group(pgid, Signal::TERM);
    if group_gone_by(pgid, Instant::now() + grace).await {
        return false;
    }
    tracing::warn!(
        pgid = pgid.as_raw_pid(),
        "still running {}s after SIGTERM: sending SIGKILL",
        grace.as_secs_f64()
    );
    signal_group(pgid, Signal::KILL);
    if !group_gone_by(pgid, Instant::now() + AFTER_KILL).await {
        tracing::warn!(
            pgid = pgid.as_raw_pid(),
            "process group not empty {}s after SIGKILL",
            AFTER_KILL.as_secs()
        );
    }
    true
}
