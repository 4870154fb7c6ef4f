//! `lks sync` in watch mode: every change on the host reaches the agent, however
//! the changes come, and losing the agent loses nothing.

use lks_e2e::Rng;
use lks_e2e::*;
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "watch-mode-token";
const CONVERGE: Duration = Duration::from_secs(20);

fn converged(src: &Path, dst: &Path) -> bool {
    diff(&snapshot(src), &snapshot(dst)).is_empty()
}

fn assert_converges(src: &Path, dst: &Path, what: &str) {
    if !wait_until(CONVERGE, || converged(src, dst)) {
        let d = diff(&snapshot(src), &snapshot(dst));
        panic!(
            "{what}: the agent's tree did not converge:\n{}",
            d.join("\n")
        );
    }
}

/// One change a developer (or their tools) can make to the tree.
#[derive(Clone, Debug)]
enum Change {
    Write {
        file: usize,
        dir: usize,
        len: usize,
        seed: u64,
    },
    Append {
        file: usize,
        dir: usize,
    },
    Delete {
        file: usize,
        dir: usize,
    },
    Rename {
        from: (usize, usize),
        to: (usize, usize),
    },
    RenameDir {
        from: usize,
        to: usize,
    },
    Chmod {
        file: usize,
        dir: usize,
        exec: bool,
    },
    Mkdir {
        dir: usize,
    },
    Rmdir {
        dir: usize,
    },
    Symlink {
        file: usize,
        dir: usize,
        target: usize,
    },
}

const DIRS: [&str; 5] = ["", "a", "a/b", "c", "c/d/e"];
const FILES: [&str; 4] = ["x.txt", "y.bin", "z", "main.go"];

fn path(root: &Path, dir: usize, file: usize) -> std::path::PathBuf {
    root.join(DIRS[dir]).join(FILES[file])
}

fn apply(root: &Path, c: &Change) {
    // Changes may fail (renaming a file that does not exist): like an editor's,
    // they are attempts, and only what they did to the tree matters.
    match c {
        Change::Write {
            file,
            dir,
            len,
            seed,
        } => {
            let p = path(root, *dir, *file);
            let _ = std::fs::create_dir_all(p.parent().unwrap());
            let _ = std::fs::write(p, Rng::new(*seed).bytes(*len));
        }
        Change::Append { file, dir } => {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .append(true)
                .open(path(root, *dir, *file))
            {
                let _ = f.write_all(b"appended line\n");
            }
        }
        Change::Delete { file, dir } => {
            let _ = std::fs::remove_file(path(root, *dir, *file));
        }
        Change::Rename { from, to } => {
            let _ = std::fs::rename(path(root, from.0, from.1), path(root, to.0, to.1));
        }
        Change::RenameDir { from, to } => {
            if from != to && !DIRS[*to].starts_with(DIRS[*from]) && *from != 0 && *to != 0 {
                let _ = std::fs::rename(root.join(DIRS[*from]), root.join(DIRS[*to]));
            }
        }
        Change::Chmod { file, dir, exec } => {
            let mode = if *exec { 0o755 } else { 0o644 };
            let _ = std::fs::set_permissions(
                path(root, *dir, *file),
                std::fs::Permissions::from_mode(mode),
            );
        }
        Change::Mkdir { dir } => {
            let _ = std::fs::create_dir_all(root.join(DIRS[*dir]));
        }
        Change::Rmdir { dir } => {
            if *dir != 0 {
                let _ = std::fs::remove_dir_all(root.join(DIRS[*dir]));
            }
        }
        Change::Symlink { file, dir, target } => {
            let p = path(root, *dir, *file);
            if std::fs::symlink_metadata(&p).is_err() {
                let _ = std::os::unix::fs::symlink(FILES[*target], p);
            }
        }
    }
}

