//! Ports on this machine: whether one a service is about to listen on is
//! taken already, and by which process (from `/proc/net/tcp*` and the
//! processes' descriptors), so a leftover app is named rather than answering
//! a readiness check in the new one's place.

use crate::config::{Check, Service};

/// A process listening on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its command line.
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// A port taken before the service started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The port.
    pub port: u16,
    /// Who holds it, when it can be found (another user's process may not be).
    pub holder: Option<Holder>,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.holder {
            Some(h) => write!(f, "port {} is already taken by {h}", self.port),
            None => write!(f, "port {} is already taken by another process", self.port),
        }
    }
}

/// The ports a local service's app will listen on: its `ports`, and the
/// port its readiness check probes on this machine.
pub fn of_local_service(service: &Service) -> Vec<u16> {
    let mut ports = service.ports.clone();
    let local = |host: &str| {
        matches!(
            host.trim_start_matches('[').trim_end_matches(']'),
            "127.0.0.1" | "localhost" | "0.0.0.0" | "::1" | "::"
        )
    };
    let probed = service.readiness.as_ref().and_then(|r| match &r.check {
        Check::Http { url } => {
            let uri: hyper::Uri = url.parse().ok()?;
            let port = uri.port_u16().unwrap_or(80);
            local(uri.host()?).then_some(port)
        }
        Check::Tcp { address } => {
            let (host, port) = address.rsplit_once(':')?;
            local(host).then_some(port.parse().ok()?)
        }
        _ => None,
    });
    ports.extend(probed);
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The first of `ports` that something listens on already.
pub fn first_taken(ports: &[u16]) -> Option<Taken> {
    ports.iter().copied().find_map(|port| {
        // Any listener on the port, whatever its address, refuses this bind
        // (SO_REUSEADDR is set: connections in TIME_WAIT do not).
        let free = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok();
        (!free).then(|| Taken {
            port,
            holder: holder(port),
        })
    })
}

/// The process listening on TCP `port`, if it can be found.
pub fn holder(port: u16) -> Option<Holder> {
    let inodes: Vec<u64> = listening_inodes(&crate::procs::tcp_sockets(), port);
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for pid in crate::procs::pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if wanted.iter().any(|w| link.as_os_str() == w.as_str()) {
                let command = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        c.split(|b| *b == 0)
                            .filter(|a| !a.is_empty())
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                return Some(Holder { pid, command });
            }
        }
    }
    None
}

/// The inodes of the sockets listening on `port`.
fn listening_inodes(sockets: &[crate::procs::TcpSocket], port: u16) -> Vec<u64> {
    sockets
        .iter()
        .filter(|s| s.listening && s.local.1 == port)
        .map(|s| s.inode)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_found_with_its_process() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let taken = first_taken(&[port]).expect("taken");
        assert_eq!(taken.port, port);
        let holder = taken.holder.clone().expect("this process holds it");
        assert_eq!(holder.pid, std::process::id());
        assert!(
            taken.to_string().starts_with(&format!(
                "port {port} is already taken by pid {}",
                std::process::id()
            )),
            "{taken}"
        );
        drop(l);
        assert_eq!(first_taken(&[port]), None);
    }

    #[test]
    fn the_table_gives_listening_sockets_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n\
           1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n";
        let sockets = crate::procs::tcp_table(table);
        assert_eq!(listening_inodes(&sockets, 8080), vec![4242]);
        assert!(listening_inodes(&sockets, 8081).is_empty());
        assert_eq!(sockets[1].remote, ("0100007F".to_string(), 50000));
    }
}
