//! What `/proc` says of this machine's processes: every pid, and a process's
//! state, parent, group and start time (one parser of `/proc/PID/stat`);
//! and how lks stops a process group it started (an app its agent left, a
//! host resource's commands). Also the TCP sockets of `/proc/net/tcp*`
//! (one parser, for `ports.rs` and the API's peer check).

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

/// One TCP socket of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    /// Its local address as the kernel writes it (hex IP), and port.
    pub local: (String, u16),
    /// The remote end, likewise.
    pub remote: (String, u16),
    /// Whether it listens.
    pub listening: bool,
    /// The uid that owns it.
    pub uid: u32,
    /// Its inode (`socket:[INODE]` among a process's descriptors).
    pub inode: u64,
}

impl TcpSocket {
    /// How the kernel writes an IPv4 address and port.
    pub fn v4(ip: std::net::Ipv4Addr, port: u16) -> (String, u16) {
        (format!("{:08X}", u32::from_le_bytes(ip.octets())), port)
    }
}

/// Every TCP socket of this network namespace (IPv4 and IPv6).
pub fn tcp_sockets() -> Vec<TcpSocket> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| tcp_table(&t))
        .collect()
}

/// The sockets of one `/proc/net/tcp*` table.
pub fn tcp_table(table: &str) -> Vec<TcpSocket> {
    let address = |a: &str| {
        let (ip, port) = a.rsplit_once(':')?;
        Some((ip.to_string(), u16::from_str_radix(port, 16).ok()?))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode; 0A is LISTEN.
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(TcpSocket {
                local: address(f.get(1)?)?,
                remote: address(f.get(2)?)?,
                listening: *f.get(3)? == "0A",
                uid: f.get(7)?.parse().ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
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
