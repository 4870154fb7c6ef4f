//! When the kernel's inotify queue overflows, `lks sync` rescans instead of
//! losing changes. The queue is made tiny for this test binary alone (the
//! limit is read when a watcher is created; cargo runs test binaries one at a
//! time) and restored afterwards.

use lks_e2e::*;
use std::time::Duration;

const LIMIT: &str = "/proc/sys/fs/inotify/max_queued_events";

struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(LIMIT, &self.0);
    }
}

#[test]
fn an_overflowing_inotify_queue_triggers_a_rescan_and_nothing_is_lost() {
    let old = std::fs::read_to_string(LIMIT).expect("read the inotify queue limit");
    std::fs::write(LIMIT, "16")
        .unwrap_or_else(|e| panic!("cannot lower {LIMIT} (this test needs root, as CI has): {e}"));
    let _restore = Restore(old);
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let agent = Agent::start(&dst, "overflow-token");
    let watch = Watch::start(
        &src,
        &agent.url,
        "overflow-token",
        &["--exclude", "never-matches"],
    );
    // Far more events than the queue holds, in one burst.
    for i in 0..500 {
        std::fs::write(src.join(format!("f{i}.txt")), format!("file {i}")).unwrap();
    }
    let converged = wait_until(Duration::from_secs(20), || {
        diff(&snapshot(&src), &snapshot(&dst)).is_empty()
    });
    let stderr: Vec<String> = watch.stderr.try_iter().collect();
    assert!(
        converged,
        "did not converge: {:?}",
        diff(&snapshot(&src), &snapshot(&dst))
    );
    // The overflow really happened, and was answered with a rescan.
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("overflowed") && l.contains("rescanning")),
        "no overflow was reported; the test did not test anything: {stderr:#?}"
    );
}
