//! A batch without its commit applies nothing: a stream that ends early, or
//! a client that goes away mid-batch, leaves the agent's root byte for byte
//! as it was (no final path changed, no directory made, no staging entry
//! left), and the next complete batch applies normally. A batch whose
//! client went silent yields to the next one within seconds.
//!
//! Not covered here: a batch that stalls past the agent's idle timeout
//! (60 s) with no other batch waiting. It ends the same way a broken stream
//! does (the batch's feed closes without a commit), which the tests drive.

use lks_e2e::raw::{Batch, Client, whole_put};
use lks_e2e::*;
use lks_proto::v1::ApplyRequest;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;

const TOKEN: &str = "batch-atomicity-token";

/// Everything beneath a root, staging entries included, as exactly as a
/// test can tell: kind, mode, content, mtime, symlink target.
fn strict_snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // Entries that vanish while it is taken (the agent at work) are skipped.
    for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let Ok(entry) = entry else { continue };
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .display()
            .to_string();
        let Ok(md) = entry.path().symlink_metadata() else {
            continue;
        };
        let what = if md.is_symlink() {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            format!("link -> {}", target.display())
        } else if md.is_dir() {
            format!("dir {:o}", md.mode() & 0o7777)
        } else {
            format!(
                "file {:o} mtime {}.{:09} {}",
                md.mode() & 0o7777,
                md.mtime(),
                md.mtime_nsec(),
                blake3::hash(&std::fs::read(entry.path()).unwrap_or_default()).to_hex()
            )
        };
        out.insert(rel, what);
    }
    out
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

