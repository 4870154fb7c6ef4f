//! When the kernel's queue of inotify events for the agent's root
//! overflows, the next Manifest looks at the whole root again and loses
//! nothing. The queue is made tiny while the agent makes its inotify
//! instance (the limit is read then; this test binary runs alone, cargo
//! runs test binaries one at a time) and the agent is stopped (SIGSTOP)
//! while the root changes, so its events cannot be read in time.

use lks_e2e::raw::{Client, LoggingAgent};
use lks_e2e::*;
use rustix::process::{Pid, Signal, kill_process};

const LIMIT: &str = "/proc/sys/fs/inotify/max_queued_events";
const TOKEN: &str = "agent-watch-overflow-token";

struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(LIMIT, &self.0);
    }
}

/// Continues the agent even when the test fails while it is stopped.
struct Stopped(Pid);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill_process(self.0, Signal::CONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_queue_of_root_events_makes_the_agent_rescan_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    for i in 0..30 {
        write(&root, &format!("old/f{i}.txt"), &format!("old {i}\n"));
    }
    let old = std::fs::read_to_string(LIMIT).expect("read the inotify queue limit");
    std::fs::write(LIMIT, "16")
        .unwrap_or_else(|e| panic!("cannot lower {LIMIT} (this test needs root, as CI has): {e}"));
    let restore = Restore(old);
    let agent = LoggingAgent::start(&root, TOKEN, &[]);
    let mut c = Client::connect(&agent.url, Some(format!("Bearer {TOKEN}"))).await;
    // The first Manifest makes the watch, with a queue of 16 events.
    c.manifest_of("").await.expect("Manifest");
    assert!(
        agent
            .next_line_with("manifest refreshed: ")
            .contains("full scan (the watch starts)")
    );
    drop(restore);

    let pid = Pid::from_raw(agent.pid() as i32).unwrap();
    kill_process(pid, Signal::STOP).unwrap();
    let stopped = Stopped(pid);
    // Far more events than the queue holds, in directories it watches.
    for i in 0..200 {
        write(&root, &format!("old/new{i}.txt"), &format!("new {i}\n"));
    }
    write(&root, "new/deep/f.txt", "in a new directory\n");
    for i in 0..10 {
        std::fs::remove_file(root.join(format!("old/f{i}.txt"))).unwrap();
    }
    std::fs::write(root.join("old/f20.txt"), "changed\n").unwrap();
    drop(stopped);

    let (entries, warnings) = c.manifest_of("").await.expect("Manifest");
    let line = agent.next_line_with("manifest refreshed: ");
    assert!(line.contains("full scan (events were lost)"), "{line}");
    assert!(
        warnings.iter().any(|w| w.contains("max_queued_events")),
        "the answer says why it rescanned: {warnings:?}"
    );
    let listed: std::collections::BTreeMap<String, Vec<u8>> = entries
        .into_iter()
        .filter(|e| e.kind == lks_proto::v1::EntryKind::File as i32)
        .map(|e| (e.path, e.blake3))
        .collect();
    let expected: std::collections::BTreeMap<String, Vec<u8>> = snapshot(&root)
        .keys()
        .filter(|p| root.join(p).is_file())
        .map(|p| {
            let hash = blake3::hash(&std::fs::read(root.join(p)).unwrap());
            (p.clone(), hash.as_bytes().to_vec())
        })
        .collect();
    assert_eq!(listed.len(), 221);
    assert_eq!(
        listed, expected,
        "the answer after the overflow lost something"
    );
    // Watched again: the next answer describes only what changed.
    c.manifest_of("").await.expect("Manifest");
    let line = agent.next_line_with("manifest refreshed: ");
    assert!(line.contains("changes only (0 paths)"), "{line}");
}
