//! The agent keeps what it knows of its root in memory and current: what
//! another process changes in the root shows in the next Manifest, watched
//! (only the changed paths are described again) or not (`--no-watch-root`:
//! every request looks at the root again); a Manifest after no change
//! describes nothing, nor does one after the agent's own batch; a prefix
//! answers only that directory and what is beneath it.

use lks_e2e::raw::{Batch, Client, LoggingAgent, whole_put};
use lks_e2e::*;
use lks_proto::v1::{Entry, EntryKind, Put};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

const TOKEN: &str = "agent-manifest-token";

/// One entry as the manifest says it: kind, mode, size, mtime, blake3 or
/// symlink target.
type Described = BTreeMap<String, String>;

fn described(entries: &[Entry]) -> Described {
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "the answer is sorted by path");
    entries
        .iter()
        .map(|e| {
            let what = match EntryKind::try_from(e.kind) {
                Ok(EntryKind::File) => format!(
                    "file {:o} {} bytes mtime {} {}",
                    e.mode,
                    e.size,
                    e.mtime_ns,
                    hex(&e.blake3)
                ),
                Ok(EntryKind::Dir) => format!("dir {:o}", e.mode),
                Ok(EntryKind::Symlink) => format!("link -> {}", e.link_target),
                _ => format!("unknown kind {}", e.kind),
            };
            (e.path.clone(), what)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What is really beneath `root`, as the manifest should say it.
fn truth(root: &Path) -> Described {
    let mut out = Described::new();
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| !lks_proto::is_staging_name(&e.file_name().to_string_lossy()));
    for entry in walk {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .display()
            .to_string();
        let md = entry.path().symlink_metadata().unwrap();
        let what = if md.is_symlink() {
            format!(
                "link -> {}",
                std::fs::read_link(entry.path()).unwrap().display()
            )
        } else if md.is_dir() {
            format!("dir {:o}", md.mode() & 0o777)
        } else {
            let content = std::fs::read(entry.path()).unwrap();
            format!(
                "file {:o} {} bytes mtime {} {}",
                md.mode() & 0o777,
                md.size(),
                md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                blake3::hash(&content).to_hex()
            )
        };
        out.insert(rel, what);
    }
    out
}

fn assert_same(manifest: &Described, root: &Path, what: &str) {
    let truth = truth(root);
    let diff: Vec<String> = truth
        .iter()
        .filter(|(k, v)| manifest.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: is {v}, the manifest says {:?}", manifest.get(k)))
        .chain(
            manifest
                .iter()
                .filter(|(k, _)| !truth.contains_key(*k))
                .map(|(k, v)| format!("{k}: not there, the manifest says {v}")),
        )
        .collect();
    assert!(diff.is_empty(), "{what}:\n{}", diff.join("\n"));
}

async fn client(agent: &LoggingAgent) -> Client {
    Client::connect(&agent.url, Some(format!("Bearer {TOKEN}"))).await
}

fn plant(root: &Path) {
    write(root, "a/one.txt", "one\n");
    write(root, "a/two.txt", "two\n");
    write(root, "b/gone.txt", "to be deleted\n");
    write(root, "c/keep.txt", "to become a symlink\n");
    write(root, "mode.txt", "its mode changes\n");
}

/// What another process does to the root.
fn change(root: &Path) {
    std::fs::write(root.join("a/one.txt"), "one, changed\n").unwrap();
    write(root, "a/three.txt", "a new file\n");
    std::fs::remove_file(root.join("b/gone.txt")).unwrap();
    std::fs::remove_dir(root.join("b")).unwrap();
    write(root, "new/deep/er/f.txt", "in a new nested directory\n");
    write(root, "new/g.txt", "g\n");
    std::fs::set_permissions(
        root.join("mode.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::remove_file(root.join("c/keep.txt")).unwrap();
    symlink("../a/one.txt", root.join("c/keep.txt")).unwrap();
    std::fs::rename(root.join("a/two.txt"), root.join("c/two.txt")).unwrap();
}

async fn changes_by_another_process_show_in_the_next_manifest(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    plant(&root);
    let agent = LoggingAgent::start(&root, TOKEN, extra);
    let mut c = client(&agent).await;
    let (first, warnings) = c.manifest_of("").await.expect("Manifest");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_same(&described(&first), &root, "the first answer");
    change(&root);
    let (second, _) = c.manifest_of("").await.expect("Manifest");
    let second = described(&second);
    assert_same(&second, &root, "after another process changed the root");
    assert!(second.contains_key("new/deep/er/f.txt") && !second.contains_key("b"));
    // And again: a second round of changes, in what the first one made.
    // A directory moved out of the root and another of the same name moved
    // in, with a file of the same name (nothing in it was ever watched, and
    // nothing says its entries changed).
    let outside = tmp.path().join("outside");
    write(&outside, "deep/er/f.txt", "the same name, another file\n");
    write(&outside, "deep/again.txt", "again\n");
    std::fs::rename(root.join("new/deep"), outside.join("old-deep")).unwrap();
    std::fs::rename(outside.join("deep"), root.join("new/deep")).unwrap();
    let (third, _) = c.manifest_of("").await.expect("Manifest");
    assert_same(&described(&third), &root, "after a second round of changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_in_a_watched_root_by_another_process_show_in_the_next_manifest() {
    changes_by_another_process_show_in_the_next_manifest(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_in_an_unwatched_root_show_in_the_next_manifest_by_a_rescan() {
    changes_by_another_process_show_in_the_next_manifest(&["--no-watch-root"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_after_no_change_or_after_the_agents_own_batch_describes_nothing_again() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    plant(&root);
    let agent = LoggingAgent::start(&root, TOKEN, &[]);
    let mut c = client(&agent).await;
    c.manifest_of("").await.expect("Manifest");
    let line = agent.next_line_with("manifest refreshed: ");
    assert!(line.contains("full scan (the watch starts)"), "{line}");
    assert!(line.contains("5 files hashed"), "{line}");
    c.manifest_of("").await.expect("Manifest");
    let line = agent.next_line_with("manifest refreshed: ");
    assert!(
        line.contains(
            "changes only (0 paths): 0 directories listed, 0 entries described, 0 files hashed"
        ),
        "{line}"
    );
    // The agent's own batch: files into directories that exist, a new
    // directory with files, a replaced file.
    let mut b = Batch::default();
    b.mkdir("fresh", 0o755);
    b.mkdir("fresh/sub", 0o700);
    b.puts(vec![
        whole_put("a/four.txt", b"four\n", 0o644),
        whole_put("a/one.txt", b"one, replaced\n", 0o644),
        whole_put("fresh/sub/y.txt", b"y\n", 0o644),
        whole_put("fresh/x.txt", b"x\n", 0o644),
        whole_put("top.txt", b"top\n", 0o644),
    ]);
    let r = c.apply(b.commit()).await.expect("Apply");
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    let (after, _) = c.manifest_of("").await.expect("Manifest");
    let line = agent.next_line_with("manifest refreshed: ");
    assert!(line.contains("changes only (0 paths)"), "{line}");
    assert_same(&described(&after), &root, "after the agent's own batch");
    // Someone else's changes right after are not taken for the agent's,
    // in the directories the batch made too (watched as they came in).
    std::fs::write(root.join("a/four.txt"), "four, theirs\n").unwrap();
    write(&root, "fresh/sub/theirs.txt", "theirs\n");
    let (after, _) = c.manifest_of("").await.expect("Manifest");
    let line = agent.next_line_with("manifest refreshed: ");
    assert!(line.contains("changes only (2 paths)"), "{line}");
    assert!(line.contains("2 files hashed"), "{line}");
    assert_same(&described(&after), &root, "after someone else's change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_names_the_version_it_leaves_only_when_nothing_else_changed_since_its_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    plant(&root);
    let agent = LoggingAgent::start(&root, TOKEN, &[]);
    let mut c = client(&agent).await;
    let put = |name: &str, data: &[u8]| {
        let mut b = Batch::default();
        b.puts(vec![whole_put(name, data, 0o644)]);
        b
    };

    // Planned against the current answer: the batch names the version the
    // next answer has, and that answer is the old one plus the batch.
    let v0 = c.manifest_version().await.expect("Manifest");
    assert!(!v0.is_empty());
    let r = c
        .apply(
            put(
                "a/new.txt",
                b"new
",
            )
            .commit_based_on(&v0),
        )
        .await
        .expect("Apply");
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert!(!r.version.is_empty() && r.version != v0, "{r:?}");
    assert_eq!(c.manifest_version().await.unwrap(), r.version);
    // Its version chains: the next batch planned against it names one too.
    let r2 = c
        .apply(
            put(
                "a/newer.txt",
                b"newer
",
            )
            .commit_based_on(&r.version),
        )
        .await
        .expect("Apply");
    assert!(!r2.version.is_empty(), "{r2:?}");

    // Someone else's change, seen by an answer in between: the batch
    // planned against the older answer names no version.
    std::fs::write(
        root.join("a/one.txt"),
        "theirs
",
    )
    .unwrap();
    let seen = c.manifest_version().await.unwrap();
    assert_ne!(seen, r2.version);
    let r = c
        .apply(
            put(
                "a/third.txt",
                b"3
",
            )
            .commit_based_on(&r2.version),
        )
        .await
        .expect("Apply");
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(r.version, "", "another change came between");

    // Someone else's change not looked at yet: the batch names a version,
    // but the next answer looks first and names another.
    let v = c.manifest_version().await.unwrap();
    std::fs::write(
        root.join("a/one.txt"),
        "theirs again
",
    )
    .unwrap();
    let r = c
        .apply(
            put(
                "a/fourth.txt",
                b"4
",
            )
            .commit_based_on(&v),
        )
        .await
        .expect("Apply");
    assert!(!r.version.is_empty(), "{r:?}");
    assert_ne!(c.manifest_version().await.unwrap(), r.version);

    // A failed operation, another agent's version, or none: no version.
    let v = c.manifest_version().await.unwrap();
    let mut bad = Batch::default();
    bad.puts(vec![Put {
        blake3: vec![0; 32],
        ..whole_put(
            "a/bad.txt",
            b"bad
",
            0o644,
        )
    }]);
    let r = c.apply(bad.commit_based_on(&v)).await.expect("Apply");
    assert!(!r.errors.is_empty());
    assert_eq!(r.version, "");
    let other = format!("0123456789abcdef.{}", v.rsplit_once('.').unwrap().1);
    let v = c.manifest_version().await.unwrap();
    let r = c
        .apply(
            put(
                "a/fifth.txt",
                b"5
",
            )
            .commit_based_on(&other),
        )
        .await
        .expect("Apply");
    assert_eq!(r.version, "", "based on {other}, at {v}");
    let r = c
        .apply(
            put(
                "a/sixth.txt",
                b"6
",
            )
            .commit(),
        )
        .await
        .unwrap();
    assert_eq!(r.version, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwatched_root_is_looked_at_again_on_every_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    plant(&root);
    let agent = LoggingAgent::start(&root, TOKEN, &["--no-watch-root"]);
    let mut c = client(&agent).await;
    for round in 0..2 {
        c.manifest_of("").await.expect("Manifest");
        let line = agent.next_line_with("manifest refreshed: ");
        assert!(
            line.contains("full scan (the root is not watched)"),
            "{line}"
        );
        assert!(line.contains("4 directories listed"), "{line}");
        // Hashed once, then known by their unchanged stat.
        let hashed = if round == 0 { 5 } else { 0 };
        assert!(line.contains(&format!("{hashed} files hashed")), "{line}");
    }
}

async fn a_prefix_answers_its_subtree(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    for p in ["a/x", "a/sub/y", "a.c", "a0", "ab/z", "b"] {
        write(&root, p, p);
    }
    let agent = LoggingAgent::start(&root, TOKEN, extra);
    let mut c = client(&agent).await;
    let paths =
        |entries: Vec<Entry>| -> Vec<String> { entries.into_iter().map(|e| e.path).collect() };
    let (a, _) = c.manifest_of("a").await.expect("Manifest a");
    assert_eq!(paths(a), ["a", "a/sub", "a/sub/y", "a/x"]);
    let (sub, _) = c.manifest_of("a/sub").await.expect("Manifest a/sub");
    assert_eq!(paths(sub), ["a/sub", "a/sub/y"]);
    let (none, warnings) = c.manifest_of("nothing/here").await.expect("Manifest");
    assert!(
        none.is_empty() && warnings.is_empty(),
        "{none:?} {warnings:?}"
    );
    // After a change beneath it.
    write(&root, "a/sub/new.txt", "new");
    let (sub, _) = c.manifest_of("a/sub").await.expect("Manifest a/sub");
    assert_eq!(paths(sub), ["a/sub", "a/sub/new.txt", "a/sub/y"]);
    let (all, _) = c.manifest_of("").await.expect("Manifest");
    assert_same(&described(&all), &root, "the whole root");
    let refused = c
        .manifest_of("../outside")
        .await
        .expect_err("a prefix outside the root");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_answers_only_that_directory_and_what_is_beneath_it() {
    a_prefix_answers_its_subtree(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_answers_only_its_subtree_in_an_unwatched_root_too() {
    a_prefix_answers_its_subtree(&["--no-watch-root"]).await;
}