/// A root with something for every kind of operation to change.
fn plant(root: &Path) {
    write(root, "keep.txt", "the old content of keep.txt\n");
    write(root, "gone.txt", "to be deleted\n");
    write(root, "dir/mode.txt", "its mode is to change\n");
    write(root, "sub/deep/a.txt", "a\n");
    std::fs::set_permissions(
        root.join("dir/mode.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
}

/// Puts (a replacement, a new file in new directories, one beside an
/// existing file), a delete, a mkdir, a symlink and a chmod.
fn the_batch() -> Batch {
    let mut b = Batch::default();
    b.put("keep.txt", b"the NEW content of keep.txt\n", 0o644);
    b.put(
        "new/dirs/file.txt",
        b"a new file in new directories\n",
        0o600,
    );
    b.put("sub/deep/b.txt", b"b\n", 0o644);
    b.delete("gone.txt");
    b.mkdir("made", 0o755);
    b.symlink("link", "keep.txt");
    b.chmod("dir/mode.txt", 0o600);
    b
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    agent: Agent,
    before: BTreeMap<String, String>,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap().join("root");
        plant(&root);
        let before = strict_snapshot(&root);
        let agent = Agent::start(&root, TOKEN);
        Fixture {
            _tmp: tmp,
            root,
            agent,
            before,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.agent.url, Some(format!("Bearer {TOKEN}"))).await
    }

    /// Waits until the batch before is over: batches are applied one at a
    /// time, so an empty committed batch answers only after it.
    async fn barrier(&self) {
        let r = self
            .client()
            .await
            .apply(Batch::default().commit())
            .await
            .expect("an empty batch");
        assert!(r.errors.is_empty(), "{:#?}", r.errors);
    }

    /// Sends `batch` without its commit, waits until `received` (the
    /// stream stays open), then goes away: the call (and its connection)
    /// dropped, the stream never ended nor committed. Returns once the
    /// agent is done with it (see [`Fixture::barrier`]).
    async fn go_away_after(&self, batch: Batch, received: impl FnMut() -> bool) {
        let (tx, rx) = tokio::sync::mpsc::channel::<ApplyRequest>(64);
        let mut client = self.client().await;
        let call = tokio::spawn(async move {
            let req = client.req(tokio_stream::wrappers::ReceiverStream::new(rx));
            client.inner.apply(req).await
        });
        for op in batch.without_commit() {
            tx.send(op).await.unwrap();
        }
        assert!(
            wait_until(Duration::from_secs(10), received),
            "the agent never received the operations"
        );
        call.abort();
        let _ = call.await;
        drop(tx);
        self.barrier().await;
    }

    /// The root is exactly as planted, with no staging entry anywhere.
    fn assert_untouched(&self, what: &str) {
        let after = strict_snapshot(&self.root);
        let changed: Vec<String> = self
            .before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}: was {v}, now {:?}", after.get(k)))
            .chain(
                after
                    .iter()
                    .filter(|(k, _)| !self.before.contains_key(*k))
                    .map(|(k, v)| format!("{k}: appeared ({v})")),
            )
            .collect();
        assert!(
            changed.is_empty(),
            "{what}: the root changed although the batch never committed:\n{}",
            changed.join("\n")
        );
        let left = staging_entries(&self.root);
        assert!(left.is_empty(), "{what}: staging entries left: {left:?}");
    }

    /// A complete batch after the abandoned one applies every operation.
    async fn assert_complete_batch_applies(&self) {
        let r = self
            .client()
            .await
            .apply(the_batch().commit())
            .await
            .expect("the complete batch");
        assert!(r.errors.is_empty(), "{:#?}", r.errors);
        let root = &self.root;
        assert_eq!(
            std::fs::read_to_string(root.join("keep.txt")).unwrap(),
            "the NEW content of keep.txt\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("new/dirs/file.txt")).unwrap(),
            "a new file in new directories\n"
        );
        let md = std::fs::metadata(root.join("new/dirs/file.txt")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        assert_eq!(md.mtime(), 1_700_000_000, "the host's mtime");
        assert_eq!(std::fs::read(root.join("sub/deep/b.txt")).unwrap(), b"b\n");
        assert!(!root.join("gone.txt").exists());
        assert!(root.join("made").is_dir());
        assert_eq!(
            std::fs::read_link(root.join("link")).unwrap(),
            Path::new("keep.txt")
        );
        assert_eq!(
            std::fs::metadata(root.join("dir/mode.txt")).unwrap().mode() & 0o777,
            0o600
        );
        let left = staging_entries(root);
        assert!(left.is_empty(), "staging entries left: {left:?}");
        // And the hash cache agrees with what is there.
        let entries = self.client().await.manifest().await.expect("manifest");
        let keep = entries.iter().find(|e| e.path == "keep.txt").unwrap();
        assert_eq!(
            keep.blake3,
            blake3::hash(b"the NEW content of keep.txt\n")
                .as_bytes()
                .to_vec()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_stream_ends_before_its_commit_changes_nothing() {
    let fx = Fixture::new();
    let s = fx
        .client()
        .await
        .apply(the_batch().without_commit())
        .await
        .expect_err("a batch without Commit succeeded");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("Commit"), "{s:?}");
    fx.barrier().await;
    fx.assert_untouched("after a stream that ended without Commit");
    fx.assert_complete_batch_applies().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_client_goes_away_before_its_commit_changes_nothing() {
    let fx = Fixture::new();
    // Until the agent has received the operations: it staged a file (or,
    // applying as it receives, changed the root).
    let (root, before) = (fx.root.clone(), fx.before.clone());
    fx.go_away_after(the_batch(), || {
        !staging_entries(&root).is_empty() || strict_snapshot(&root) != before
    })
    .await;
    fx.assert_untouched("after the client went away mid-batch");
    fx.assert_complete_batch_applies().await;
}

/// Past its first small files a batch stages them on writer threads: a
/// client that goes away mid-batch still leaves nothing behind, the
/// writers done before the staging directory goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_many_small_files_whose_client_goes_away_changes_nothing() {
    let fx = Fixture::new();
    let mut b = Batch::default();
    b.mkdir("many", 0o755);
    b.puts(
        (0..400)
            .map(|i| whole_put(&format!("many/f{i:03}"), format!("{i}\n").as_bytes(), 0o644))
            .collect(),
    );
    b.puts(
        (0..400)
            .map(|i| whole_put(&format!("sub/g{i:03}"), format!("{i}\n").as_bytes(), 0o644))
            .collect(),
    );
    let root = fx.root.clone();
    fx.go_away_after(b, || staging_entries(&root).len() > 100)
        .await;
    fx.assert_untouched("after the client of a large batch went away mid-batch");
    fx.assert_complete_batch_applies().await;
}

/// A tmpfs mounted at `dir` for the test (root or CAP_SYS_ADMIN, as
/// full_disk.rs needs), unmounted lazily on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "mounting a tmpfs at {} failed: {}\nThis test needs a second file system \
             beneath the agent's root; it must run as root or with CAP_SYS_ADMIN.",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_into_another_file_system_beneath_the_root_lands_whole_at_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    // A volume mounted beneath the root: staged files cannot be renamed
    // into it from the root's staging directory.
    let _vol = Mount::tmpfs(&root.join("vol"));
    write(&root.join("vol"), "old.txt", "old\n");
    let agent = Agent::start(&root, TOKEN);
    let mut c = Client::connect(&agent.url, Some(format!("Bearer {TOKEN}"))).await;
    let mut b = Batch::default();
    b.put("vol/old.txt", b"replaced across file systems\n", 0o640);
    b.put("vol/new/file.txt", b"new across file systems\n", 0o644);
    let r = c.apply(b.commit()).await.expect("Apply");
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(
        std::fs::read(root.join("vol/old.txt")).unwrap(),
        b"replaced across file systems\n"
    );
    let md = std::fs::metadata(root.join("vol/old.txt")).unwrap();
    assert_eq!((md.mode() & 0o777, md.mtime()), (0o640, 1_700_000_000));
    assert_eq!(
        std::fs::read(root.join("vol/new/file.txt")).unwrap(),
        b"new across file systems\n"
    );
    let left = staging_entries(&root);
    assert!(left.is_empty(), "staging entries left: {left:?}");
    let entries = c.manifest().await.expect("manifest");
    let old = entries.iter().find(|e| e.path == "vol/old.txt").unwrap();
    assert_eq!(
        old.blake3,
        blake3::hash(b"replaced across file systems\n")
            .as_bytes()
            .to_vec()
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_client_went_silent_yields_to_the_next_and_applies_nothing() {
    let fx = Fixture::new();
    // A client that sends part of a batch and then nothing, its stream and
    // connection kept open (a frozen tunnel, as far as the agent can tell).
    let (tx, rx) = tokio::sync::mpsc::channel::<ApplyRequest>(64);
    let mut client = fx.client().await;
    let stalled = tokio::spawn(async move {
        let req = client.req(tokio_stream::wrappers::ReceiverStream::new(rx));
        client.inner.apply(req).await
    });
    let mut partial = Batch::default();
    partial.put("stalled.txt", b"never committed\n", 0o644);
    for op in partial.without_commit() {
        tx.send(op).await.unwrap();
    }
    let root = fx.root.clone();
    assert!(
        wait_until(Duration::from_secs(10), || !staging_entries(&root)
            .is_empty()),
        "the agent never received the stalled batch's put"
    );
    // The next batch (the host, reconnected) gets its turn within seconds,
    // not after the agent's 60 s idle timeout.
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        fx.client().await.apply(the_batch().commit()).await
    })
    .await
    .expect("the next batch waited for the stalled one")
    .expect("the next batch");
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    eprintln!(
        "the next batch applied {} ms after it was sent",
        t.elapsed().as_millis()
    );
    let s = stalled
        .await
        .unwrap()
        .expect_err("the stalled batch succeeded");
    assert_eq!(s.code(), Code::Aborted, "{s:?}");
    assert!(s.message().contains("applied nothing"), "{s:?}");
    drop(tx);
    assert!(!fx.root.join("stalled.txt").exists());
    assert_eq!(
        std::fs::read_to_string(fx.root.join("keep.txt")).unwrap(),
        "the NEW content of keep.txt\n"
    );
    let left = staging_entries(&fx.root);
    assert!(left.is_empty(), "staging entries left: {left:?}");
}
