//! Processes: the workspace's binaries, their output as lines, stopping
//! them, and what `/proc` says of the processes they leave.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
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

/// `lks sync` with the cache of hashes it keeps between runs under the
/// build directory (`target/*/e2e-cache`), not in the home directory.
pub fn lks_sync() -> std::process::Command {
    let lks = bin("lks");
    let mut cmd = std::process::Command::new(&lks);
    cmd.arg("sync").env(
        "XDG_CACHE_HOME",
        lks.parent().expect("the build directory").join("e2e-cache"),
    );
    cmd
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
    /// The CPU it used, user and system (clock ticks).
    pub cpu_ticks: u64,
}

/// The resident memory of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Resident now (VmRSS), bytes.
    pub rss: u64,
    /// The most it was ever resident (VmHWM), bytes.
    pub peak: u64,
}

/// The resident memory of `pid`, if the process exists.
pub fn proc_memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Memory {
        rss: kib("VmRSS:")? * 1024,
        peak: kib("VmHWM:")? * 1024,
    })
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
    // Fields 6 to 13 (session .. cmajflt), then utime and stime.
    let mut rest = rest.skip(8);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
        cpu_ticks: utime + stime,
    })
}

/// Every `pid N` a program printed, in order.
pub fn pids_said(text: &str) -> Vec<u32> {
    text.split("pid ")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
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

/// Runs `lks ARGS` in `dir` (with `NO_COLOR=1`) to the end; its output.
pub fn lks_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin("lks"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run lks")
}

/// Runs `lks ARGS` with `env`, failing the test if it takes over `timeout`.
pub fn run_lks(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (std::process::Output, Duration) {
    let t = Instant::now();
    let mut cmd = std::process::Command::new(bin("lks"));
    cmd.args(args)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn lks");
    let (out, err) = (
        lines(child.stdout.take().unwrap()),
        lines(child.stderr.take().unwrap()),
    );
    let finished = wait_until(timeout, || matches!(child.try_wait(), Ok(Some(_))));
    if !finished {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let took = t.elapsed();
    // The pipes close with the process: collect everything.
    let collect = |rx: std::sync::mpsc::Receiver<String>| {
        let mut s = String::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
            s.push_str(&l);
            s.push('\n');
        }
        s.into_bytes()
    };
    let output = std::process::Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    };
    assert!(
        finished,
        "lks {args:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, took)
}
