//! What `/proc` says of this machine's processes: every pid, and a process's
//! state, parent, group and start time (one parser of `/proc/PID/stat`);
//! and how lks stops a process group it started (an app its agent left, a
//! host resource's commands).

use std::time::{Duration, Instant};

/// How long a process group gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(3);

/// SIGTERM to the process group `pgid`, then SIGKILL to what is left of it
/// after [`GRACE`]. `leader`, when it is lks's own child, is reaped on the
/// way: a zombie still counts as a member of its group.
pub async fn stop_group(pgid: rustix::process::Pid, leader: Option<&mut tokio::process::Child>) {
    use rustix::process::{Signal, kill_process_group, test_kill_process_group};
    if kill_process_group(pgid, Signal::TERM).is_err() {
        if let Some(leader) = leader {
            let _ = leader.wait().await;
        }
        return; // already gone
    }
    let deadline = Instant::now() + GRACE;
    let mut leader = leader;
    if let Some(l) = leader.as_deref_mut() {
        let _ = tokio::time::timeout_at(deadline.into(), l.wait()).await;
    }
    while test_kill_process_group(pgid).is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = kill_process_group(pgid, Signal::KILL);
    if let Some(l) = leader {
        let _ = l.wait().await;
    }
}

/// The fields of `/proc/PID/stat` lks uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `Z`...
    pub state: char,
    /// Its parent.
    pub ppid: u32,
    /// Its process group.
    pub pgrp: i32,
    /// When it started (clock ticks since boot): with the pid, who it is.
    pub start: u64,
}

impl Stat {
    /// Whether it runs (a zombie, already dead, does not).
    pub fn alive(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// The stat of `pid`, if it exists.
pub fn stat(pid: u32) -> Option<Stat> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a stat line. The command may hold spaces and parentheses: the
/// fields follow the last `)`, starting with field 3 (state).
fn parse(line: &str) -> Option<Stat> {
    let rest = line.get(line.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split(' ').collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        // Field 22.
        start: f.get(19)?.parse().ok()?,
    })
}

/// Every pid this pid namespace shows.
pub fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line =
            "42 (my (odd) app) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(
            parse(line),
            Some(Stat {
                state: 'S',
                ppid: 7,
                pgrp: 42,
                start: 12345
            })
        );
        let me = stat(std::process::id()).expect("this process");
        assert!(me.alive());
        assert!(pids().any(|p| p == std::process::id()));
    }
}
