//! Small files travel together: a `Put` may carry its first bytes inline,
//! and a `Puts` message carries several whole files. Each put of a `Puts` is
//! an operation of its own (its own index in errors, counted in the result
//! and against the batch's limit), and is staged, checked against its
//! blake3 and placed at the commit like any other.

use lks_e2e::raw::{Batch, Client, expect_error, whole_put};
use lks_e2e::*;
use lks_proto::limits::MAX_OPS_PER_BATCH;
use lks_proto::v1::{ErrorCode, Put};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const TOKEN: &str = "packed-puts-token";

async fn client(agent: &Agent) -> Client {
    Client::connect(&agent.url, Some(format!("Bearer {TOKEN}"))).await
}

/// The staging entries (`.lks-stage.*`) anywhere beneath `root`.
fn staging_entries(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| lks_proto::is_staging_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path().display().to_string())
        .collect()
}

fn assert_file(root: &Path, rel: &str, content: &[u8], mode: u32) {
    let path = root.join(rel);
    assert_eq!(std::fs::read(&path).unwrap(), content, "{rel}");
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.mode() & 0o777, mode, "{rel}: mode");
    assert_eq!(md.mtime(), 1_700_000_000, "{rel}: the host's mtime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_batch_of_small_files_lands_whole_with_their_modes_and_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    write(&root, "old.txt", "the old content\n");
    let agent = Agent::start(&root, TOKEN);
    let files: Vec<(String, Vec<u8>, u32)> = (0..40)
        .map(|i| {
            (
                format!("pkg{}/lib/f{i}.js", i % 4),
                format!("module {i}\n").repeat(i).into_bytes(),
                if i % 3 == 0 { 0o755 } else { 0o644 },
            )
        })
        .collect();
    let mut b = Batch::default();
    let first = b.puts(files.iter().map(|(p, d, m)| whole_put(p, d, *m)).collect());
    b.puts(vec![whole_put("old.txt", b"replaced, packed\n", 0o600)]);
    // Inline bytes then the rest in a Data message.
    let mut head = whole_put("big.bin", b"the first bytes, ", 0o640);
    let whole = b"the first bytes, and the rest\n";
    head.size = whole.len() as u64;
    head.blake3 = blake3::hash(whole).as_bytes().to_vec();
    let big = b.push(lks_proto::v1::apply_request::Op::Put(head));
    b.data(b"and the rest\n");
    let last = b.put("after.txt", b"after the packed ones\n", 0o644);
    assert_eq!(first.len(), 40);
    assert_eq!((big, last), (41, 43), "each packed put is one operation");
    let r = client(&agent).await.apply(b.commit()).await.expect("Apply");
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    // 40 + 1 packed puts, the put with its Data, the put with its Data, the commit.
    assert_eq!(r.ops, 46);
    for (p, d, m) in &files {
        assert_file(&root, p, d, *m);
    }
    assert_file(&root, "old.txt", b"replaced, packed\n", 0o600);
    assert_file(&root, "big.bin", whole, 0o640);
    assert_file(&root, "after.txt", b"after the packed ones\n", 0o644);
    assert!(staging_entries(&root).is_empty());
    let entries = client(&agent).await.manifest().await.expect("Manifest");
    for (p, d, _) in &files {
        let e = entries.iter().find(|e| &e.path == p).expect(p);
        assert_eq!(e.blake3, blake3::hash(d).as_bytes().to_vec(), "{p}");
    }
}