fn change() -> impl Strategy<Value = Change> {
    let f = 0..FILES.len();
    let d = 0..DIRS.len();
    prop_oneof![
        4 => (f.clone(), d.clone(), 0usize..70_000, any::<u64>())
            .prop_map(|(file, dir, len, seed)| Change::Write { file, dir, len, seed }),
        2 => (f.clone(), d.clone()).prop_map(|(file, dir)| Change::Append { file, dir }),
        2 => (f.clone(), d.clone()).prop_map(|(file, dir)| Change::Delete { file, dir }),
        2 => ((d.clone(), f.clone()), (d.clone(), f.clone())).prop_map(|(from, to)| Change::Rename { from, to }),
        1 => (d.clone(), d.clone()).prop_map(|(from, to)| Change::RenameDir { from, to }),
        1 => (f.clone(), d.clone(), any::<bool>()).prop_map(|(file, dir, exec)| Change::Chmod { file, dir, exec }),
        1 => d.clone().prop_map(|dir| Change::Mkdir { dir }),
        1 => d.clone().prop_map(|dir| Change::Rmdir { dir }),
        1 => (f.clone(), d, f).prop_map(|(file, dir, target)| Change::Symlink { file, dir, target }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 30, .. ProptestConfig::default() })]

    #[test]
    fn random_changes_on_the_host_converge_on_the_agent(
        steps in proptest::collection::vec((change(), 0u64..4), 1..40)
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("a")).unwrap();
        std::fs::write(src.join("a/x.txt"), b"start").unwrap();
        // Never touched: an emptied root is a safety stop, tested on its own.
        std::fs::write(src.join("keep.txt"), b"keep").unwrap();
        let agent = Agent::start(&dst, TOKEN);
        let _watch = Watch::start(&src, &agent.url, TOKEN, &[]);
        for (c, pause_ms) in &steps {
            apply(&src, c);
            if *pause_ms > 0 {
                std::thread::sleep(Duration::from_millis(*pause_ms * 3));
            }
        }
        if !wait_until(CONVERGE, || converged(&src, &dst)) {
            let d = diff(&snapshot(&src), &snapshot(&dst));
            prop_assert!(false, "did not converge after {steps:?}:\n{}", d.join("\n"));
        }
    }
}

#[test]
fn a_burst_of_a_thousand_new_files_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let agent = Agent::start(&dst, TOKEN);
    let _watch = Watch::start(&src, &agent.url, TOKEN, &[]);
    let mut rng = Rng::new(1000);
    for i in 0..1000 {
        let p = src.join(format!("burst/{}/f{i}.txt", i % 17));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, rng.bytes(200 + i)).unwrap();
    }
    assert_converges(&src, &dst, "after a burst of 1000 files");
}

#[test]
fn each_applied_batch_prints_one_line_with_files_bytes_and_latency() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let agent = Agent::start(&dst, TOKEN);
    let mut watch = Watch::start(&src, &agent.url, TOKEN, &[]);
    std::fs::write(src.join("one.txt"), b"hello").unwrap();
    let line = watch.wait_line("batch 1:", Duration::from_secs(10));
    assert!(
        line.contains("1 files") && line.contains("bytes sent") && line.ends_with(" ms"),
        "{line}"
    );
    assert_eq!(std::fs::read(dst.join("one.txt")).unwrap(), b"hello");
}

#[test]
fn sigterm_stops_watch_mode_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let agent = Agent::start(&dst, TOKEN);
    let mut watch = Watch::start(&src, &agent.url, TOKEN, &[]);
    let status = watch.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn watch_mode_waits_for_an_agent_that_is_not_up_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("early.txt"), b"before the agent").unwrap();
    // Reserve a port, then free it for the agent to take later.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut watch = Watch::spawn(&src, &format!("http://{addr}"), TOKEN, &[]);
    std::thread::sleep(Duration::from_millis(400));
    let _agent = Agent::start_on(&dst, TOKEN, &addr);
    watch.wait_line("initial sync", Duration::from_secs(15));
    assert_converges(&src, &dst, "after the agent came up");
    let retries: Vec<String> = watch.stderr.try_iter().collect();
    assert!(
        retries.iter().any(|l| l.contains("retrying in")),
        "{retries:?}"
    );
}

