//! Shared harness for lks's end-to-end tests and benchmarks: it runs the real
//! `lks` and `lks-agent` binaries (built by `cargo build --workspace --bins`,
//! which the test command does first) and compares real directory trees.
//! The benchmarks' shared statistics and result table are in [`bench`].

pub mod bench;
pub mod kube;
pub mod raw;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of a workspace binary in the same target directory as the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first with `cargo build --workspace --bins` \
         (the README's test command does)",
        path.display()
    );
    path
}

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

/// Forwards the lines of a pipe to a channel from a background thread.
pub fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    forward_lines(r, |line| line)
}

/// Like [`lines`], each line with the moment it was read.
pub fn timed_lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<(Instant, String)> {
    forward_lines(r, |line| (Instant::now(), line))
}

fn forward_lines<T: Send + 'static>(
    r: impl std::io::Read + Send + 'static,
    wrap: fn(String) -> T,
) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(wrap(line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// `lks sync LOCAL --to URL --once [extra]`, with `LKS_TOKEN=token`.
pub fn sync_once(local: &Path, url: &str, token: &str, extra: &[&str]) -> std::process::Output {
    Command::new(bin("lks"))
        .arg("sync")
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
        let mut child = Command::new(bin("lks"))
            .arg("sync")
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

/// Sends SIGTERM to `child` and waits up to `timeout` for it to exit; panics
/// (naming `what`) if it does not.
pub fn terminate(child: &mut Child, what: &str, timeout: Duration) -> std::process::ExitStatus {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {timeout:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `child` whatever it does: SIGTERM if it still runs, up to `grace`
/// for it to exit, then SIGKILL; reaps it. For Drop guards (never panics).
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(None) = child.try_wait() {
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = wait_until(grace, || matches!(child.try_wait(), Ok(Some(_))));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET path` on `127.0.0.1:port` (HTTP/1.0), if anything answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_exchange(port, path).map(|raw| http_body(&raw))
}

/// The status code and body of `GET path` on `127.0.0.1:port` (HTTP/1.0), if
/// anything answers with a status line.
pub fn http_status(port: u16, path: &str) -> Option<(u16, String)> {
    let raw = http_exchange(port, path)?;
    let code = raw.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, http_body(&raw)))
}

/// The whole response to `GET path` on `127.0.0.1:port`.
fn http_exchange(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    Some(raw)
}

/// The body of `GET path` on `127.0.0.1:port` over HTTP/1.1, read by its
/// length (Content-Length or chunks), not until the connection closes: a
/// pod port-forward passes the server's close on only about a second later.
pub fn http11_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_nodelay(true).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16384];
    let complete = |raw: &[u8]| -> Option<String> {
        let text = std::str::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let head = head.to_ascii_lowercase();
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            return (body.len() >= len).then(|| body[..len].to_string());
        }
        if head.contains("transfer-encoding: chunked") {
            let mut out = String::new();
            let mut rest = body;
            loop {
                let (size, after) = rest.split_once("\r\n")?;
                let size = usize::from_str_radix(size.trim(), 16).ok()?;
                if size == 0 {
                    return Some(out);
                }
                if after.len() < size + 2 {
                    return None;
                }
                out.push_str(&after[..size]);
                rest = &after[size + 2..];
            }
        }
        None
    };
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(body) = complete(&raw) {
            return Some(body);
        }
    }
}

fn http_body(raw: &str) -> String {
    raw.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
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

/// One entry of a tree snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Snap {
    /// A file: permission bits and blake3 of the content.
    File { mode: u32, hash: String },
    /// A directory and its permission bits.
    Dir { mode: u32 },
    /// A symlink and its target.
    Link { target: String },
}

/// Everything beneath `root` (not following symlinks), skipping paths for which
/// `skip` is true (and, for directories, everything beneath them). The agent's
/// transient staging files are left out, and entries that vanish while the
/// snapshot is taken are skipped (the caller compares again later).
pub fn snapshot_with(root: &Path, skip: impl Fn(&str) -> bool) -> BTreeMap<String, Snap> {
    let mut out = BTreeMap::new();
    let mut it = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .into_iter();
    while let Some(entry) = it.next() {
        let Ok(entry) = entry else { continue };
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(lks_proto::STAGING_PREFIX)
        {
            continue;
        }
        if skip(&rel) {
            if entry.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let Ok(md) = entry.path().symlink_metadata() else {
            continue;
        };
        let snap = if md.is_symlink() {
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            Snap::Link {
                target: target.to_string_lossy().into(),
            }
        } else if md.is_dir() {
            Snap::Dir {
                mode: md.mode() & 0o777,
            }
        } else {
            let Ok(data) = std::fs::read(entry.path()) else {
                continue;
            };
            Snap::File {
                mode: md.mode() & 0o777,
                hash: blake3::hash(&data).to_hex().to_string(),
            }
        };
        out.insert(rel, snap);
    }
    out
}

/// Everything beneath `root`.
pub fn snapshot(root: &Path) -> BTreeMap<String, Snap> {
    snapshot_with(root, |_| false)
}

/// Describes how two snapshots differ (empty when equal).
pub fn diff(a: &BTreeMap<String, Snap>, b: &BTreeMap<String, Snap>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("only in the first: {k} {v:?}")),
            Some(w) if w != v => out.push(format!("differs: {k}: {v:?} vs {w:?}")),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push(format!("only in the second: {k} {:?}", b[k]));
        }
    }
    out
}

/// Output bytes (a command's stdout or stderr) as text.
pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Panics (with its stderr) unless a finished `lks` command succeeded.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Panics, listing the differences, unless the trees at `a` and `b` are equal.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let d = diff(&snapshot(a), &snapshot(b));
    assert!(d.is_empty(), "trees differ:\n{}", d.join("\n"));
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A small deterministic pseudo-random generator for building test trees.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A value below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A random 8-hex-digit suffix for names that must not collide with earlier
/// or concurrent runs (the shared registry keeps its images between runs).
pub fn unique() -> String {
    format!(
        "{:08x}",
        Rng::new(std::process::id() as u64 ^ now_nanos()).next_u64() as u32
    )
}

/// Writes a generated tree of `files` files totalling about `total_bytes` under
/// `root`, spread over nested directories; returns the paths written.
pub fn generate_tree(root: &Path, files: usize, total_bytes: u64, seed: u64) -> Vec<PathBuf> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(files);
    let avg = (total_bytes / files.max(1) as u64).max(1);
    for i in 0..files {
        let dir = root
            .join(format!("d{}", i % 50))
            .join(format!("s{}", (i / 50) % 20));
        std::fs::create_dir_all(&dir).unwrap();
        let size = rng.below(avg * 2) as usize;
        let path = dir.join(format!("f{i}.dat"));
        std::fs::write(&path, rng.bytes(size)).unwrap();
        if i % 7 == 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        out.push(path);
    }
    out
}

// ---------------------------------------------------------------------------
// `lks-agent supervise` and the processes it runs
// ---------------------------------------------------------------------------

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

/// One process as `/proc/PID/stat` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Its pid.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its state (`R`, `S`, `Z` for a zombie, ...).
    pub state: char,
    /// Its parent's pid.
    pub ppid: u32,
    /// Its process group.
    pub pgrp: u32,
}

/// `/proc/PID/stat` of `pid`, if the process exists (zombies included).
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = raw.find('(')?;
    let close = raw.rfind(')')?;
    let comm = raw[open + 1..close].to_string();
    let mut rest = raw[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

/// Every process on the machine (as far as this pid namespace sees).
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Whether `pid` is a running process (a zombie, already dead, does not count).
pub fn process_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// The live (non-zombie) processes of process group `pgid`.
pub fn live_group_members(pgid: u32) -> Vec<ProcStat> {
    all_processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && p.state != 'Z' && p.state != 'X')
        .collect()
}

/// Reads a pid that a test app wrote (`echo $$ > FILE`), waiting up to `timeout`
/// for the file to exist and hold a whole line; `not` skips a stale value.
pub fn read_pid_file(path: &Path, timeout: Duration, not: Option<u32>) -> u32 {
    let mut pid = None;
    let found = wait_until(timeout, || {
        pid = std::fs::read_to_string(path)
            .ok()
            .filter(|s| s.ends_with('\n'))
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|p| Some(*p) != not);
        pid.is_some()
    });
    assert!(found, "no pid in {} within {timeout:?}", path.display());
    pid.unwrap()
}

/// Writes `root/rel`, creating its directories.
pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A running `lks up`, its output collected line by line.
pub struct Up {
    pub child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// `lks up -f WS/lks.yaml ARGS...`, to run in `ws` with `NO_COLOR=1`, its
/// stdout and stderr piped.
pub fn up_command(ws: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("lks"));
    cmd.arg("up")
        .arg("-f")
        .arg(ws.join("lks.yaml"))
        .args(args)
        .current_dir(ws)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

impl Up {
    /// Starts `lks up -f WS/lks.yaml ARGS...` in `ws`.
    pub fn start(ws: &Path, args: &[&str]) -> Up {
        Up::spawn(up_command(ws, args))
    }

    /// Starts `cmd` (an [`up_command`], perhaps with more environment).
    pub fn spawn(mut cmd: Command) -> Up {
        let mut child = cmd.spawn().unwrap();
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        Up {
            child,
            out,
            err,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing all of `needles` (seen already or to
    /// come); returns it.
    pub fn wait(&mut self, needles: &[&str], timeout: Duration) -> String {
        self.wait_since(0, needles, timeout)
    }

    /// Where the output is now: [`Up::wait_since`] looks only at what comes
    /// after.
    pub fn mark(&mut self) -> usize {
        self.drain().len()
    }

    /// Waits for a line after `mark` containing all of `needles`; returns it.
    pub fn wait_since(&mut self, mark: usize, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        self.drain();
        let matches = |l: &String| needles.iter().all(|n| l.contains(n));
        if let Some(l) = self.seen.iter().skip(mark).find(|l| matches(l)) {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let err: Vec<String> = self.err.try_iter().collect();
                    panic!(
                        "no line with {needles:?} within {timeout:?} after line {mark}\nstdout:\n{}\nstderr:\n{}",
                        self.seen.join("\n"),
                        err.join("\n")
                    );
                }
            }
        }
    }

    /// What `lks up` wrote to stderr so far (each line once).
    pub fn stderr_lines(&mut self) -> Vec<String> {
        self.err.try_iter().collect()
    }

    /// Lines seen so far, plus any pending.
    pub fn drain(&mut self) -> &[String] {
        while let Ok(l) = self.out.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    /// The lines `lks up` printed for `service` so far.
    pub fn service_lines(&mut self, service: &str) -> Vec<String> {
        let prefix = format!("{service} ");
        self.drain()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .cloned()
            .collect()
    }

    /// The container `lks up` last printed for `service` (`--runtime docker`).
    pub fn container_of(&mut self, service: &str) -> String {
        self.container_line_field(service, "(container ")
    }

    /// The image of the container `lks up` last printed for `service`.
    pub fn image_of(&mut self, service: &str) -> String {
        self.container_line_field(service, ", image ")
    }

    /// What follows `label` up to the next comma in the last
    /// `SERVICE ... (container NAME, image REF, ...)` line.
    fn container_line_field(&mut self, service: &str, label: &str) -> String {
        let line = self
            .service_lines(service)
            .into_iter()
            .rev()
            .find(|l| l.contains("(container "))
            .unwrap_or_else(|| panic!("no container line for {service}"));
        line.split(label)
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("no {label:?} in {line:?}"))
            .to_string()
    }

    /// The pids `lks up` printed for `service`.
    pub fn pids(&mut self, service: &str) -> Vec<i32> {
        self.service_lines(service)
            .iter()
            .filter_map(|l| {
                let i = l.find(" pid ")?;
                l[i + 5..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// SIGTERM, then wait for the exit (SIGKILL after 20 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child, "lks up", Duration::from_secs(20))
    }
}

impl Drop for Up {
    /// Even when a test fails: SIGTERM first, so `lks up` stops the agents and
    /// apps it started (SIGKILL would leave them running), then SIGKILL.
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(15));
    }
}

/// Runs the `docker` CLI and asserts it succeeded.
pub fn docker(args: &[&str]) -> std::process::Output {
    let out = docker_unchecked(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the `docker` CLI; the caller checks the outcome.
pub fn docker_unchecked(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker ({e}): tests/run.sh installs docker.io and starts dockerd")
        })
}

/// The trimmed stdout of a successful `docker` command.
pub fn docker_text(args: &[&str]) -> String {
    String::from_utf8_lossy(&docker(args).stdout)
        .trim()
        .to_string()
}

/// Fails with how to build `image` when the engine does not have it
/// (test images are built offline by the scripts in `images/`).
pub fn require_image(image: &str, built_by: &str) {
    let out = docker_unchecked(&["image", "inspect", "--format", "{{.Id}}", image]);
    assert!(
        out.status.success(),
        "the test image {image} is missing: build it with {built_by} (tests/run.sh does)"
    );
}

/// `docker inspect --format FORMAT OBJECT`, trimmed; panics if it fails.
pub fn docker_inspect(object: &str, format: &str) -> String {
    docker_text(&["inspect", "--format", format, object])
}

/// Whether the engine has the `kind` (`container`, `image`, `network`,
/// `volume`) named `name`.
pub fn docker_exists(kind: &str, name: &str) -> bool {
    docker_unchecked(&[kind, "inspect", name]).status.success()
}

/// The ids `docker KIND... -q --filter label=LABEL` lists (`kind` e.g.
/// `["ps", "-a"]`, `["network", "ls"]`, `["volume", "ls"]`).
pub fn docker_ids(kind: &[&str], label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let mut args = kind.to_vec();
    args.extend(["-q", "--filter", &filter]);
    docker_text(&args).lines().map(str::to_string).collect()
}

/// `REPO:TAG` of every tagged local image of `repo`.
pub fn local_tags(repo: &str) -> Vec<String> {
    let out = docker_unchecked(&["images", "--format", "{{.Repository}}:{{.Tag}}", repo]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.ends_with(":<none>"))
        .map(str::to_string)
        .collect()
}

/// What a test made in the Docker engine, for [`DockerCleanup`].
#[derive(Default)]
pub struct DockerObjects {
    /// Workspaces whose containers, networks and volumes (labelled
    /// `dev.lks.workspace=PATH`) go.
    pub workspaces: Vec<PathBuf>,
    /// Containers, removed with their anonymous volumes.
    pub containers: Vec<String>,
    /// Networks.
    pub networks: Vec<String>,
    /// Volumes.
    pub volumes: Vec<String>,
    /// Repositories whose local tags all go (a registry keeps its copy).
    pub repos: Vec<String>,
    /// Images (references or ids).
    pub images: Vec<String>,
}

/// Removes, when dropped (also when the test fails), what a test made in the
/// engine: containers first, then networks, volumes and images. Declare it
/// before the `Up`s of a test, so that it runs after them.
pub struct DockerCleanup(pub DockerObjects);

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let made = &self.0;
        let ids = |args: &[&str]| -> Vec<String> {
            String::from_utf8_lossy(&docker_unchecked(args).stdout)
                .lines()
                .map(str::to_string)
                .collect()
        };
        for ws in &made.workspaces {
            let label = format!("label=dev.lks.workspace={}", ws.display());
            for c in ids(&["ps", "-aq", "--filter", &label]) {
                let _ = docker_unchecked(&["rm", "-f", "-v", &c]);
            }
            for n in ids(&["network", "ls", "-q", "--filter", &label]) {
                let _ = docker_unchecked(&["network", "rm", &n]);
            }
            for v in ids(&["volume", "ls", "-q", "--filter", &label]) {
                let _ = docker_unchecked(&["volume", "rm", "-f", &v]);
            }
        }
        for c in &made.containers {
            let _ = docker_unchecked(&["rm", "-f", "-v", c]);
        }
        for n in &made.networks {
            let _ = docker_unchecked(&["network", "rm", n]);
        }
        for v in &made.volumes {
            let _ = docker_unchecked(&["volume", "rm", "-f", v]);
        }
        for repo in &made.repos {
            for t in local_tags(repo) {
                let _ = docker_unchecked(&["rmi", "-f", &t]);
            }
        }
        for i in &made.images {
            let _ = docker_unchecked(&["rmi", "-f", i]);
        }
    }
}

/// The Kubernetes version rendered objects are validated against (what
/// `lks cluster create` pins by default).
pub const K8S_VERSION: &str = "1.34.0";

/// Validates Kubernetes objects (YAML, several documents allowed) against
/// the API schemas of `version` with `kubernetes-validate --strict` (PyPI;
/// tests/run.sh installs it). Err carries its complaints.
pub fn kubernetes_validate(yaml: &str, version: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, yaml).map_err(|e| e.to_string())?;
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn", "-k", version])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run kubernetes-validate ({e}): install it with `pip install kubernetes-validate` \
                 (tests/run.sh does)"
            )
        });
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Copies the repository's `examples/` into `dst`, leaving out the top-level
/// entries named in `skip` (and any `.lks` work dir).
pub fn copy_examples(dst: &Path, skip: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in walkdir::WalkDir::new(&src).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&src).unwrap();
        if rel.starts_with(".lks") || skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let to = dst.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// [`copy_examples`] but for `worker` (it needs Go in an image), with a
/// workspace file listing web (Node) and api (Python) and the alias
/// `frontend: [web]`.
pub fn copy_web_and_api_examples(dst: &Path) {
    copy_examples(dst, &["worker"]);
    write(
        dst,
        "lks.yaml",
        "services: [\"web/lks.service.yaml\", \"api/lks.service.yaml\"]\naliases:\n  frontend: [web]\n",
    );
}

// ---------------------------------------------------------------------------
// Snapshots of reviewed output (`tests/snapshots/`)
// ---------------------------------------------------------------------------

/// `tests/snapshots/REL_PATH`.
pub fn snapshot_file(rel_path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(rel_path)
}

/// Panics, with a line diff, unless `actual` equals the reviewed snapshot
/// `tests/snapshots/REL_PATH`; with `LKS_UPDATE_SNAPSHOTS=1` writes `actual`
/// there instead (review the change with `git diff`).
pub fn assert_snapshot(rel_path: &str, actual: &str) {
    if let Err(e) = check_snapshot(rel_path, actual) {
        panic!("{e}");
    }
}

/// [`assert_snapshot`] that returns what it would panic with, so that a test
/// can report every snapshot that differs at once.
pub fn check_snapshot(rel_path: &str, actual: &str) -> Result<(), String> {
    let path = snapshot_file(rel_path);
    let expected = match std::fs::read_to_string(&path) {
        Ok(expected) => Some(expected),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot read the snapshot {}: {e}", path.display()),
    };
    if expected.as_deref() == Some(actual) {
        return Ok(());
    }
    if std::env::var("LKS_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("wrote the snapshot {}", path.display());
        return Ok(());
    }
    Err(match expected {
        None => format!(
            "no snapshot {}; review this output and write it with LKS_UPDATE_SNAPSHOTS=1:\n{actual}",
            path.display()
        ),
        Some(expected) => format!(
            "the output differs from the snapshot {} (- snapshot, + now; \
             LKS_UPDATE_SNAPSHOTS=1 rewrites it if the change is intended):\n{}",
            path.display(),
            line_diff(&expected, actual)
        ),
    })
}

/// A line diff (longest common subsequence): `-` for lines only in `a`, `+`
/// for lines only in `b`, changed lines with 2 lines of context.
fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = vec![];
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            out.push_str(&format!("{c} {line}\n"));
        } else {
            skipped = true;
        }
    }
    out
}
