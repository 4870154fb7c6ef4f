//! `lks-agent` under test: `serve` and `supervise`, `lks sync` once and in
//! watch mode, and a gRPC channel to an agent.

use crate::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `lks-agent serve`.
pub struct Agent {
    child: Child,
    /// The address it listens on.
    pub addr: String,
    /// `http://ADDR`.
    pub url: String,
    /// Lines the agent wrote to stderr.
    pub stderr: mpsc::Receiver<String>,
}

impl Agent {
    /// Starts an agent on a free loopback port.
    pub fn start(root: &Path, token: &str) -> Agent {
        Agent::start_on(root, token, "127.0.0.1:0")
    }

    /// Starts an agent on `listen`.
    pub fn start_on(root: &Path, token: &str, listen: &str) -> Agent {
        let mut child = Command::new(bin("lks-agent"))
            .args(["serve", "--root"])
            .arg(root)
            .args(["--listen", listen])
            .env("LKS_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lks-agent");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read agent stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from lks-agent: {line:?}"))
            .to_string();
        let stderr = lines(child.stderr.take().unwrap());
        Agent {
            url: format!("http://{addr}"),
            addr,
            child,
            stderr,
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the agent with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `lks sync LOCAL --to URL --once [extra]`, with `LKS_TOKEN=token`.
pub fn sync_once(local: &Path, url: &str, token: &str, extra: &[&str]) -> std::process::Output {
    lks_sync()
        .arg(local)
        .args(["--to", url, "--once"])
        .args(extra)
        .env("LKS_TOKEN", token)
        .output()
        .expect("run lks sync")
}

/// A running `lks sync` in watch mode.
pub struct Watch {
    child: Child,
    /// Lines printed on stdout (one per applied batch).
    pub stdout: mpsc::Receiver<String>,
    /// Lines printed on stderr.
    pub stderr: mpsc::Receiver<String>,
}

impl Watch {
    /// Starts `lks sync LOCAL --to URL [extra]` and waits for its initial sync.
    pub fn start(local: &Path, url: &str, token: &str, extra: &[&str]) -> Watch {
        let mut w = Watch::spawn(local, url, token, extra);
        w.wait_line("initial sync", Duration::from_secs(60));
        w
    }

    /// Starts `lks sync` in watch mode without waiting.
    pub fn spawn(local: &Path, url: &str, token: &str, extra: &[&str]) -> Watch {
        let mut child = lks_sync()
            .arg(local)
            .args(["--to", url])
            .args(extra)
            .env("LKS_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lks sync");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Watch {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for a stdout line containing `needle`; panics with the stderr seen.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => {
                    let err: Vec<String> = self.stderr.try_iter().collect();
                    panic!("no line containing {needle:?} within {timeout:?}; stderr: {err:#?}");
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child, "lks sync", Duration::from_secs(10))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gRPC channel to the agent at `url`; panics with the URL if none.
pub async fn agent_channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the agent at {url}: {e}"))
}

/// The command line of `lks-agent supervise --root ROOT --listen 127.0.0.1:0
/// [extra] -- APP...`, with `LKS_TOKEN=token`, ready to be spawned with
/// [`SupervisedAgent::spawn`] (or wrapped, e.g. by `unshare`, via its args).
pub fn supervise_command(root: &Path, token: &str, extra: &[&str], app: &[&str]) -> Command {
    let mut cmd = Command::new(bin("lks-agent"));
    cmd.args(supervise_args(root, extra, app))
        .env("LKS_TOKEN", token);
    cmd
}

/// The arguments after `lks-agent` for `supervise` (see [`supervise_command`]).
pub fn supervise_args(root: &Path, extra: &[&str], app: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["supervise".into(), "--root".into()];
    args.push(root.into());
    args.extend(["--listen", "127.0.0.1:0"].map(Into::into));
    args.extend(extra.iter().map(Into::into));
    args.push("--".into());
    args.extend(app.iter().map(Into::into));
    args
}

/// A running `lks-agent supervise` (or a wrapper around it).
pub struct SupervisedAgent {
    child: Child,
    /// The address it listens on.
    pub addr: String,
    /// `http://ADDR`.
    pub url: String,
    /// The lines it wrote to stdout after `listening on ...` (the app's stdout).
    pub stdout: mpsc::Receiver<String>,
    /// The lines it wrote to stderr (its log and the app's stderr).
    pub stderr: mpsc::Receiver<String>,
}

impl SupervisedAgent {
    /// Starts `lks-agent supervise` for `app` on a free loopback port.
    pub fn start(root: &Path, token: &str, extra: &[&str], app: &[&str]) -> SupervisedAgent {
        SupervisedAgent::spawn(supervise_command(root, token, extra, app))
    }

    /// Spawns `cmd` (an agent, or a wrapper that execs one) and waits for its
    /// `listening on` line.
    pub fn spawn(mut cmd: Command) -> SupervisedAgent {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lks-agent supervise");
        let stderr = lines(child.stderr.take().unwrap());
        let stdout = lines(child.stdout.take().unwrap());
        let first = match stdout.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let err: Vec<String> = stderr.try_iter().collect();
                panic!("lks-agent supervise printed no first line; stderr: {err:#?}");
            }
        };
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from lks-agent: {first:?}"))
            .to_string();
        SupervisedAgent {
            url: format!("http://{addr}"),
            addr,
            child,
            stdout,
            stderr,
        }
    }

    /// The process id of what was spawned.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; panics if it does not come.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        terminate(&mut self.child, "lks-agent", timeout)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SupervisedAgent {
    /// SIGTERM first, so the agent stops its app; SIGKILL if it does not exit.
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(15));
    }
}