#[test]
fn an_agent_killed_mid_batch_leaves_no_partial_file_and_watch_mode_converges_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    // A batch large enough to be cut in the middle.
    generate_tree(&src, 60, 90_000_000, 5);
    let mut agent = Agent::start(&dst, TOKEN);
    let addr = agent.addr.clone();
    let mut watch = Watch::spawn(&src, &agent.url, TOKEN, &[]);
    // Kill as soon as the first files have landed, while the rest is in flight.
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read_dir(&dst)
            .map(|d| d.count() > 0)
            .unwrap_or(false)),
        "nothing reached the agent"
    );
    std::thread::sleep(Duration::from_millis(5));
    agent.kill();
    // No final path holds a partial file: every file there is a complete copy.
    let mut complete = 0;
    for entry in walkdir::WalkDir::new(&dst).min_depth(1) {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(lks_proto::STAGING_PREFIX) {
            continue;
        }
        let rel = entry.path().strip_prefix(&dst).unwrap();
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(src.join(rel)).unwrap(),
            "{} is a partial file",
            rel.display()
        );
        complete += 1;
    }
    assert!(
        complete < 60,
        "the agent was killed too late to test anything ({complete} files done)"
    );
    // Restart on the same address: watch mode reconnects and converges.
    let _agent = Agent::start_on(&dst, TOKEN, &addr);
    watch.wait_line("initial sync", Duration::from_secs(30));
    assert_converges(&src, &dst, "after the agent restarted");
    // The restarted agent removed the staging files left by the killed one.
    let leftovers: Vec<_> = walkdir::WalkDir::new(&dst)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(lks_proto::STAGING_PREFIX)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // And later changes still flow.
    std::fs::write(src.join("after-restart.txt"), b"still syncing").unwrap();
    assert_converges(&src, &dst, "a change after the restart");
}

#[test]
fn a_deleted_local_root_is_not_mirrored_and_syncing_resumes_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    generate_tree(&src, 50, 50_000, 3);
    let agent = Agent::start(&dst, TOKEN);
    let watch = Watch::start(&src, &agent.url, TOKEN, &[]);
    assert_converges(&src, &dst, "initially");
    let before = snapshot(&dst);
    std::fs::remove_dir_all(&src).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        snapshot(&dst),
        before,
        "the deletion of the local root was mirrored"
    );
    let stderr: Vec<String> = watch.stderr.try_iter().collect();
    assert!(stderr.iter().any(|l| l.contains("is gone")), "{stderr:?}");
    // It comes back (a branch switch, a re-clone): syncing resumes.
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("new.txt"), b"back again").unwrap();
    assert_converges(&src, &dst, "after the root came back");
}

#[test]
fn an_emptied_local_root_does_not_empty_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/a.txt"), b"a").unwrap();
    std::fs::write(src.join("b.txt"), b"b").unwrap();
    let agent = Agent::start(&dst, TOKEN);
    let watch = Watch::start(&src, &agent.url, TOKEN, &[]);
    assert_converges(&src, &dst, "initially");
    std::fs::remove_dir_all(src.join("sub")).unwrap();
    std::fs::remove_file(src.join("b.txt")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Deleting `sub` may have been synced on its own; the last deletion, which
    // would have emptied the agent, is not.
    assert!(dst.join("b.txt").exists());
    let stderr: Vec<String> = watch.stderr.try_iter().collect();
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("is empty while the agent")),
        "{stderr:?}"
    );
}

#[test]
fn watch_mode_retries_a_refused_token_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    let agent = Agent::start(&dst, TOKEN);
    let mut watch = Watch::spawn(&src, &agent.url, "not-the-token", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|l: &&String| l.contains("refused the token"))
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no retries: {seen:#?}"
        );
        if let Ok(l) = watch.stderr.recv_timeout(Duration::from_millis(100)) {
            seen.push(l);
        }
    }
    assert!(seen.iter().any(|l| l.contains("retrying in")), "{seen:#?}");
    assert!(!dst.join("a.txt").exists(), "a refused client wrote a file");
    assert!(watch.terminate().success());
}
