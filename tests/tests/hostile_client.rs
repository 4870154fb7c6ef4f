//! A hostile or broken client speaking `lks.agent.v1` directly cannot make the
//! agent write, read or change anything outside its root, cannot leave a half-written
//! file at a final path, and cannot stop it from serving the next client.
//!
//! Every test builds, inside one temporary directory, the agent's `root` and an
//! `outside` sibling (with a `victim` file), and checks before it ends that nothing
//! beside the root changed.

use lks_e2e::raw::{Batch, Client, code_name, error_at, expect_error};
use lks_e2e::*;
use lks_proto::v1::{ApplyRequest, ApplyResult, EntryKind, ErrorCode};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::{Code, Status};

const TOKEN: &str = "hostile-client-token";
const VICTIM: &[u8] = b"the victim's precious content\n";
const VICTIM_MODE: u32 = 0o640;

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

/// A temporary directory holding the agent's `root` and an `outside` sibling,
/// and an agent serving `root`. On drop (unless the test already failed) it
/// checks that nothing beside the root changed.
struct Fixture {
    tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    agent: Agent,
    before: BTreeMap<String, Snap>,
    /// Whether `/tmp/x` (a literal absolute path some tests send) existed before.
    tmp_x: Option<Snap>,
}

impl Fixture {
    /// A fixture with an empty root.
    fn new() -> Fixture {
        Fixture::with(|_, _| {})
    }

    /// A fixture whose root (and outside) `plant` fills before the agent starts.
    /// `plant` gets the root and the outside directory.
    fn with(plant: impl FnOnce(&Path, &Path)) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("victim"), VICTIM).unwrap();
        std::fs::set_permissions(
            outside.join("victim"),
            std::fs::Permissions::from_mode(VICTIM_MODE),
        )
        .unwrap();
        std::fs::write(outside.join("dir/inner"), b"inner\n").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o750)).unwrap();
        plant(&root, &outside);
        let before = snapshot_with(&base, |rel| rel == "root");
        let tmp_x = snap_one(Path::new("/tmp/x"));
        let agent = Agent::start(&root, TOKEN);
        Fixture {
            tmp,
            root,
            outside,
            agent,
            before,
            tmp_x,
        }
    }

    fn base(&self) -> PathBuf {
        self.tmp.path().canonicalize().unwrap()
    }

    /// Panics if anything beside the root (the outside directory, the temporary
    /// directory itself, `/tmp/x`) changed since the fixture was made.
    fn assert_outside_untouched(&self) {
        let after = snapshot_with(&self.base(), |rel| rel == "root");
        let d = diff(&self.before, &after);
        assert!(
            d.is_empty(),
            "something outside the root changed:\n{}",
            d.join("\n")
        );
        let victim = self.outside.join("victim");
        assert_eq!(std::fs::read(&victim).unwrap(), VICTIM, "victim content");
        assert_eq!(
            std::fs::symlink_metadata(&victim).unwrap().mode() & 0o7777,
            VICTIM_MODE,
            "victim mode"
        );
        assert_eq!(
            std::fs::symlink_metadata(&self.outside).unwrap().mode() & 0o7777,
            0o750,
            "mode of the outside directory"
        );
        assert_eq!(
            snap_one(Path::new("/tmp/x")),
            self.tmp_x,
            "/tmp/x was created or changed"
        );
    }

    fn root_snapshot(&self) -> BTreeMap<String, Snap> {
        snapshot(&self.root)
    }

    /// A client carrying the right token.
    async fn client(&self) -> Client {
        Client::connect(&self.agent.url, Some(format!("Bearer {TOKEN}"))).await
    }

    /// A client sending `authorization` exactly as given (none if `None`).
    async fn client_with(&self, authorization: Option<String>) -> Client {
        Client::connect(&self.agent.url, authorization).await
    }

    /// Applies `ops` with the right token; panics if the call itself fails.
    async fn apply_ok(&self, ops: Vec<ApplyRequest>) -> ApplyResult {
        self.client()
            .await
            .apply(ops)
            .await
            .unwrap_or_else(|s| panic!("Apply failed as a call: {s:?}"))
    }

    /// Hello answers and an ordinary Put lands, on a fresh connection.
    async fn assert_still_serving(&self) {
        let mut c = self.client().await;
        let hello = c.hello().await.expect("Hello after the abuse");
        assert_eq!(hello.protocol_version, lks_proto::PROTOCOL_VERSION);
        let content = format!("alive {}\n", hello.boot_id);
        let mut b = Batch::default();
        b.put("alive/proof.txt", content.as_bytes(), 0o644);
        let r = c.apply(b.commit()).await.expect("ordinary Apply");
        assert!(r.errors.is_empty(), "ordinary Put failed: {:?}", r.errors);
        assert_eq!(
            std::fs::read(self.root.join("alive/proof.txt")).unwrap(),
            content.as_bytes()
        );
        assert_no_staging(&self.root);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_outside_untouched();
        }
    }
}

/// The snapshot entry of one path, if anything is there.
fn snap_one(p: &Path) -> Option<Snap> {
    let md = std::fs::symlink_metadata(p).ok()?;
    Some(if md.is_symlink() {
        Snap::Link {
            target: std::fs::read_link(p).unwrap().to_string_lossy().into(),
        }
    } else if md.is_dir() {
        Snap::Dir {
            mode: md.mode() & 0o777,
        }
    } else {
        Snap::File {
            mode: md.mode() & 0o777,
            hash: blake3::hash(&std::fs::read(p).unwrap_or_default())
                .to_hex()
                .to_string(),
        }
    })
}

