//! What `/proc` says of this machine's processes: every pid, and a process's
//! state, parent, group and start time (one parser of `/proc/PID/stat`).

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
