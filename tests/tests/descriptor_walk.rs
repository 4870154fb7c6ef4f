//! Every file-system access of the agent goes through the descriptor walk:
//! the start-up sweep of stale staging files, the manifest scan, chmod, and
//! the working directories of steps and of the app. A directory replaced by
//! a symlink to somewhere outside the root leads nowhere outside, and a hard
//! link inside the root to a file outside it does not let chmod or a write
//! change the outside file.
//!
//! A swap can happen at any moment; a moment cannot be chosen from outside
//! the agent. The tests set up the swapped-before states deterministically,
//! and the `*_while_swapped_back_and_forth` tests flip a directory and a
//! symlink with `renameat2(RENAME_EXCHANGE)` as fast as the kernel allows
//! while the agent works: an agent that resolves paths again after checking
//! them loses that race almost every time; one that walks by descriptor
//! cannot lose it.

use lks_e2e::raw::{Batch, Client};
use lks_e2e::*;
use lks_proto::v1::apply_request::Op;
use lks_proto::v1::{ApplyResult, Commit, Step};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const TOKEN: &str = "descriptor-walk-token";
const VICTIM: &[u8] = b"the outside file's precious content\n";

/// A temporary directory with the agent's `root` and an `outside` sibling
/// holding `victim` (mode 0640).
struct Dirs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), VICTIM).unwrap();
        set_mode(&outside.join("victim"), 0o640);
        Dirs {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn assert_victim_intact(&self) {
        let victim = self.outside.join("victim");
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            VICTIM,
            "the outside file's content changed"
        );
        assert_eq!(mode_of(&victim), 0o640, "the outside file's mode changed");
    }
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

async fn client(agent: &Agent) -> Client {
    Client::connect(&agent.url, Some(format!("Bearer {TOKEN}"))).await
}

async fn apply(agent: &Agent, ops: Vec<lks_proto::v1::ApplyRequest>) -> ApplyResult {
    client(agent)
        .await
        .apply(ops)
        .await
        .unwrap_or_else(|s| panic!("Apply failed as a call: {s:?}"))
}

/// Flips `a` and `b` (a directory and a symlink, both in `dir`) with
/// `renameat2(RENAME_EXCHANGE)` until dropped.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(dir: &Path, a: &'static str, b: &'static str) -> Swapper {
        use rustix::fs::{Mode, OFlags, RenameFlags};
        let fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        rustix::fs::renameat_with(&fd, a, &fd, b, RenameFlags::EXCHANGE)
            .expect("renameat2(RENAME_EXCHANGE) is not supported here; this test needs it");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut swaps = 0;
            while !flag.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(&fd, a, &fd, b, RenameFlags::EXCHANGE).unwrap();
                swaps += 1;
            }
            swaps
        });
        Swapper {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap())
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Hard links
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chmod_and_puts_of_a_file_hard_linked_to_one_outside_leave_the_outside_file_alone() {
    let d = Dirs::new();
    std::fs::hard_link(d.outside.join("victim"), d.root.join("linked")).unwrap();
    std::fs::hard_link(d.outside.join("victim"), d.root.join("linked2")).unwrap();
    let agent = Agent::start(&d.root, TOKEN);

    // chmod: the path gets the mode, with its content and mtime kept.
    let mtime = std::fs::metadata(d.root.join("linked")).unwrap().mtime();
    let mut b = Batch::default();
    b.chmod("linked", 0o777);
    let r = apply(&agent, b.commit()).await;
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    d.assert_victim_intact();
    let linked = d.root.join("linked");
    assert_eq!(mode_of(&linked), 0o777, "the path did not get its mode");
    assert_eq!(
        std::fs::read(&linked).unwrap(),
        VICTIM,
        "the path lost its content"
    );
    assert_eq!(
        std::fs::metadata(&linked).unwrap().mtime(),
        mtime,
        "mtime changed"
    );

    // A whole put and a delta put (built on the hard-linked file as base).
    let mut b = Batch::default();
    b.put("linked", b"new content\n", 0o777);
    let more = [VICTIM, b"and more\n"].concat();
    b.put_header(
        "linked2",
        more.len() as u64,
        blake3::hash(&more).as_bytes(),
        0o644,
        blake3::hash(VICTIM).as_bytes(),
    );
    b.copy(0, VICTIM.len() as u64);
    b.data(b"and more\n");
    let r = apply(&agent, b.commit()).await;
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    d.assert_victim_intact();
    assert_eq!(std::fs::read(&linked).unwrap(), b"new content\n");
    assert_eq!(std::fs::read(d.root.join("linked2")).unwrap(), more);
}

// ---------------------------------------------------------------------------
// The start-up sweep
// ---------------------------------------------------------------------------

