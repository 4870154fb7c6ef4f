//! New directories are made whole in the batch's staging directory and put
//! in place at the commit, each by one rename (with everything beneath it):
//! they land equal, with their modes, and nothing of them is visible before
//! the commit. A directory that someone else makes at the same place before
//! the commit wins: nothing of the batch's new directory is placed, each of
//! its operations is reported failed, and the rest of the batch applies.

use lks_e2e::raw::{Batch, Client, error_at, whole_put};
use lks_e2e::*;
use lks_proto::v1::{ApplyRequest, ApplyResult};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "staged-subtrees-token";

async fn client(agent: &Agent) -> Client {
    Client::connect(&agent.url, Some(format!("Bearer {TOKEN}"))).await
}

/// The staging entries (`.lks-stage.*`) anywhere beneath `root`.
fn staging_entries(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| lks_proto::is_staging_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// Whether a file named `name` exists anywhere beneath `dir`.
fn exists_beneath(dir: &Path, name: &str) -> bool {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name() == name)
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o777
}

/// A batch of new nested directories (mkdirs first, then the files, as the
/// host plans), and a file in a directory that exists.
fn new_tree(b: &mut Batch) -> Vec<(String, Vec<u8>, u32)> {
    b.mkdir("app", 0o755);
    b.mkdir("app/lib", 0o750);
    b.mkdir("app/lib/deep", 0o700);
    b.mkdir("app/empty", 0o711);
    // Bits a usual umask (022) takes away: the agent sets them anyway.
    b.mkdir("app/shared", 0o777);
    b.mkdir("old/new", 0o755);
    let files: Vec<(String, Vec<u8>, u32)> = [
        ("app/index.js", 0o644),
        ("app/lib/a.js", 0o644),
        ("app/lib/b.sh", 0o755),
        ("app/lib/deep/c.txt", 0o600),
        ("app/shared/w.txt", 0o666),
        ("old/kept-beside.txt", 0o644),
        ("old/new/d.txt", 0o640),
    ]
    .iter()
    .map(|(p, m)| {
        (
            p.to_string(),
            format!("the content of {p}\n").into_bytes(),
            *m,
        )
    })
    .collect();
    b.puts(files.iter().map(|(p, d, m)| whole_put(p, d, *m)).collect());
    b.symlink("app/lib/link", "a.js");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_batch_of_new_nested_directories_lands_whole_with_their_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    write(&root, "old/existing.txt", "there before\n");
    let agent = Agent::start(&root, TOKEN);
    let mut b = Batch::default();
    let files = new_tree(&mut b);
    let r = client(&agent).await.apply(b.commit()).await.expect("Apply");
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    for (p, d, m) in &files {
        assert_eq!(&std::fs::read(root.join(p)).unwrap(), d, "{p}");
        let md = std::fs::metadata(root.join(p)).unwrap();
        assert_eq!((md.mode() & 0o777, md.mtime()), (*m, 1_700_000_000), "{p}");
    }
    for (dir, mode) in [
        ("app", 0o755),
        ("app/lib", 0o750),
        ("app/lib/deep", 0o700),
        ("app/empty", 0o711),
        ("app/shared", 0o777),
        ("old/new", 0o755),
    ] {
        assert!(root.join(dir).is_dir(), "{dir}");
        assert_eq!(mode_of(&root.join(dir)), mode, "{dir}");
    }
    assert_eq!(
        std::fs::read_link(root.join("app/lib/link")).unwrap(),
        Path::new("a.js")
    );
    assert_eq!(
        std::fs::read(root.join("old/existing.txt")).unwrap(),
        b"there before\n"
    );
    assert!(staging_entries(&root).is_empty());
    // The manifest knows every placed file by its content.
    let entries = client(&agent).await.manifest().await.expect("Manifest");
    for (p, d, _) in &files {
        let e = entries.iter().find(|e| &e.path == p).expect(p);
        assert_eq!(e.blake3, blake3::hash(d).as_bytes().to_vec(), "{p}");
    }
}

