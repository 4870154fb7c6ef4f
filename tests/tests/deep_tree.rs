//! A tree thousands of levels deep is synced and deleted in time that
//! follows its size, and crashes neither side (no recursion whose depth
//! follows the tree: the agent is PID 1 in a container).

use lks_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "deep-tree-token";

/// `levels` nested directories `d` under `base`, a file at the bottom; made
/// by descriptor, one level at a time (the paths exceed PATH_MAX).
fn deep(base: &Path, levels: usize) {
    use rustix::fs::{Mode, OFlags};
    std::fs::create_dir_all(base).unwrap();
    let dir = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(base, dir, Mode::empty()).unwrap();
    for _ in 0..levels {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, "d", dir, Mode::empty()).unwrap();
    }
    let leaf = rustix::fs::openat(
        &fd,
        "leaf.txt",
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&leaf, b"leaf\n").unwrap();
}

#[test]
fn a_tree_thousands_of_levels_deep_is_synced_and_deleted_and_the_agent_lives() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src, "keep.txt", "keep\n");
    // 1,500 levels: a 3,000-byte path, within the protocol's path limit.
    deep(&src, 1500);
    // What the app made in the agent's root: deeper than any path lks sends.
    deep(&dst.join("junk"), 3000);
    let mut agent = Agent::start(&dst, TOKEN);

    let t = Instant::now();
    let out = sync_once(&src, &agent.url, TOKEN, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!("1,500 levels synced in {} ms", t.elapsed().as_millis());
    assert!(dst.join("d").is_dir() && !dst.join("junk").exists());
    let mut leaf = dst.clone();
    for _ in 0..1500 {
        leaf.push("d");
    }
    // 1,500 levels fit in PATH_MAX.
    assert_eq!(
        std::fs::read_to_string(leaf.join("leaf.txt")).unwrap(),
        "leaf\n"
    );

    // Deleted locally: one delete, the agent removes the whole tree.
    std::fs::rename(src.join("d"), tmp.path().join("moved")).unwrap();
    let t = Instant::now();
    let out = sync_once(&src, &agent.url, TOKEN, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!("1,500 levels deleted in {} ms", t.elapsed().as_millis());
    assert!(!dst.join("d").exists());
    assert!(
        agent.running(),
        "the agent died: {:?}",
        agent.stderr.try_iter().collect::<Vec<_>>()
    );
    // Generous bounds: before, the host overflowed its stack, then took
    // minutes, and the agent overflowed its stack deleting.
    assert!(t.elapsed() < Duration::from_secs(60));
}
