//! One `lks up` per workspace, and what a killed one left behind.
//!
//! `lks up` holds an exclusive lock on `.lks/up.lock` (with its pid in it)
//! for as long as it runs: a second one is refused, naming that pid. The
//! local runtime records each agent it starts as `.lks/NAME/agent.pid` (pid
//! and start time, so a pid the kernel gave to another process since is not
//! mistaken for it), and a host resource each process it runs
//! (`.lks/NAME/run.pid`, `serve.pid`). An agent ends with its `lks up`
//! through its stdin pipe; one that could not (stopped, stuck), and a host
//! resource's process whose `lks up` was killed, are found by these records
//! and stopped, with what they started, by the next `lks up` and by `lks down`.

use rustix::fs::FlockOperation;
use rustix::process::{Pid, Signal};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// How long a leftover gets between SIGTERM and SIGKILL: as any group lks stops.
use crate::procs::GRACE;

/// Why a workspace cannot be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another `lks up` runs this workspace.
    #[error(
        "another lks up (pid {pid}) is running this workspace ({lock}); stop it first (Ctrl-C in its terminal, or `kill {pid}`)"
    )]
    Held {
        /// Its pid, as it wrote it.
        pid: String,
        /// The lock file.
        lock: String,
    },
    /// The lock file could not be made or locked.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

/// The lock of one `lks up` on its workspace, released when dropped (or
/// when the process ends, however it ends).
pub struct Claim {
    _file: std::fs::File,
}

impl Claim {
    /// Claims the workspace whose work dir is `work` (`.lks/`), creating it.
    pub fn take(work: &Path) -> Result<Claim, ClaimError> {
        let path = work.join("up.lock");
        let io = |cause| ClaimError::Io {
            path: path.clone(),
            cause,
        };
        std::fs::create_dir_all(work).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(ClaimError::Held {
                    pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
                    lock: path.display().to_string(),
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Claim { _file: file })
    }
}

/// The record of the process `what` (`agent`, `run`, `serve`) of `service`.
fn record_path(work: &Path, service: &str, what: &str) -> PathBuf {
    work.join(service).join(format!("{what}.pid"))
}

/// Records `pid` as the process `what` of `service` (best effort: without
/// the record only a leftover goes unnoticed).
pub fn record(work: &Path, service: &str, what: &str, pid: u32) {
    if let Some(start) = start_time(pid) {
        let _ = std::fs::create_dir_all(work.join(service));
        let _ = std::fs::write(record_path(work, service, what), format!("{pid} {start}\n"));
    }
}

/// Forgets the process `what` of `service` (it was stopped, or ended).
pub fn forget(work: &Path, service: &str, what: &str) {
    let _ = std::fs::remove_file(record_path(work, service, what));
}

/// A process's start time (clock ticks since boot).
fn start_time(pid: u32) -> Option<u64> {
    crate::procs::stat(pid).map(|s| s.start)
}

/// Whether `pid` is alive (not a zombie).
fn alive(pid: u32) -> bool {
    crate::procs::stat(pid).is_some_and(|s| s.alive())
}

/// The process groups of `pid`'s children (the app and its steps lead their
/// own).
fn child_groups(pid: u32) -> Vec<Pid> {
    crate::procs::pids()
        .filter_map(crate::procs::stat)
        .filter(|s| s.ppid == pid)
        .filter_map(|s| Pid::from_raw(s.pgrp))
        .collect()
}

/// What was found and stopped.
pub struct Stopped {
    /// The service.
    pub service: String,
    /// Its agent's pid.
    pub pid: u32,
}

/// Stops every process recorded under `work` that still runs (and what it
/// started), and removes the records. Call it holding the [`Claim`]: then
/// none of them belongs to a running `lks up`.
pub fn stop_leftovers(work: &Path) -> Vec<Stopped> {
    let Ok(dir) = std::fs::read_dir(work) else {
        return Vec::new();
    };
    let mut stopped = Vec::new();
    let records = dir.flatten().flat_map(|e| {
        let service = e.file_name().to_string_lossy().into_owned();
        let files = std::fs::read_dir(e.path()).into_iter().flatten().flatten();
        files
            .map(|f| f.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pid"))
            .map(move |p| (service.clone(), p))
    });
    for (service, path) in records {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut parts = text.split_whitespace();
        let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
        let start = parts.next().and_then(|s| s.parse::<u64>().ok());
        if let (Some(pid), Some(start)) = (pid, start)
            && start_time(pid) == Some(start)
            && alive(pid)
        {
            stop(pid);
            stopped.push(Stopped { service, pid });
        }
        let _ = std::fs::remove_file(&path);
    }
    stopped
}

/// SIGTERM to the agent's children's groups and to the agent (woken if it
/// was stopped), SIGKILL to what is left after [`GRACE`].
fn stop(pid: u32) {
    let Some(agent) = Pid::from_raw(pid as i32) else {
        return;
    };
    let groups = child_groups(pid);
    for g in &groups {
        let _ = rustix::process::kill_process_group(*g, Signal::CONT);
        let _ = rustix::process::kill_process_group(*g, Signal::TERM);
    }
    let _ = rustix::process::kill_process(agent, Signal::CONT);
    let _ = rustix::process::kill_process(agent, Signal::TERM);
    let deadline = Instant::now() + GRACE;
    let group_alive = |g: &Pid| rustix::process::test_kill_process_group(*g).is_ok();
    while Instant::now() < deadline && (alive(pid) || groups.iter().any(group_alive)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for g in &groups {
        let _ = rustix::process::kill_process_group(*g, Signal::KILL);
    }
    let _ = rustix::process::kill_process(agent, Signal::KILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_first_ones_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Claim::take(tmp.path()).unwrap();
        // flock is per open file: a second open in this process conflicts too.
        let e = Claim::take(tmp.path()).err().expect("a second claim");
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        Claim::take(tmp.path()).expect("free again once dropped");
    }

    #[test]
    fn a_record_of_a_process_that_is_gone_or_another_is_dropped_not_acted_on() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("web")).unwrap();
        // This very process, with a start time that is not its own: a reused pid.
        let me = std::process::id();
        std::fs::write(record_path(tmp.path(), "web", "agent"), format!("{me} 1\n")).unwrap();
        assert!(stop_leftovers(tmp.path()).is_empty());
        assert!(!record_path(tmp.path(), "web", "agent").exists());
    }
}