/// The staging files (`.lks-stage.*`) anywhere beneath `root`.
fn staging_files(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| lks_proto::is_staging_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Panics if a staging file exists anywhere beneath `root`.
fn assert_no_staging(root: &Path) {
    let left = staging_files(root);
    assert!(left.is_empty(), "staging files left behind: {left:?}");
}

// ---------------------------------------------------------------------------
// 1. Paths that leave the root, in every operation
// ---------------------------------------------------------------------------

/// Sends every operation (Put with Data, Mkdir, Delete, Symlink, Chmod) with each
/// of `paths` and expects each to be refused as INVALID_PATH with a message
/// containing its needle, with nothing written in or out of the root.
async fn assert_refused_in_every_op(paths: impl FnOnce(&Path) -> Vec<(String, &'static str)>) {
    let fx = Fixture::with(|root, _| {
        // Things a lax implementation would damage: `a` (for "a/", "a//b", "./a"),
        // `keep` (for "" or "." meaning the root itself).
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/file"), b"a-b-file\n").unwrap();
        std::fs::write(root.join("keep"), b"keep me\n").unwrap();
    });
    let paths = paths(&fx.outside);
    let before = fx.root_snapshot();
    let mut b = Batch::default();
    let mut expected = Vec::new();
    for (path, needle) in &paths {
        let what = [
            ("Put", b.put(path, b"pwned\n", 0o777)),
            ("Mkdir", b.mkdir(path, 0o777)),
            ("Delete", b.delete(path)),
            ("Symlink", b.symlink(path, "keep")),
            ("Chmod", b.chmod(path, 0o777)),
        ];
        for (op, index) in what {
            expected.push((op, index, path.clone(), *needle));
        }
    }
    let r = fx.apply_ok(b.commit()).await;
    for (op, index, path, needle) in &expected {
        let e = error_at(&r, *index);
        assert_eq!(
            e.code,
            ErrorCode::InvalidPath as i32,
            "{op} {path:?}: expected ERROR_CODE_INVALID_PATH, got {} ({e:?})",
            code_name(e.code)
        );
        assert!(
            e.message.contains(needle),
            "{op} {path:?}: the message {:?} does not name the problem ({needle:?})",
            e.message
        );
        assert_eq!(&e.path, path, "{op}: the error names another path");
    }
    assert_eq!(
        r.errors.len(),
        expected.len(),
        "unexpected extra errors: {:#?}",
        r.errors
    );
    assert_eq!(r.bytes_written, 0, "bytes were written for refused paths");
    let d = diff(&before, &fx.root_snapshot());
    assert!(d.is_empty(), "the root changed:\n{}", d.join("\n"));
    fx.assert_outside_untouched();
    fx.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_paths_are_refused_in_every_operation_and_nothing_is_written() {
    assert_refused_in_every_op(|outside| {
        let outside_abs = outside.display().to_string();
        vec![
            ("/tmp/x".into(), "absolute"),
            (format!("{outside_abs}/x"), "absolute"),
            (format!("{outside_abs}/victim"), "absolute"),
            (outside_abs.clone(), "absolute"),
            ("/".into(), "absolute"),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_components_are_refused_in_every_operation_and_nothing_is_written() {
    assert_refused_in_every_op(|_| {
        vec![
            ("..".into(), "`..`"),
            ("../x".into(), "`..`"),
            ("../outside/victim".into(), "`..`"),
            ("a/../../x".into(), "`..`"),
            ("a/..".into(), "`..`"),
            ("a/b/../../../outside/x".into(), "`..`"),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_dot_components_are_refused_in_every_operation_and_nothing_is_written() {
    assert_refused_in_every_op(|_| {
        vec![
            ("".into(), "empty path"),
            ("a//b".into(), "empty or `.` component"),
            ("./a".into(), "empty or `.` component"),
            ("a/./b".into(), "empty or `.` component"),
            ("a/".into(), "empty or `.` component"),
            (".".into(), "empty or `.` component"),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_in_a_path_is_refused_in_every_operation_and_nothing_is_written() {
    assert_refused_in_every_op(|_| {
        vec![
            ("a\0b".into(), "NUL"),
            ("a/b\0/c".into(), "NUL"),
            ("keep\0".into(), "NUL"),
            ("\0".into(), "NUL"),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_components_and_paths_are_refused_in_every_operation_and_nothing_is_written() {
    assert_refused_in_every_op(|_| {
        vec![
            ("n".repeat(256), "longer than 255 bytes"),
            (format!("a/{}", "n".repeat(256)), "longer than 255 bytes"),
            (
                format!("{}x", "a/".repeat(2100)),
                "longer than the limit of 4096",
            ),
            (
                format!("{}/{}", "d".repeat(200), "e/".repeat(2000)) + "f",
                "longer than the limit of 4096",
            ),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserved_staging_prefix_is_refused_in_every_operation_and_nothing_is_written() {
    assert_refused_in_every_op(|_| {
        vec![
            (".lks-stage.x".into(), "reserved staging prefix"),
            (
                "a/.lks-stage.0123456789abcdef".into(),
                "reserved staging prefix",
            ),
        ]
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. Writes through symlinks
// ---------------------------------------------------------------------------

/// Plants `link -> <outside, absolute>`, `rel -> ../outside`, `flink -> <victim,
/// absolute>` and `d/up -> ../../outside` in the root.
fn plant_links(root: &Path, outside: &Path) {
    symlink(outside, root.join("link")).unwrap();
    symlink("../outside", root.join("rel")).unwrap();
    symlink(outside.join("victim"), root.join("flink")).unwrap();
    std::fs::create_dir_all(root.join("d")).unwrap();
    symlink("../../outside", root.join("d/up")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_operation_writes_through_a_symlinked_directory_and_the_outside_is_untouched() {
    let fx = Fixture::with(plant_links);
    let before = fx.root_snapshot();
    let mut b = Batch::default();
    let through = [
        b.put("link/x", b"pwned\n", 0o644),
        b.put("link/victim", b"pwned\n", 0o644),
        b.put("link/newdir/deep/x", b"pwned\n", 0o644),
        b.mkdir("link/sub", 0o755),
        b.mkdir("link/dir", 0o777),
        b.delete("link/victim"),
        b.delete("link/dir"),
        b.chmod("link/victim", 0o777),
        b.chmod("link/dir", 0o777),
        b.symlink("link/newlink", "x"),
        b.put("rel/x", b"pwned\n", 0o644),
        b.put("rel/victim", b"pwned\n", 0o644),
        b.mkdir("rel/sub", 0o755),
        b.delete("rel/victim"),
        b.chmod("rel/victim", 0o777),
        b.put("d/up/x", b"pwned\n", 0o644),
        b.delete("d/up/victim"),
        b.chmod("d/up/victim", 0o777),
    ];
    let chmod_link = b.chmod("link", 0o777);
    let chmod_rel = b.chmod("rel", 0o777);
    let chmod_flink = b.chmod("flink", 0o777);
    let mkdir_link = b.mkdir("link", 0o777);
    let r = fx.apply_ok(b.commit()).await;

    for index in through {
        let e = expect_error(&r, index, ErrorCode::ThroughSymlink, "is a symlink");
        assert!(
            e.message.contains("never writes through symlinks"),
            "{:?}",
            e.message
        );
    }
    // The link itself: chmod must not follow it; any refusal will do.
    for index in [chmod_link, chmod_rel, chmod_flink, mkdir_link] {
        let e = error_at(&r, index);
        assert!(!e.message.is_empty(), "empty message: {e:?}");
    }
    for index in [chmod_link, chmod_rel, chmod_flink] {
        expect_error(&r, index, ErrorCode::ThroughSymlink, "is a symlink");
    }
    assert_eq!(r.bytes_written, 0);
    let d = diff(&before, &fx.root_snapshot());
    assert!(d.is_empty(), "the root changed:\n{}", d.join("\n"));
    fx.assert_outside_untouched();
    assert_no_staging(&fx.root);
    fx.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_over_a_symlink_to_an_outside_file_replaces_the_link_not_the_file() {
    let fx = Fixture::with(plant_links);
    let mut b = Batch::default();
    b.put("flink", b"new content\n", 0o600);
    b.put("link", b"replaces the dir link\n", 0o644);
    let r = fx.apply_ok(b.commit()).await;
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    for (p, want) in [
        ("flink", &b"new content\n"[..]),
        ("link", b"replaces the dir link\n"),
    ] {
        let md = std::fs::symlink_metadata(fx.root.join(p)).unwrap();
        assert!(md.is_file(), "{p} is not a regular file now");
        assert_eq!(std::fs::read(fx.root.join(p)).unwrap(), want);
    }
    fx.assert_outside_untouched();
    assert_no_staging(&fx.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_against_a_symlink_never_reads_the_file_it_points_to() {
    let fx = Fixture::with(plant_links);
    // A delta "based on" the victim: copy its bytes into a file inside the root.
    let mut b = Batch::default();
    let put = b.put_header(
        "flink",
        VICTIM.len() as u64,
        blake3::hash(VICTIM).as_bytes(),
        0o644,
        blake3::hash(VICTIM).as_bytes(),
    );
    b.copy(0, VICTIM.len() as u64);
    let put2 = b.put_header(
        "stolen",
        VICTIM.len() as u64,
        blake3::hash(VICTIM).as_bytes(),
        0o644,
        blake3::hash(VICTIM).as_bytes(),
    );
    b.copy(0, VICTIM.len() as u64);
    let r = fx.apply_ok(b.commit()).await;
    for (index, path) in [(put, "flink"), (put2, "stolen")] {
        let e = error_at(&r, index);
        assert!(
            e.code == ErrorCode::BaseChanged as i32 || e.code == ErrorCode::ThroughSymlink as i32,
            "{path}: unexpected {} ({e:?})",
            code_name(e.code)
        );
        assert!(e.message.contains(path), "{:?}", e.message);
    }
    assert_eq!(r.errors.len(), 2, "{:#?}", r.errors);
    assert!(!fx.root.join("stolen").exists());
    assert!(
        std::fs::symlink_metadata(fx.root.join("flink"))
            .unwrap()
            .is_symlink()
    );
    fx.assert_outside_untouched();
    assert_no_staging(&fx.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_never_reads_a_file_outside_the_root() {
    let fx = Fixture::with(plant_links);
    let victim_hash = blake3::hash(VICTIM).as_bytes().to_vec();
    let victim_abs = fx.outside.join("victim").display().to_string();
    let mut c = fx.client().await;
    for (path, code) in [
        ("flink", Code::NotFound),
        ("link/victim", Code::FailedPrecondition),
        ("rel/victim", Code::FailedPrecondition),
        ("d/up/victim", Code::FailedPrecondition),
        ("../outside/victim", Code::InvalidArgument),
        (victim_abs.as_str(), Code::InvalidArgument),
        ("", Code::InvalidArgument),
    ] {
        match c.chunks(path).await {
            Ok(resp) => panic!(
                "Chunks {path:?} answered (victim's hash leaked: {})",
                resp.blake3 == victim_hash
            ),
            Err(s) => {
                assert_eq!(s.code(), code, "Chunks {path:?}: {s:?}");
                assert!(!s.message().is_empty(), "Chunks {path:?}: empty message");
            }
        }
    }
    c.hello().await.expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_lists_symlinks_as_links_and_never_looks_through_them() {
    let fx = Fixture::with(plant_links);
    let victim_hash = blake3::hash(VICTIM).as_bytes().to_vec();
    let entries = fx.client().await.manifest().await.expect("Manifest");
    let by_path: BTreeMap<&str, &lks_proto::v1::Entry> =
        entries.iter().map(|e| (e.path.as_str(), e)).collect();
    for (p, target) in [
        ("link", fx.outside.display().to_string()),
        ("rel", "../outside".into()),
        ("flink", fx.outside.join("victim").display().to_string()),
        ("d/up", "../../outside".into()),
    ] {
        let e = by_path
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing: {entries:?}"));
        assert_eq!(e.kind, EntryKind::Symlink as i32, "{p}: {e:?}");
        assert_eq!(e.link_target, target, "{p}");
        assert!(e.blake3.is_empty(), "{p}: a symlink has a content hash");
    }
    for e in &entries {
        assert!(
            !e.path.starts_with("link/") && !e.path.starts_with("rel/") && e.blake3 != victim_hash,
            "the manifest looked through a symlink: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tree_full_of_symlinks_to_the_outside_removes_only_the_links() {
    let fx = Fixture::with(|root, outside| {
        plant_links(root, outside);
        std::fs::create_dir_all(root.join("tree/sub")).unwrap();
        std::fs::write(root.join("tree/a.txt"), b"a\n").unwrap();
        symlink(outside, root.join("tree/abs")).unwrap();
        symlink(outside.join("dir"), root.join("tree/sub/dirlink")).unwrap();
        symlink("../../../outside", root.join("tree/sub/rel")).unwrap();
        symlink(outside.join("victim"), root.join("tree/sub/flink")).unwrap();
    });
    let mut b = Batch::default();
    b.delete("tree");
    b.delete("link");
    b.delete("rel");
    b.delete("flink");
    b.delete("d");
    let r = fx.apply_ok(b.commit()).await;
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    let left = fx.root_snapshot();
    assert!(left.is_empty(), "the root is not empty: {left:?}");
    fx.assert_outside_untouched();
}

// ---------------------------------------------------------------------------
// 3. Symlinks that point outside
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_whose_target_escapes_the_root_is_refused_and_not_created() {
    let fx = Fixture::with(|root, _| {
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("file"), b"file\n").unwrap();
    });
    let outside_abs = fx.outside.display().to_string();
    let mut b = Batch::default();
    let escapes = [
        ("etc", "/etc/passwd".to_string()),
        ("abs", outside_abs.clone()),
        ("abs-victim", format!("{outside_abs}/victim")),
        ("up", "../x".into()),
        ("upup", "..".into()),
        ("climb", "a/../../x".into()),
        ("sneaky", "sub/../../outside/victim".into()),
        ("sub/deep", "../../outside".into()),
        ("sub/deeper", "./../.././x".into()),
        ("empty", "".into()),
        ("nul", "file\0/../../x".into()),
        // Contained on paper, but `..` after a component could follow a symlink.
        ("inside", "sub/../file".into()),
    ];
    let mut indices = Vec::new();
    for (path, target) in &escapes {
        indices.push((b.symlink(path, target), *path, target.clone()));
    }
    let inside = b.symlink("inside-plain", "file");
    let inside_deep = b.symlink("sub/up", "../file");
    let dot = b.symlink("self", ".");
    let r = fx.apply_ok(b.commit()).await;
    for (index, path, target) in &indices {
        let e = expect_error(&r, *index, ErrorCode::SymlinkEscapes, "outside the root");
        assert_eq!(&e.path, path);
        assert!(
            std::fs::symlink_metadata(fx.root.join(path)).is_err(),
            "{path} -> {target:?} was created"
        );
    }
    for index in [inside, inside_deep, dot] {
        assert!(
            r.errors.iter().all(|e| e.index != index),
            "an inside link was refused: {:#?}",
            r.errors
        );
    }
    assert_eq!(
        std::fs::read_link(fx.root.join("inside-plain")).unwrap(),
        Path::new("file")
    );
    assert_eq!(
        std::fs::read_link(fx.root.join("sub/up")).unwrap(),
        Path::new("../file")
    );
    assert_eq!(
        std::fs::read(fx.root.join("inside-plain")).unwrap(),
        b"file\n"
    );
    assert_eq!(r.errors.len(), escapes.len(), "{:#?}", r.errors);
    fx.assert_outside_untouched();
    assert_no_staging(&fx.root);
}

/// The symlinks beneath `root` that resolve (through the kernel, following every
/// link) to something outside `root`.
fn links_resolving_outside(root: &Path) -> Vec<String> {
    let root = root.canonicalize().unwrap();
    let mut escaped = Vec::new();
    for entry in walkdir::WalkDir::new(&root).follow_links(false) {
        let entry = entry.unwrap();
        if !entry.path_is_symlink() {
            continue;
        }
        if let Ok(resolved) = entry.path().canonicalize()
            && !resolved.starts_with(&root)
        {
            escaped.push(format!(
                "{} -> {:?} resolves to {}",
                entry.path().strip_prefix(&root).unwrap().display(),
                std::fs::read_link(entry.path()).unwrap(),
                resolved.display()
            ));
        }
    }
    escaped
}

// The kernel resolves `..` after a symlink from the symlink's *target*, so a
// purely lexical check would let `x -> up/..` with `up -> .` reach the root's
// parent. `link_stays_inside` therefore allows `..` only as leading components.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_cannot_climb_out_of_the_root_through_another_symlink() {
    let fx = Fixture::new();
    // Directly: `up -> .`, then `x -> up/..` (lexically: down one, up one).
    let mut b = Batch::default();
    b.symlink("up", ".");
    b.symlink("x", "up/..");
    b.symlink("y", "up/../outside/victim");
    let r1 = fx.apply_ok(b.commit()).await;
    // Later: `s -> d` (a real directory) makes `z -> s/..` harmless, until `s` is
    // replaced by `s -> .`.
    let mut b = Batch::default();
    b.mkdir("d", 0o755);
    b.symlink("s", "d");
    b.symlink("z", "s/..");
    let r2 = fx.apply_ok(b.commit()).await;
    let mut b = Batch::default();
    b.symlink("s", ".");
    let r3 = fx.apply_ok(b.commit()).await;
    fx.assert_outside_untouched();
    let escaped = links_resolving_outside(&fx.root);
    assert!(
        escaped.is_empty(),
        "symlinks created by the agent resolve outside the root \
         (DESIGN.md: \"symlinks created only where they resolve inside the root\"):\n{}\n\
         errors reported by the three batches: {:?} {:?} {:?}",
        escaped.join("\n"),
        r1.errors,
        r2.errors,
        r3.errors
    );
}

// ---------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_setgid_and_sticky_bits_sent_by_a_client_are_never_applied() {
    let fx = Fixture::new();
    let mut b = Batch::default();
    b.put("suid", b"#!/bin/sh\n", 0o6755);
    b.mkdir("sgid", 0o3775);
    b.put("chm", b"x\n", 0o644);
    b.chmod("chm", 0o4777);
    b.chmod("sgid", 0o2755);
    let r = fx.apply_ok(b.commit()).await;
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    for (p, want) in [("suid", 0o755), ("sgid", 0o755), ("chm", 0o777)] {
        let mode = std::fs::symlink_metadata(fx.root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode, want, "{p}: mode {mode:o}, expected {want:o}");
    }
}

// ---------------------------------------------------------------------------
// 4. Protocol abuse
// ---------------------------------------------------------------------------

/// A root with `f` holding `OLD` (mode 0644), sent through the agent so its hash
/// cache knows it.
const OLD: &[u8] = b"the previous content of f\n";

async fn fixture_with_old_f() -> Fixture {
    let fx = Fixture::new();
    let mut b = Batch::default();
    b.put("f", OLD, 0o644);
    b.put("dir/g", OLD, 0o644);
    let r = fx.apply_ok(b.commit()).await;
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    fx
}

fn assert_f_intact(fx: &Fixture) {
    assert_eq!(std::fs::read(fx.root.join("f")).unwrap(), OLD, "f changed");
    assert_eq!(
        std::fs::read(fx.root.join("dir/g")).unwrap(),
        OLD,
        "dir/g changed"
    );
    assert_no_staging(&fx.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_copy_without_a_put_are_protocol_errors_and_write_nothing() {
    let fx = fixture_with_old_f().await;
    let before = fx.root_snapshot();
    let mut b = Batch::default();
    let d = b.data(b"orphan bytes");
    let c = b.copy(0, 4);
    let empty = b.empty();
    let r = fx.apply_ok(b.commit()).await;
    expect_error(&r, d, ErrorCode::Protocol, "Data without a Put");
    expect_error(&r, c, ErrorCode::Protocol, "Copy without a Put");
    expect_error(&r, empty, ErrorCode::Protocol, "empty operation");
    assert_eq!(r.bytes_written, 0);
    let d = diff(&before, &fx.root_snapshot());
    assert!(d.is_empty(), "the root changed:\n{}", d.join("\n"));
    assert_f_intact(&fx);
    fx.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_data_exceeds_its_announced_size_keeps_the_previous_content() {
    let fx = fixture_with_old_f().await;
    let new = b"new!";
    let mut b = Batch::default();
    b.put_header("f", 3, blake3::hash(&new[..3]).as_bytes(), 0o644, &[]);
    let over = b.data(new);
    b.put_header("fresh", 2, blake3::hash(b"ab").as_bytes(), 0o644, &[]);
    b.data(b"a");
    let over2 = b.data(b"bc");
    let r = fx.apply_ok(b.commit()).await;
    expect_error(
        &r,
        over,
        ErrorCode::Protocol,
        "more bytes than the announced size",
    );
    expect_error(
        &r,
        over2,
        ErrorCode::Protocol,
        "more bytes than the announced size",
    );
    assert_eq!(r.errors.len(), 2, "{:#?}", r.errors);
    assert!(!fx.root.join("fresh").exists(), "a partial file exists");
    assert_f_intact(&fx);
    fx.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_content_does_not_match_its_blake3_keeps_the_previous_content() {
    let fx = fixture_with_old_f().await;
    let lie = b"content that is not what was announced\n";
    let mut b = Batch::default();
    let p1 = b.put_header(
        "f",
        lie.len() as u64,
        blake3::hash(b"something else").as_bytes(),
        0o755,
        &[],
    );
    b.data(&lie[..10]);
    b.data(&lie[10..]);
    let p2 = b.put_header("dir/g", 0, blake3::hash(b"x").as_bytes(), 0o755, &[]);
    let p3 = b.put_header("new", lie.len() as u64, &[], 0o644, &[]);
    b.data(lie);
    let r = fx.apply_ok(b.commit()).await;
    for (index, path) in [(p1, "f"), (p2, "dir/g"), (p3, "new")] {
        let e = expect_error(
            &r,
            index,
            ErrorCode::HashMismatch,
            "does not match its blake3",
        );
        assert_eq!(e.path, path);
        assert!(e.message.contains(path), "{:?}", e.message);
    }
    assert!(!fx.root.join("new").exists());
    assert_eq!(
        std::fs::symlink_metadata(fx.root.join("f")).unwrap().mode() & 0o777,
        0o644,
        "the mode of f changed"
    );
    assert_f_intact(&fx);
    fx.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_without_a_base_is_a_protocol_error_and_keeps_the_previous_content() {
    let fx = fixture_with_old_f().await;
    let mut b = Batch::default();
    b.put_header(
        "f",
        OLD.len() as u64,
        blake3::hash(OLD).as_bytes(),
        0o644,
        &[],
    );
    let c = b.copy(0, OLD.len() as u64);
    let r = fx.apply_ok(b.commit()).await;
    expect_error(&r, c, ErrorCode::Protocol, "Copy without a base");
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    assert_f_intact(&fx);
    fx.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_beyond_the_base_or_with_a_wrong_base_keeps_the_previous_content() {
    let fx = fixture_with_old_f().await;
    let old_hash = blake3::hash(OLD);
    let mut b = Batch::default();
    // Reads past the end of the base.
    let p1 = b.put_header(
        "f",
        10,
        blake3::hash(&[0; 10]).as_bytes(),
        0o644,
        old_hash.as_bytes(),
    );
    let c1 = b.copy(OLD.len() as u64 - 2, 10);
    // A base hash that is not the file's.
    let p2 = b.put_header(
        "dir/g",
        4,
        blake3::hash(b"then").as_bytes(),
        0o644,
        blake3::hash(b"not the base").as_bytes(),
    );
    b.copy(0, 4);
    let r = fx.apply_ok(b.commit()).await;
    expect_error(&r, c1, ErrorCode::BaseChanged, "f");
    expect_error(&r, p2, ErrorCode::BaseChanged, "dir/g");
    assert!(r.errors.iter().all(|e| e.index != p1), "{:#?}", r.errors);
    assert_f_intact(&fx);
    fx.assert_still_serving().await;
}

// A Copy of u64::MAX bytes after some Data must not overflow the size check
// (which once panicked the batch thread and left the staging file behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_an_absurd_length_is_a_protocol_error_and_leaves_no_staging_file() {
    let fx = fixture_with_old_f().await;
    let old_hash = blake3::hash(OLD);
    let mut b = Batch::default();
    b.put_header(
        "f",
        10,
        blake3::hash(&[0; 10]).as_bytes(),
        0o644,
        old_hash.as_bytes(),
    );
    b.data(b"x");
    let c = b.copy(0, u64::MAX);
    let r = fx.client().await.apply(b.commit()).await;
    // Whatever happened, the agent must still serve and the old content must stay.
    fx.client()
        .await
        .hello()
        .await
        .expect("Hello after the Copy");
    assert_eq!(std::fs::read(fx.root.join("f")).unwrap(), OLD, "f changed");
    let r = match r {
        Ok(r) => r,
        Err(s) => {
            panic!(
                "a Copy of u64::MAX bytes failed the whole batch instead of being \
                 reported as ERROR_CODE_PROTOCOL: {s:?}; staging files left behind: {:?}",
                staging_files(&fx.root)
            );
        }
    };
    expect_error(
        &r,
        c,
        ErrorCode::Protocol,
        "more bytes than the announced size",
    );
    assert_f_intact(&fx);
    fx.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_cut_short_by_the_next_operation_keeps_the_previous_content() {
    let fx = fixture_with_old_f().await;
    let new = b"0123456789";
    let mut b = Batch::default();
    let p = b.put_header("f", 10, blake3::hash(new).as_bytes(), 0o644, &[]);
    b.data(&new[..4]);
    let ok = b.mkdir("made", 0o755);
    let r = fx.apply_ok(b.commit()).await;
    expect_error(
        &r,
        p,
        ErrorCode::Protocol,
        "the next operation started before all its bytes arrived",
    );
    assert!(r.errors.iter().all(|e| e.index != ok));
    assert!(fx.root.join("made").is_dir());
    assert_f_intact(&fx);
    fx.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_ends_without_commit_fails_and_leaves_no_partial_file() {
    let fx = fixture_with_old_f().await;
    let new = b"0123456789";
    // The stream ends in the middle of a new file, then in the middle of a replacement.
    for path in ["partial", "f"] {
        let mut b = Batch::default();
        b.put_header(path, 10, blake3::hash(new).as_bytes(), 0o644, &[]);
        b.data(&new[..4]);
        let s = fx
            .client()
            .await
            .apply(b.without_commit())
            .await
            .expect_err("a batch without Commit succeeded");
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains("Commit"), "{s:?}");
    }
    // And an entirely empty stream.
    let s = fx
        .client()
        .await
        .apply(vec![])
        .await
        .expect_err("an empty Apply stream succeeded");
    assert!(s.message().contains("Commit"), "{s:?}");
    assert!(!fx.root.join("partial").exists(), "a partial file exists");
    assert_f_intact(&fx);
    fx.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_4_mib_fails_the_call_clearly_and_the_agent_keeps_serving() {
    let fx = fixture_with_old_f().await;
    let big = vec![7u8; 5 * 1024 * 1024];
    let mut b = Batch::default();
    b.put("f", &big, 0o644);
    let s = fx
        .client()
        .await
        .apply(b.commit())
        .await
        .expect_err("a 5 MiB message was accepted");
    assert_ne!(s.code(), Code::Ok);
    let text = format!("{} {}", s.message(), s);
    assert!(
        text.contains("too large") || text.contains("4194304"),
        "unclear status for an oversized message: {s:?}"
    );
    // A unary call with an oversized field.
    let s = fx
        .client()
        .await
        .hello_with("v".repeat(5 * 1024 * 1024))
        .await
        .expect_err("a 5 MiB Hello was accepted");
    assert_ne!(s.code(), Code::Ok);
    assert_f_intact(&fx);
    fx.assert_still_serving().await;
}

// ---------------------------------------------------------------------------
// 5. Authentication
// ---------------------------------------------------------------------------

/// Every RPC refuses a call with `authorization` set to `auth` (or absent).
async fn assert_every_rpc_refused(fx: &Fixture, auth: Option<String>) {
    let label = format!("authorization {auth:?}");
    let mut c = fx.client_with(auth).await;
    let check = |what: &str, s: Status| {
        assert_eq!(
            s.code(),
            Code::Unauthenticated,
            "{what} with {label}: {s:?}"
        );
        assert!(
            s.message().contains("token"),
            "{what} with {label}: the message does not mention the token: {s:?}"
        );
    };
    check("Hello", c.hello().await.expect_err("Hello accepted"));
    check(
        "Manifest",
        c.manifest().await.expect_err("Manifest accepted"),
    );
    check("Chunks", c.chunks("f").await.expect_err("Chunks accepted"));
    check("Events", c.events().await.expect_err("Events accepted"));
    let mut b = Batch::default();
    b.put("pwned", b"pwned\n", 0o777);
    b.mkdir("pwned-dir", 0o777);
    b.delete("keep");
    b.symlink("pwned-link", "keep");
    b.chmod("keep", 0o777);
    check(
        "Apply",
        c.apply(b.commit()).await.expect_err("Apply accepted"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_refused_on_every_rpc_and_nothing_is_written() {
    let fx = Fixture::with(|root, _| {
        std::fs::write(root.join("keep"), b"keep\n").unwrap();
    });
    let before = fx.root_snapshot();
    let almost = &TOKEN[..TOKEN.len() - 1];
    for auth in [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(TOKEN.to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {almost}")),
        Some(format!("Basic {TOKEN}")),
        Some("Bearer ".to_string()),
        Some(String::new()),
    ] {
        assert_every_rpc_refused(&fx, auth).await;
    }
    let d = diff(&before, &fx.root_snapshot());
    assert!(
        d.is_empty(),
        "unauthenticated calls changed the root:\n{}",
        d.join("\n")
    );
    fx.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lks_sync_with_a_wrong_token_fails_and_says_so() {
    let fx = Fixture::new();
    let local_tmp = tempfile::tempdir().unwrap();
    let local = local_tmp.path().join("local");
    std::fs::create_dir_all(local.join("sub")).unwrap();
    std::fs::write(local.join("sub/file.txt"), b"hello\n").unwrap();
    let out = sync_once(&local, &fx.agent.url, "not-the-token", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "lks sync succeeded with a wrong token; stderr: {stderr}"
    );
    assert!(
        stderr.contains("token"),
        "the error does not mention the token: {stderr}"
    );
    let left = fx.root_snapshot();
    assert!(left.is_empty(), "the root is not empty: {left:?}");
    fx.assert_still_serving().await;
}

// ---------------------------------------------------------------------------
// 6. Everything at once, on one connection, then normal service
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_barrage_of_abuse_on_one_connection_the_agent_still_serves() {
    let fx = Fixture::with(plant_links);
    let mut c = fx.client().await;
    let mut b = Batch::default();
    b.data(b"orphan");
    b.put("/tmp/x", b"x", 0o644);
    b.put("link/x", b"x", 0o644);
    b.symlink("esc", "../outside");
    b.put_header("h", 3, &[0; 32], 0o644, &[]);
    b.data(b"abc");
    b.put_header("cut", 10, &[0; 32], 0o644, &[]);
    b.data(b"abc");
    let r = c.apply(b.commit()).await.expect("Apply");
    assert_eq!(r.errors.len(), 6, "{:#?}", r.errors);
    let mut b = Batch::default();
    b.put_header("nocommit", 10, &[0; 32], 0o644, &[]);
    c.apply(b.without_commit()).await.expect_err("no commit");
    let mut b = Batch::default();
    b.put("big", &vec![0u8; 4 * 1024 * 1024 + 1], 0o644);
    c.apply(b.commit()).await.expect_err("oversized");
    let mut bad = fx.client_with(Some("Bearer nope".into())).await;
    bad.hello().await.expect_err("wrong token");
    // The same connection, if it survived, and a fresh one both work.
    if let Ok(h) = c.hello().await {
        assert_eq!(h.protocol_version, lks_proto::PROTOCOL_VERSION);
    }
    fx.assert_still_serving().await;
    for p in ["h", "cut", "nocommit", "big", "esc"] {
        assert!(
            std::fs::symlink_metadata(fx.root.join(p)).is_err(),
            "{p} exists"
        );
    }
    assert_no_staging(&fx.root);
}

// ---------------------------------------------------------------------------
// 8. Starting without a token
// ---------------------------------------------------------------------------

/// Runs `lks-agent serve` with `configure` applied and expects it to exit with an
/// error (within 10 s) whose stderr contains every needle.
fn assert_serve_refuses(configure: impl FnOnce(&mut Command), needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut cmd = Command::new(bin("lks-agent"));
    cmd.args(["serve", "--root"])
        .arg(&root)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("LKS_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut cmd);
    let mut child = cmd.spawn().expect("spawn lks-agent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "lks-agent serve kept running without a usable token; stdout: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "lks-agent serve exited successfully; stderr: {stderr}"
    );
    assert!(
        !stdout.contains("listening on"),
        "lks-agent listened without a token: {stdout}"
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "stderr does not mention {n:?}: {stderr}"
        );
    }
    assert!(
        !root.exists(),
        "lks-agent created its root before refusing to start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lks_agent_serve_without_a_token_refuses_to_start_and_names_lks_token() {
    assert_serve_refuses(|_| {}, &["LKS_TOKEN", "--token-file"]);
    assert_serve_refuses(
        |c| {
            c.env("LKS_TOKEN", "");
        },
        &["LKS_TOKEN", "empty"],
    );
    assert_serve_refuses(
        |c| {
            c.env("LKS_TOKEN", "  \n\t");
        },
        &["LKS_TOKEN", "empty"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lks_agent_serve_with_an_empty_or_missing_token_file_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty-token");
    std::fs::write(&empty, "").unwrap();
    let blank = tmp.path().join("blank-token");
    std::fs::write(&blank, " \n\n").unwrap();
    let missing = tmp.path().join("no-such-token");
    for (file, needle) in [
        (&empty, "empty"),
        (&blank, "empty"),
        (&missing, "cannot read"),
    ] {
        assert_serve_refuses(
            |c| {
                c.arg("--token-file").arg(file);
                // A token in the environment must not rescue a bad --token-file.
                c.env("LKS_TOKEN", TOKEN);
            },
            &[needle, &file.display().to_string()],
        );
    }
}

// ---------------------------------------------------------------------------
// Bounded errors
// ---------------------------------------------------------------------------

/// The agent's peak resident memory, in KiB.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_refused_paths_are_echoed_truncated_and_the_agent_stays_small() {
    let fx = Fixture::new();
    let mut client = fx.client().await;
    let before = peak_kib(fx.agent.pid());
    let mut b = Batch::default();
    for i in 0..10 {
        // 3.5 MiB each: under the message limit, far over the path limit.
        b.mkdir(&format!("{i}{}", "a/".repeat(1_800_000)), 0o755);
    }
    let r = client.apply(b.commit()).await.unwrap();
    assert_eq!(r.errors.len(), 10, "{:?}", r.errors.len());
    let max = lks_proto::limits::MAX_ECHOED_PATH_BYTES;
    for e in &r.errors {
        assert!(
            e.path.len() < max + 64,
            "a path echoed whole: {} bytes",
            e.path.len()
        );
        assert!(
            e.message.len() < 2 * max + 64,
            "a message of {} bytes",
            e.message.len()
        );
        assert!(
            e.path.contains("bytes)"),
            "{:?}",
            &e.path[..64.min(e.path.len())]
        );
    }
    let grown = peak_kib(fx.agent.pid()).saturating_sub(before);
    assert!(
        grown < 100 * 1024,
        "the agent's peak memory grew by {grown} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_at_most_a_few_hundred_errors_and_counts_the_rest() {
    let fx = Fixture::new();
    let mut client = fx.client().await;
    let mut b = Batch::default();
    for i in 0..1000 {
        b.mkdir(&format!("../escape-{i}"), 0o755);
    }
    let r = client.apply(b.commit()).await.unwrap();
    let max = lks_proto::limits::MAX_ERRORS_PER_BATCH;
    assert_eq!(
        r.errors.len(),
        max + 1,
        "one per op up to the limit, then a count"
    );
    let last = r.errors.last().unwrap();
    assert!(
        last.message
            .contains(&format!("{} more operations failed", 1000 - max)),
        "{last:?}"
    );
}
