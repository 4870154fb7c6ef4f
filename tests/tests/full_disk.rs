//! A full disk fails the operation with a clear error and keeps the previous
//! content: the file is staged beside its final path, and a staging file that
//! cannot be completed is removed.
//!
//! Needs a small file system to fill: the test mounts a 1 MiB tmpfs, which takes
//! root (or CAP_SYS_ADMIN). Without it the test fails and says why.

use lks_e2e::*;
use lks_proto::v1::agent_client::AgentClient;
use lks_proto::v1::apply_request::Op;
use lks_proto::v1::{ApplyRequest, ApplyResult, Commit, Data, ErrorCode, Put};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tonic::Request;
use tonic::transport::Channel;

const TOKEN: &str = "full-disk-token";
const OLD: &[u8] = b"the small file synced before the disk filled up\n";

/// A tmpfs mounted for the test; unmounted (lazily, so a straggling open file
/// cannot keep it) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `mount` ({e}): this test needs the mount(8) command to make a \
                     small tmpfs it can fill"
                )
            });
        assert!(
            out.status.success(),
            "`mount -t tmpfs -o size={size} tmpfs {}` failed ({}): {}\n\
             This test fills a small tmpfs to check lks-agent's behaviour on a full disk; it \
             must run as root or with CAP_SYS_ADMIN (in a container: --privileged or \
             --cap-add SYS_ADMIN). It does not skip itself, so that a full-disk regression \
             cannot go unnoticed.",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn put(path: &str, data: &[u8]) -> Vec<ApplyRequest> {
    let mut ops = vec![ApplyRequest {
        op: Some(Op::Put(Put {
            path: path.into(),
            mode: 0o644,
            size: data.len() as u64,
            blake3: blake3::hash(data).as_bytes().to_vec(),
            mtime_ns: 1_700_000_000_000_000_000,
            base_blake3: vec![],
            data: Vec::new(),
        })),
    }];
    for chunk in data.chunks(lks_proto::limits::DATA_CHUNK_BYTES) {
        ops.push(ApplyRequest {
            op: Some(Op::Data(Data {
                bytes: chunk.to_vec(),
            })),
        });
    }
    ops
}

async fn apply(url: &str, mut ops: Vec<ApplyRequest>) -> ApplyResult {
    ops.push(ApplyRequest {
        op: Some(Op::Commit(Commit {
            batch_id: "full-disk".into(),
            ..Default::default()
        })),
    });
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connect to the agent");
    let mut client = AgentClient::new(channel);
    let mut req = Request::new(tokio_stream::iter(ops));
    req.metadata_mut().insert(
        lks_proto::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    tokio::time::timeout(Duration::from_secs(15), client.apply(req))
        .await
        .expect("Apply timed out")
        .expect("Apply failed as a call")
        .into_inner()
}

fn staging_files(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| lks_proto::is_staging_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path().display().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_put_with_a_clear_error_and_keeps_the_previous_content() {
    // Dropped in reverse: the agent first, then the mount, then the directory.
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "1m");
    let root = mnt.join("root");
    let local = tmp.path().join("local");
    std::fs::create_dir_all(local.join("dir")).unwrap();
    std::fs::write(local.join("dir/file"), OLD).unwrap();

    let agent = Agent::start(&root, TOKEN);
    let out = sync_once(&local, &agent.url, TOKEN, &[]);
    assert!(
        out.status.success(),
        "the initial lks sync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(root.join("dir/file")).unwrap(), OLD);

    // 4 MiB into a 1 MiB file system, over the synced file, then a small file
    // after it in the same batch.
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut ops = put("dir/file", &big);
    let after = ops.len() as u64;
    ops.extend(put("dir/after", b"small\n"));
    let r = apply(&agent.url, ops).await;
    let e = r
        .errors
        .iter()
        .find(|e| e.index == 0)
        .unwrap_or_else(|| panic!("no error for the 4 MiB Put: {:#?}", r.errors));
    assert_eq!(
        e.code,
        ErrorCode::NoSpace as i32,
        "expected ERROR_CODE_NO_SPACE: {e:?}"
    );
    assert!(
        e.message.to_lowercase().contains("no space"),
        "the message does not say the disk is full: {:?}",
        e.message
    );
    assert!(e.message.contains("dir/file"), "{:?}", e.message);
    assert_eq!(
        std::fs::read(root.join("dir/file")).unwrap(),
        OLD,
        "the previous content was lost"
    );
    let left = staging_files(&root);
    assert!(left.is_empty(), "staging files left behind: {left:?}");
    // The batch went on after the failed Put (its remaining Data skipped).
    assert!(
        r.errors.iter().all(|e| e.index != after),
        "the Put after the full-disk failure failed too: {:#?}",
        r.errors
    );
    assert_eq!(std::fs::read(root.join("dir/after")).unwrap(), b"small\n");

    // The space of the abandoned staging file is back: a normal Put works.
    let r = apply(&agent.url, put("dir/file", b"updated\n")).await;
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(std::fs::read(root.join("dir/file")).unwrap(), b"updated\n");
    drop(agent);
}

#[test]
fn an_operation_refused_for_a_full_disk_is_tried_again_until_it_lands_without_another_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&tmp.path().join("disk"), "1m");
    let (src, root) = (tmp.path().join("src"), disk.dir.join("root"));
    write(&src, "small.txt", "small\n");
    // Most of the disk, outside the agent's root.
    std::fs::write(disk.dir.join("filler"), vec![7u8; 700 * 1024]).unwrap();
    let _agent = Agent::start(&root, TOKEN);
    let mut watch = Watch::spawn(&src, &_agent.url, TOKEN, &[]);
    watch.wait_line("initial sync", Duration::from_secs(30));
    let big: Vec<u8> = (0..600 * 1024).map(|i| (i % 251) as u8).collect();
    // Renamed in whole: written in place, the watch may sync the file as
    // it was a moment after its creation (empty), which fits.
    std::fs::write(tmp.path().join("big.bin"), &big).unwrap();
    std::fs::rename(tmp.path().join("big.bin"), src.join("big.bin")).unwrap();
    let mut said = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            said.extend(watch.stderr.try_iter());
            said.iter()
                .any(|l| l.contains("trying the failed operations again in"))
        }),
        "no retry announced: {said:#?}"
    );
    assert!(
        !root.join("big.bin").exists(),
        "big.bin landed, {} bytes, though the disk was full",
        std::fs::metadata(root.join("big.bin")).map_or(0, |m| m.len())
    );
    // Space comes back; nothing changes in src.
    std::fs::remove_file(disk.dir.join("filler")).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read(
            root.join("big.bin")
        )
        .is_ok_and(|b| b == big)),
        "big.bin never landed once the disk had room"
    );
    let status = watch.terminate();
    assert!(status.success(), "{status:?}");
}

/// A directory of the root on another file system (a volume mounted inside
/// it): the batch's staged file cannot be renamed there (EXDEV), so it is
/// copied beside its final path and renamed over it, whole, with its mode and
/// mtime, and no staging file is left on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_into_a_volume_mounted_inside_the_root_lands_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let _volume = Tmpfs::mount(&root.join("volume"), "8m");
    std::fs::write(root.join("volume/file"), OLD).unwrap();
    let agent = Agent::start(&root, TOKEN);
    let data: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 253) as u8).collect();
    let r = apply(&agent.url, put("volume/file", &data)).await;
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(std::fs::read(root.join("volume/file")).unwrap(), data);
    let meta = std::fs::metadata(root.join("volume/file")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_eq!(meta.mtime(), 1_700_000_000);
    let left = staging_files(&root);
    assert!(left.is_empty(), "staging files left behind: {left:?}");
    drop(agent);
}
