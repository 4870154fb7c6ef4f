//! `lks sync --once` makes the agent's root equal to the local tree, minus what
//! is ignored, against the real binaries.

use lks_e2e::*;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

const TOKEN: &str = "initial-sync-token";

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Paths the local side ignores, for comparing trees.
fn ignored(rel: &str) -> bool {
    rel == ".git"
        || rel.starts_with("node_modules")
        || rel.ends_with(".log") && !rel.contains('/')
        || rel.ends_with(".bak")
        || rel == "web/dist"
        || rel == "target"
        || rel == "escape"
        || rel == "web/escape2"
}

#[test]
fn an_initial_sync_of_a_generated_tree_gives_an_equal_tree_without_ignored_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    generate_tree(&src, 3000, 6_000_000, 42);
    // Empty and nested directories, modes, symlinks inside and outside the root.
    std::fs::create_dir_all(src.join("empty/deeper/still-empty")).unwrap();
    std::fs::create_dir_all(src.join("private")).unwrap();
    std::fs::set_permissions(src.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    write(&src, "bin/run.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        src.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(&src, "empty-file", b"");
    symlink("bin/run.sh", src.join("link-to-script")).unwrap();
    symlink("../d1", src.join("d0/link-to-sibling")).unwrap();
    symlink("d0", src.join("link-to-dir")).unwrap();
    symlink("/etc/passwd", src.join("escape")).unwrap();
    // Ignored: .git, .dockerignore (root-anchored), .lksignore (any level), --exclude.
    write(&src, ".git/HEAD", b"ref: refs/heads/main\n");
    write(&src, ".dockerignore", b"node_modules\n*.log\n");
    write(
        &src,
        "node_modules/left-pad/index.js",
        b"module.exports = 1;\n",
    );
    write(&src, "server.log", b"noise\n");
    write(&src, "logs/kept.log", b"docker's *.log is root-only\n");
    write(&src, ".lksignore", b"*.bak\n");
    write(&src, "web/.lksignore", b"dist/\n");
    write(&src, "web/dist/app.js", b"built\n");
    write(&src, "web/src/app.js", b"source\n");
    write(&src, "deep/a/b/c/old.bak", b"backup\n");
    write(&src, "target/debug/out", b"build output\n");
    symlink("../../outside", src.join("web/escape2")).unwrap();

    let agent = Agent::start(&dst, TOKEN);
    let out = sync_once(&src, &agent.url, TOKEN, &["--exclude", "/target"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lks sync failed: {stderr}");
    assert!(
        stderr.contains("skipping symlink escape -> /etc/passwd"),
        "{stderr}"
    );

    let want = snapshot_with(&src, ignored);
    let got = snapshot(&dst);
    let d = diff(&want, &got);
    assert!(d.is_empty(), "trees differ:\n{}", d.join("\n"));
    assert!(got.contains_key("logs/kept.log"));
    assert!(got.contains_key("empty/deeper/still-empty"));
    assert!(
        !got.contains_key("node_modules")
            && !got.contains_key(".git")
            && !got.contains_key("escape")
    );
    assert_eq!(got["private"], Snap::Dir { mode: 0o700 });
}

#[test]
fn a_second_sync_of_an_unchanged_tree_sends_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate_tree(&src, 500, 1_000_000, 7);
    let agent = Agent::start(&tmp.path().join("dst"), TOKEN);
    assert!(sync_once(&src, &agent.url, TOKEN, &[]).status.success());
    let out = sync_once(&src, &agent.url, TOKEN, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("synced: 0 files, 0 deleted, 0 other, 0 bytes sent"),
        "{stdout}"
    );
}

#[test]
fn a_root_that_already_holds_the_tree_costs_almost_nothing() {
    // As when the files are baked into the image: same content, other mtimes.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    generate_tree(&src, 300, 3_000_000, 9);
    generate_tree(&dst, 300, 3_000_000, 9);
    let agent = Agent::start(&dst, TOKEN);
    let out = sync_once(&src, &agent.url, TOKEN, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_success(&out);
    let sent: u64 = stdout
        .split(" bytes sent")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {stdout:?}"));
    assert!(
        sent < 30_000,
        "sent {sent} bytes for a tree the agent already had: {stdout}"
    );
    assert!(stdout.contains("synced: 0 files"), "{stdout}");
}

/// `lks sync --once` with lks's debug log, which says how many local files
/// it read to compare them with the agent's and how many hashes it kept.
fn sync_once_saying(src: &Path, url: &str) -> String {
    let out = lks_sync()
        .arg(src)
        .args(["--to", url, "--once"])
        .env("LKS_TOKEN", TOKEN)
        .env("LKS_LOG", "lks=debug")
        .output()
        .unwrap();
    assert_success(&out);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_second_run_reads_only_the_files_that_changed_since_the_first() {
    // The agent's copies have other mtimes (an image's files), so the first
    // run must read every local file to tell they are equal; the next one
    // has their hashes from the first.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    generate_tree(&src, 200, 400_000, 3);
    generate_tree(&dst, 200, 400_000, 3);
    let agent = Agent::start(&dst, TOKEN);
    let said = sync_once_saying(&src, &agent.url);
    assert!(said.contains("synced: 0 files"), "{said}");
    assert!(said.contains("hashed 200 files"), "{said}");

    // Nothing changed: nothing is read, nor compared.
    let said = sync_once_saying(&src, &agent.url);
    assert!(said.contains("synced: 0 files"), "{said}");
    assert!(said.contains("both sides unchanged"), "{said}");
    assert!(!said.contains("hashed "), "read files again: {said}");

    // One file edited (same size, other content): read, and sent; the
    // others' hashes come from the first run.
    let edited = std::fs::read_dir(src.join("d0/s0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.metadata().unwrap().len() > 0)
        .unwrap();
    let mut data = std::fs::read(&edited).unwrap();
    data[0] ^= 0xff;
    std::fs::write(&edited, &data).unwrap();
    let said = sync_once_saying(&src, &agent.url);
    assert!(said.contains("synced: 1 files"), "{said}");
    assert!(said.contains("199 of 200 kept hashes still hold"), "{said}");
    assert!(
        said.contains("hashed 1 files"),
        "only the edited file is read: {said}"
    );
    let rel = edited.strip_prefix(&src).unwrap();
    assert_eq!(std::fs::read(dst.join(rel)).unwrap(), data);
}

#[test]
fn deleted_and_retyped_paths_are_mirrored() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    write(&src, "a/b/c.txt", b"c");
    write(&src, "file-becomes-dir", b"x");
    write(&src, "dir-becomes-file/inner", b"y");
    write(&src, "gone/deep/x", b"z");
    let agent = Agent::start(&dst, TOKEN);
    assert!(sync_once(&src, &agent.url, TOKEN, &[]).status.success());
    std::fs::remove_dir_all(src.join("gone")).unwrap();
    std::fs::remove_file(src.join("file-becomes-dir")).unwrap();
    write(&src, "file-becomes-dir/now", b"dir");
    std::fs::remove_dir_all(src.join("dir-becomes-file")).unwrap();
    write(&src, "dir-becomes-file", b"file");
    let out = sync_once(&src, &agent.url, TOKEN, &[]);
    assert_success(&out);
    assert_same_tree(&src, &dst);
}

#[test]
fn files_in_ignored_paths_on_the_agent_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    write(&src, "app.js", b"app");
    write(&src, ".lksignore", b"node_modules/\n");
    // Installed in the image, not present locally.
    write(
        &dst,
        "node_modules/dep/index.js",
        b"installed by npm in the image",
    );
    let agent = Agent::start(&dst, TOKEN);
    let out = sync_once(&src, &agent.url, TOKEN, &[]);
    assert_success(&out);
    assert_eq!(
        std::fs::read(dst.join("node_modules/dep/index.js")).unwrap(),
        b"installed by npm in the image"
    );
    assert_eq!(std::fs::read(dst.join("app.js")).unwrap(), b"app");
}

/// `n` small files (`f0`, `f1`, ..., each holding its number) spread over
/// 100 directories of `src`.
fn spread_files(src: &Path, n: usize) {
    for i in 0..n {
        let p = src.join(format!("d{}/f{i}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        }
        std::fs::write(p, i.to_string()).unwrap();
    }
}

#[test]
fn a_tree_larger_than_one_batch_is_split_and_arrives_whole() {
    // More files than the host puts in one batch (HOST_FILES_PER_BATCH).
    let n = lks_proto::limits::HOST_FILES_PER_BATCH + 50;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    spread_files(&src, n);
    let agent = Agent::start(&tmp.path().join("dst"), TOKEN);
    let out = sync_once(&src, &agent.url, TOKEN, &[]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("synced: {n} files")));
    let d = diff(&snapshot(&src), &snapshot(&tmp.path().join("dst")));
    assert!(
        d.is_empty(),
        "{}",
        d.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// `lks sync --once` with its hash cache in `cache`; its `synced:` line.
fn once_cached(src: &Path, url: &str, cache: &Path) -> String {
    let out = std::process::Command::new(bin("lks"))
        .arg("sync")
        .arg(src)
        .args(["--to", url, "--once"])
        .env("LKS_TOKEN", TOKEN)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_resync_when_neither_side_changed_fetches_nothing_and_any_change_on_either_side_is_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, cache) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("cache"),
    );
    generate_tree(&src, 500, 500_000, 7);
    let agent = Agent::start(&dst, TOKEN);
    let url = agent.url.clone();
    let equal = |what: &str| {
        let d = diff(&snapshot(&src), &snapshot(&dst));
        assert!(d.is_empty(), "{what}: {d:#?}");
    };
    let cold = once_cached(&src, &url, &cache);
    assert!(!cold.contains("synced: 0 files"), "{cold}");
    // The agent vouched that its side is the manifest plus the cold sync's
    // batches: the next run compares nothing.
    let second = once_cached(&src, &url, &cache);
    assert!(
        second.contains("both sides unchanged since the last sync"),
        "{second}"
    );
    equal("after the quick resync");

    // Changed behind lks's back on the agent: seen, and undone.
    std::fs::write(dst.join("stray.txt"), b"not in the source\n").unwrap();
    let first_file = snapshot(&src)
        .into_keys()
        .find(|p| src.join(p).is_file())
        .unwrap();
    std::fs::write(dst.join(&first_file), b"edited on the agent\n").unwrap();
    let out = once_cached(&src, &url, &cache);
    assert!(!out.contains("both sides unchanged"), "{out}");
    equal("after an edit on the agent");
    assert!(!dst.join("stray.txt").exists());

    // Changed locally: seen, and synced; the next run is quick again, and
    // still sees a change made on the agent since.
    assert!(once_cached(&src, &url, &cache).contains("both sides unchanged"));
    std::fs::write(src.join(&first_file), b"edited locally\n").unwrap();
    let out = once_cached(&src, &url, &cache);
    assert!(out.contains("synced: 1 files"), "{out}");
    equal("after a local edit");
    assert!(once_cached(&src, &url, &cache).contains("both sides unchanged"));
    std::fs::write(dst.join(&first_file), b"edited on the agent again\n").unwrap();
    let out = once_cached(&src, &url, &cache);
    assert!(out.contains("synced: 1 files"), "{out}");
    equal("after an edit on the agent after a changing sync");

    // A new agent (another boot): compared again.
    drop(agent);
    let agent = Agent::start(&dst, TOKEN);
    let out = once_cached(&src, &agent.url, &cache);
    assert!(!out.contains("both sides unchanged"), "{out}");
    equal("after the agent restarted");
}

#[test]
fn a_long_sync_on_a_terminal_shows_what_it_has_sent_and_clears_it_at_the_end() {
    // Long enough to pass the half second before the progress shows (20,000
    // files take two seconds in a debug build, ~0.8 s in a release one).
    let n = 20_000;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    spread_files(&src, n);
    // `script` runs lks on a pseudo-terminal: what a developer sees.
    let on_a_terminal = |dst: &Path, progress: &str| {
        let agent = Agent::start(dst, TOKEN);
        let lks = bin("lks");
        let line = format!(
            "'{}' sync '{}' --to {} --once",
            lks.display(),
            src.display(),
            agent.url
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("LKS_TOKEN", TOKEN)
            .env("LKS_PROGRESS", progress)
            .env("XDG_CACHE_HOME", lks.parent().unwrap().join("e2e-cache"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run script (util-linux)");
        let seen = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{seen}");
        assert!(seen.contains(&format!("synced: {n} files")), "{seen}");
        seen
    };
    let seen = on_a_terminal(&tmp.path().join("dst"), "");
    assert!(seen.contains("sync: sent "), "no progress shown:\n{seen}");
    // Cleared before the summary: the summary is the last line standing.
    let summary = seen.rfind("synced: ").unwrap();
    assert!(
        !seen[summary..].contains("sync: sent "),
        "progress after the summary:\n{seen}"
    );
    let d = diff(&snapshot(&src), &snapshot(&tmp.path().join("dst")));
    assert!(d.is_empty(), "{}", d[..d.len().min(5)].join("\n"));
    // Asked not to (`LKS_PROGRESS=never`), it says nothing but the summary
    // (nor through pipes, where it is never shown: what every other test
    // reads).
    let seen = on_a_terminal(&tmp.path().join("dst2"), "never");
    assert!(!seen.contains("sync: sent "), "{seen}");
}
