//! When the kernel refuses the agent a watch of its root (its user has all
//! the inotify instances it may have), every Manifest looks at the whole
//! root again, loses nothing, and says in its warnings which limit and the
//! sysctl that raises it. The agent and a process that holds every
//! instance its user may have run as another user (65534), so the limit is
//! that user's alone.

use lks_e2e::raw::{Client, LoggingAgent};
use lks_e2e::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const TOKEN: &str = "agent-watch-limits-token";

/// Not a shim in root's home (another user cannot run it).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// A process of user `uid` holding every inotify instance that user may
/// have, until it is dropped.
struct Holder(Child);

impl Holder {
    fn start(uid: u32) -> (Holder, usize) {
        let script = "import ctypes, sys\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             fds = []\n\
             while True:\n    fd = libc.inotify_init1(0)\n    if fd < 0: break\n    fds.append(fd)\n\
             print(len(fds), ctypes.get_errno(), flush=True)\n\
             sys.stdin.read()\n";
        let mut child = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .args([python(), "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv (util-linux)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut said = line.split_whitespace();
        let held: usize = said.next().and_then(|n| n.parse().ok()).expect("a count");
        let errno: i32 = said.next().and_then(|n| n.parse().ok()).expect("an errno");
        assert_eq!(errno, 24, "the holder stopped on EMFILE: {line}");
        (Holder(child), held)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refused_an_inotify_instance_rescans_every_manifest_and_says_which_limit() {
    let me = rustix::process::geteuid().as_raw();
    let uid = if me == 65534 { 65533 } else { 65534 };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    write(&root, "a/one.txt", "one\n");
    for p in ["", "a", "a/one.txt"] {
        rustix::fs::chown(
            root.join(p),
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(uid)),
        )
        .unwrap();
    }
    let (_holder, held) = Holder::start(uid);
    assert!(held > 0, "the holder got no instance at all");
    let setpriv = [
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
    ]
    .map(String::from);
    let wrapper: Vec<&str> = setpriv.iter().map(|s| s.as_str()).collect();
    let agent = LoggingAgent::start_with(&wrapper, &root, TOKEN, &[]);
    let mut c = Client::connect(&agent.url, Some(format!("Bearer {TOKEN}"))).await;
    for round in 0..2 {
        let (entries, warnings) = c.manifest_of("").await.expect("Manifest");
        let line = agent.next_line_with("manifest refreshed: ");
        assert!(
            line.contains("full scan (the root is not watched)"),
            "{line}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("sysctl fs.inotify.max_user_instances")),
            "round {round}: the answer names the limit: {warnings:?}"
        );
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        let expected: &[&str] = if round == 0 {
            &["a", "a/one.txt"]
        } else {
            &["a", "a/one.txt", "a/two.txt"]
        };
        assert_eq!(paths, expected);
        // Another process's change, seen by the next rescan.
        write(&root, "a/two.txt", "two\n");
    }
}