/// `dir` with stale-looking staging entries: files and a directory.
fn plant_staging(dir: &Path, n: usize) {
    for i in 0..n {
        std::fs::write(dir.join(format!(".lks-stage.bait{i}")), b"bait").unwrap();
    }
    std::fs::create_dir_all(dir.join(".lks-stage.dir/inner")).unwrap();
    std::fs::write(dir.join(".lks-stage.dir/inner/file"), b"bait").unwrap();
}

fn staging_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| lks_proto::is_staging_name(n))
        .collect();
    names.sort();
    names
}

#[test]
fn the_startup_sweep_removes_stale_staging_entries_but_never_through_a_symlinked_directory() {
    let d = Dirs::new();
    plant_staging(&d.outside, 3);
    let before = staging_names(&d.outside);
    // Stale entries of a killed agent, at the root and deeper.
    plant_staging(&d.root, 2);
    std::fs::create_dir_all(d.root.join("real/deeper")).unwrap();
    plant_staging(&d.root.join("real/deeper"), 2);
    std::fs::write(d.root.join("real/keep"), b"keep").unwrap();
    // A directory replaced by a symlink to the outside one.
    symlink(&d.outside, d.root.join("swapped")).unwrap();
    let _agent = Agent::start(&d.root, TOKEN);
    assert_eq!(
        staging_names(&d.outside),
        before,
        "the sweep deleted outside files"
    );
    assert_eq!(
        std::fs::read(d.outside.join(".lks-stage.dir/inner/file")).unwrap(),
        b"bait"
    );
    assert!(
        staging_names(&d.root).is_empty(),
        "{:?}",
        staging_names(&d.root)
    );
    assert!(staging_names(&d.root.join("real/deeper")).is_empty());
    assert_eq!(std::fs::read(d.root.join("real/keep")).unwrap(), b"keep");
    d.assert_victim_intact();
}

#[test]
fn the_startup_sweep_never_deletes_outside_while_a_directory_is_swapped_back_and_forth() {
    let d = Dirs::new();
    plant_staging(&d.outside, 20);
    let before = staging_names(&d.outside);
    // `flip` and `flop`: a real directory and a symlink to the outside one,
    // exchanged all the time. Many entries before them keep the sweep busy
    // between listing the root and entering them.
    std::fs::create_dir_all(d.root.join("flip")).unwrap();
    symlink(&d.outside, d.root.join("flop")).unwrap();
    for i in 0..300 {
        std::fs::write(d.root.join(format!("file{i}")), b"x").unwrap();
    }
    let mut swapper = Swapper::start(&d.root, "flip", "flop");
    for round in 0..30 {
        let agent = Agent::start(&d.root, TOKEN);
        drop(agent);
        assert_eq!(
            staging_names(&d.outside),
            before,
            "start {round}: the sweep deleted files outside the root through a swapped directory"
        );
    }
    let swaps = swapper.stop();
    eprintln!("{swaps} swaps during 30 starts");
    assert!(swaps > 1000, "the swapper hardly ran ({swaps} swaps)");
    d.assert_victim_intact();
}