/// Past its first few dozen small files a batch stages them on several
/// threads (writers.rs): what lands, and where, is still decided in the
/// order of the operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_many_small_files_lands_as_if_staged_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    write(&root, "existing/old.txt", "old\n");
    let agent = Agent::start(&root, TOKEN);
    let mut b = Batch::default();
    // A new directory: its files are made in it, staged whole.
    b.mkdir("fresh", 0o755);
    for d in 0..7 {
        b.mkdir(&format!("fresh/d{d}"), 0o755);
    }
    let fresh: Vec<(String, Vec<u8>, u32)> = (0..300)
        .map(|i| {
            (
                format!("fresh/d{}/f{i:03}.js", i % 7),
                format!("fresh {i}\n").repeat(i % 13).into_bytes(),
                if i % 5 == 0 { 0o700 } else { 0o644 },
            )
        })
        .collect();
    let mut puts: Vec<Put> = fresh.iter().map(|(p, d, m)| whole_put(p, d, *m)).collect();
    // One wrong hash well past the first files.
    puts[200].blake3 = blake3::hash(b"something else").as_bytes().to_vec();
    let fresh_at = b.puts(puts);
    // Into a directory that exists: staged, renamed in at the commit.
    let existing: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| {
            (
                format!("existing/e{i:03}.txt"),
                format!("e {i}\n").into_bytes(),
            )
        })
        .collect();
    b.puts(
        existing
            .iter()
            .map(|(p, d)| whole_put(p, d, 0o644))
            .collect(),
    );
    // The same path twice, and a file put then deleted: the later wins.
    b.puts(vec![whole_put("existing/dup.txt", b"first\n", 0o644)]);
    b.puts(vec![whole_put("fresh/d1/dup.txt", b"first\n", 0o644)]);
    b.puts(vec![whole_put("existing/gone.txt", b"gone\n", 0o644)]);
    b.puts(vec![whole_put("existing/dup.txt", b"second\n", 0o600)]);
    b.puts(vec![whole_put("fresh/d1/dup.txt", b"second\n", 0o600)]);
    b.delete("existing/gone.txt");
    let r = client(&agent).await.apply(b.commit()).await.expect("Apply");
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    let e = expect_error(&r, fresh_at[200], ErrorCode::HashMismatch, "blake3");
    assert_eq!(e.path, fresh[200].0);
    for (i, (p, d, m)) in fresh.iter().enumerate() {
        if i == 200 {
            assert!(!root.join(p).exists(), "{p}: its put was refused");
        } else {
            assert_file(&root, p, d, *m);
        }
    }
    for (p, d) in &existing {
        assert_file(&root, p, d, 0o644);
    }
    assert_eq!(
        std::fs::read(root.join("existing/old.txt")).unwrap(),
        b"old\n"
    );
    assert_file(&root, "existing/dup.txt", b"second\n", 0o600);
    assert_file(&root, "fresh/d1/dup.txt", b"second\n", 0o600);
    assert!(!root.join("existing/gone.txt").exists());
    assert!(staging_entries(&root).is_empty());
    // The agent's records say what is on disk.
    let entries = client(&agent).await.manifest().await.expect("Manifest");
    for (p, d) in existing.iter().map(|(p, d)| (p, d)).chain(
        fresh
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 200)
            .map(|(_, (p, d, _))| (p, d)),
    ) {
        let e = entries.iter().find(|e| &e.path == p).expect(p);
        assert_eq!(e.blake3, blake3::hash(d).as_bytes().to_vec(), "{p}");
    }
    assert!(!entries.iter().any(|e| e.path == fresh[200].0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_hash_in_the_middle_of_a_puts_fails_only_that_put_and_names_its_index() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    write(&root, "c.txt", "c's old content\n");
    let agent = Agent::start(&root, TOKEN);
    let mut b = Batch::default();
    b.mkdir("dir", 0o755);
    let mut puts: Vec<Put> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| whole_put(&format!("{n}.txt"), format!("{n}\n").as_bytes(), 0o644))
        .collect();
    puts[2].blake3 = blake3::hash(b"something else").as_bytes().to_vec();
    let indices = b.puts(puts);
    assert_eq!(indices, [1, 2, 3, 4, 5]);
    let r = client(&agent).await.apply(b.commit()).await.expect("Apply");
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    let e = expect_error(&r, 3, ErrorCode::HashMismatch, "blake3");
    assert_eq!(e.path, "c.txt");
    for n in ["a", "b", "d", "e"] {
        assert_file(
            &root,
            &format!("{n}.txt"),
            format!("{n}\n").as_bytes(),
            0o644,
        );
    }
    assert_eq!(
        std::fs::read(root.join("c.txt")).unwrap(),
        b"c's old content\n",
        "the refused put leaves the previous content"
    );
    assert!(root.join("dir").is_dir());
    assert!(staging_entries(&root).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_in_a_puts_message_without_all_its_bytes_is_refused_and_the_others_land() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    let agent = Agent::start(&root, TOKEN);
    let mut short = whole_put("short.txt", b"only part", 0o644);
    short.size = 100;
    let mut b = Batch::default();
    let i = b.puts(vec![
        whole_put("one.txt", b"one\n", 0o644),
        short,
        whole_put("two.txt", b"two\n", 0o644),
    ]);
    // A Data after it would belong to no put: the short one never started.
    let data = b.data(b"the other 91 bytes");
    // Inline bytes beyond the announced size.
    let mut long = whole_put("long.txt", b"too many bytes", 0o644);
    long.size = 3;
    let long = b.push(lks_proto::v1::apply_request::Op::Put(long));
    let r = client(&agent).await.apply(b.commit()).await.expect("Apply");
    assert_eq!(r.errors.len(), 3, "{:#?}", r.errors);
    let e = expect_error(&r, i[1], ErrorCode::Protocol, "all its bytes");
    assert_eq!(e.path, "short.txt");
    expect_error(&r, data, ErrorCode::Protocol, "Data without a Put");
    expect_error(
        &r,
        long,
        ErrorCode::Protocol,
        "more bytes than the announced size",
    );
    assert_file(&root, "one.txt", b"one\n", 0o644);
    assert_file(&root, "two.txt", b"two\n", 0o644);
    assert!(!root.join("short.txt").exists() && !root.join("long.txt").exists());
    assert!(staging_entries(&root).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operation_limit_counts_each_put_of_a_puts_message() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    let agent = Agent::start(&root, TOKEN);
    // Puts that fail on their path alone (nothing is written for them):
    // a few messages, more operations than a batch may have.
    let per_message = 50_000;
    let messages = (MAX_OPS_PER_BATCH as usize).div_ceil(per_message) + 1;
    let mut b = Batch::default();
    for _ in 0..messages {
        b.puts(
            (0..per_message)
                .map(|_| whole_put("../out", b"", 0o644))
                .collect(),
        );
    }
    assert!(b.ops.len() < 10 && (messages * per_message) as u64 > MAX_OPS_PER_BATCH);
    let err = client(&agent)
        .await
        .apply(b.commit())
        .await
        .expect_err("the batch was accepted");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("split it into several batches"),
        "{err:?}"
    );
    // One message short of the limit's worth is a batch like any other.
    let mut b = Batch::default();
    b.puts(
        (0..per_message)
            .map(|_| whole_put("../out", b"", 0o644))
            .collect(),
    );
    b.puts(vec![whole_put("ok.txt", b"ok\n", 0o644)]);
    let r = client(&agent).await.apply(b.commit()).await.expect("Apply");
    assert_eq!(r.ops, per_message as u64 + 2);
    assert!(r.errors.iter().all(|e| e.index < per_message as u64));
    assert_file(&root, "ok.txt", b"ok\n", 0o644);
    assert!(!tmp.path().join("out").exists());
}