/// Sends `ops` on an Apply stream held open; returns the sender (for the
/// Commit) and the call.
async fn open_batch(
    agent: &Agent,
    ops: Vec<ApplyRequest>,
) -> (
    tokio::sync::mpsc::Sender<ApplyRequest>,
    tokio::task::JoinHandle<Result<tonic::Response<ApplyResult>, tonic::Status>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<ApplyRequest>(ops.len() + 1);
    let mut c = client(agent).await;
    let call = tokio::spawn(async move {
        let req = c.req(tokio_stream::wrappers::ReceiverStream::new(rx));
        c.inner.apply(req).await
    });
    for op in ops {
        tx.send(op).await.unwrap();
    }
    (tx, call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_made_by_someone_else_before_the_commit_fails_that_new_directory_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    write(&root, "old/existing.txt", "there before\n");
    let agent = Agent::start(&root, TOKEN);
    let mut b = Batch::default();
    let taken = b.mkdir("taken", 0o755);
    b.mkdir("taken/sub", 0o755);
    b.mkdir("free", 0o755);
    let puts = b.puts(vec![
        whole_put("free/one.txt", b"one\n", 0o644),
        whole_put("old/beside.txt", b"beside\n", 0o644),
        whole_put("taken/a.txt", b"ours\n", 0o644),
        whole_put("taken/sub/b.txt", b"ours too\n", 0o644),
    ]);
    let link = b.symlink("taken/link", "a.txt");
    let last = b.put("free/last-of-the-batch.txt", b"last\n", 0o644);
    let (tx, call) = open_batch(&agent, b.without_commit()).await;
    // Until the agent has every operation (they apply in order): the last
    // file is in the staging directory, nothing is at the root yet.
    assert!(
        wait_until(Duration::from_secs(10), || exists_beneath(
            &root,
            "last-of-the-batch.txt"
        )),
        "the agent never received the batch"
    );
    assert!(!root.join("taken").exists() && !root.join("free").exists());
    assert!(!root.join("old/beside.txt").exists());
    // Someone else makes the same directory, with a file of theirs.
    write(&root, "taken/theirs.txt", "theirs\n");
    std::fs::set_permissions(root.join("taken"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut commit = Batch::default();
    commit.push(lks_proto::v1::apply_request::Op::Commit(Default::default()));
    tx.send(commit.ops.pop().unwrap()).await.unwrap();
    drop(tx);
    let r = call.await.unwrap().expect("Apply").into_inner();
    // The taken directory's Mkdir and every operation in it, each by its index.
    let failed = [taken, taken + 1, puts[2], puts[3], link];
    assert_eq!(
        r.errors.iter().map(|e| e.index).collect::<Vec<_>>(),
        failed,
        "{:#?}",
        r.errors
    );
    assert!(
        error_at(&r, taken).message.contains("appeared"),
        "{:#?}",
        r.errors
    );
    assert_eq!(error_at(&r, puts[3]).path, "taken/sub/b.txt");
    // Theirs is left alone, nothing of ours is in it.
    let in_taken: Vec<String> = std::fs::read_dir(root.join("taken"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(in_taken, ["theirs.txt"]);
    assert_eq!(mode_of(&root.join("taken")), 0o700);
    // The rest of the batch applied.
    assert_eq!(std::fs::read(root.join("free/one.txt")).unwrap(), b"one\n");
    assert_eq!(
        std::fs::read(root.join("old/beside.txt")).unwrap(),
        b"beside\n"
    );
    assert_eq!(
        std::fs::read(root.join("free/last-of-the-batch.txt")).unwrap(),
        b"last\n"
    );
    assert!(r.errors.iter().all(|e| e.index != last));
    assert!(staging_entries(&root).is_empty());
    // The manifest says what is there: theirs, not ours.
    let entries = client(&agent).await.manifest().await.expect("Manifest");
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e.path.as_str())
        .filter(|p| p.starts_with("taken"))
        .collect();
    assert_eq!(paths, ["taken", "taken/theirs.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_beneath_a_new_directory_apply_in_the_order_of_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    let agent = Agent::start(&root, TOKEN);
    let mut b = Batch::default();
    b.mkdir("n", 0o755);
    b.put("n/f.txt", b"first\n", 0o644);
    b.delete("n/f.txt");
    b.put("n/f.txt", b"second\n", 0o600);
    b.put("n/g.txt", b"g\n", 0o644);
    b.mkdir("gone", 0o755);
    b.put("gone/x.txt", b"x\n", 0o644);
    b.delete("gone");
    b.mkdir("m", 0o755);
    b.chmod("m", 0o700);
    b.mkdir("m/inner", 0o755);
    b.put("m/inner/y.txt", b"y\n", 0o644);
    let r = client(&agent).await.apply(b.commit()).await.expect("Apply");
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(std::fs::read(root.join("n/f.txt")).unwrap(), b"second\n");
    assert_eq!(mode_of(&root.join("n/f.txt")), 0o600);
    assert_eq!(std::fs::read(root.join("n/g.txt")).unwrap(), b"g\n");
    assert!(!root.join("gone").exists());
    assert_eq!(mode_of(&root.join("m")), 0o700);
    assert_eq!(std::fs::read(root.join("m/inner/y.txt")).unwrap(), b"y\n");
    assert!(staging_entries(&root).is_empty());
}