// ---------------------------------------------------------------------------
// The manifest
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_reports_symlinks_as_symlinks_and_lists_nothing_outside() {
    let d = Dirs::new();
    std::fs::write(d.outside.join("secret.txt"), b"secret").unwrap();
    write(&d.root, "real/inner.txt", "inner\n");
    symlink(&d.outside, d.root.join("swapped")).unwrap();
    symlink(d.outside.join("victim"), d.root.join("flink")).unwrap();
    symlink("real", d.root.join("rel")).unwrap();
    let agent = Agent::start(&d.root, TOKEN);
    let entries = client(&agent).await.manifest().await.expect("manifest");
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["flink", "real", "real/inner.txt", "rel", "swapped"]);
    for (path, target) in [
        ("flink", d.outside.join("victim").display().to_string()),
        ("rel", "real".to_string()),
        ("swapped", d.outside.display().to_string()),
    ] {
        let e = entries.iter().find(|e| e.path == path).unwrap();
        assert_eq!(
            e.kind,
            lks_proto::v1::EntryKind::Symlink as i32,
            "{path} is not reported as a symlink: {e:?}"
        );
        assert_eq!(e.link_target, target);
        assert!(e.blake3.is_empty(), "{path} was hashed: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_lists_nothing_outside_while_a_directory_is_swapped_back_and_forth() {
    let d = Dirs::new();
    for i in 0..20 {
        std::fs::write(d.outside.join(format!("secret{i}.txt")), b"secret").unwrap();
    }
    write(&d.root, "flip/inner.txt", "inner\n");
    symlink(&d.outside, d.root.join("flop")).unwrap();
    for i in 0..300 {
        std::fs::write(d.root.join(format!("file{i}")), b"x").unwrap();
    }
    let agent = Agent::start(&d.root, TOKEN);
    let mut c = client(&agent).await;
    let mut swapper = Swapper::start(&d.root, "flip", "flop");
    for round in 0..100 {
        let entries = c.manifest().await.expect("manifest");
        let leaked: Vec<&str> = entries
            .iter()
            .map(|e| e.path.as_str())
            .filter(|p| p.contains("secret") || p.ends_with("victim"))
            .collect();
        assert!(
            leaked.is_empty(),
            "manifest {round} listed files outside the root through a swapped directory: {leaked:?}"
        );
    }
    let swaps = swapper.stop();
    assert!(swaps > 1000, "the swapper hardly ran ({swaps} swaps)");
}

// ---------------------------------------------------------------------------
// Working directories
// ---------------------------------------------------------------------------

/// A batch of only a commit whose one step runs `argv` in `workdir`.
fn step_batch(argv: &[&str], workdir: &str) -> Vec<lks_proto::v1::ApplyRequest> {
    let mut b = Batch::default();
    b.push(Op::Commit(Commit {
        batch_id: "workdir".into(),
        steps: vec![Step {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            workdir: workdir.into(),
            env: Default::default(),
        }],
        restart: false,
        ..Default::default()
    }));
    b.without_commit()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_workdir_is_a_symlink_to_outside_is_refused_and_runs_nothing() {
    let d = Dirs::new();
    std::fs::create_dir_all(d.root.join("real")).unwrap();
    symlink(&d.outside, d.root.join("work")).unwrap();
    std::fs::create_dir_all(d.root.join("dir")).unwrap();
    symlink(&d.outside, d.root.join("dir/link")).unwrap();
    let agent = Agent::start(&d.root, TOKEN);

    for (workdir, needle) in [
        ("work", "symlink"),
        ("dir/link", "symlink"),
        ("dir/link/sub", "symlink"),
        ("missing", "does not exist"),
    ] {
        let r = apply(&agent, step_batch(&["touch", "marker"], workdir)).await;
        assert_eq!(r.steps.len(), 1, "{r:#?}");
        let step = &r.steps[0];
        assert!(!step.success, "the step in {workdir} ran: {step:?}");
        assert!(
            step.error.contains(workdir) && step.error.contains(needle),
            "the error for {workdir} does not name it and say {needle:?}: {:?}",
            step.error
        );
        assert!(
            !d.outside.join("marker").exists(),
            "a step ran outside the root"
        );
    }
    assert!(!d.root.join("marker").exists());
    // A real directory (and the root) work.
    let r = apply(&agent, step_batch(&["touch", "marker"], "real")).await;
    assert!(r.steps[0].success, "{:?}", r.steps[0]);
    assert!(d.root.join("real/marker").is_file());
    let r = apply(&agent, step_batch(&["touch", "marker"], "")).await;
    assert!(r.steps[0].success, "{:?}", r.steps[0]);
    assert!(d.root.join("marker").is_file());
    assert!(!d.outside.join("marker").exists());
    d.assert_victim_intact();
}

#[test]
fn the_app_whose_workdir_in_the_root_is_a_symlink_to_outside_is_not_started() {
    let d = Dirs::new();
    symlink(&d.outside, d.root.join("app")).unwrap();
    let workdir = d.root.join("app").display().to_string();
    let mut agent = SupervisedAgent::start(
        &d.root,
        TOKEN,
        &["--workdir", &workdir],
        &["touch", "marker"],
    );
    let mut said = Vec::new();
    let decided = wait_until(Duration::from_secs(10), || {
        said.extend(agent.stderr.try_iter());
        said.iter()
            .any(|l| l.contains("app started") || l.contains("cannot start the app"))
    });
    assert!(
        decided,
        "the agent neither started nor refused the app: {said:#?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !d.outside.join("marker").exists(),
        "the app ran outside the root"
    );
    let refusal = said
        .iter()
        .find(|l| l.contains("cannot start the app"))
        .unwrap_or_else(|| panic!("no refusal: {said:#?}"));
    assert!(
        refusal.contains("app") && refusal.contains("symlink"),
        "the refusal does not name the directory and say why: {refusal}"
    );
    agent.terminate(Duration::from_secs(10));

    // The same directory, real: the app runs in it.
    std::fs::remove_file(d.root.join("app")).unwrap();
    std::fs::create_dir(d.root.join("app")).unwrap();
    let _agent = SupervisedAgent::start(
        &d.root,
        TOKEN,
        &["--workdir", &workdir],
        &["touch", "marker"],
    );
    assert!(
        wait_until(Duration::from_secs(10), || d
            .root
            .join("app/marker")
            .is_file()),
        "the app did not run in its real directory"
    );
    d.assert_victim_intact();
}
