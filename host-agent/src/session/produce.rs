//! The byte producer of a batch: on a blocking thread, it reads each file
//! to send (whole, or as a delta against the chunks the agent has), hashes
//! what it read and streams the messages, so file reads overlap with the
//! network.

use super::readahead;
use crate::plan::{Op, PutFile};
use lks_proto::RelPath;
use lks_proto::chunk::{self, Chunk, Piece};
use lks_proto::limits::DATA_CHUNK_BYTES;
use lks_proto::v1::{self, ApplyRequest, apply_request::Op as WireOp};
use rustix::fs::{Mode, OFlags};
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// What the producer thread learned while streaming a batch.
#[derive(Default)]
pub(super) struct Produced {
    /// Message index at which each operation starts.
    pub(super) starts: Vec<u64>,
    /// Operations that could not be sent (index, message).
    pub(super) problems: Vec<(usize, String)>,
    /// Puts not sent because their file is gone (an editor's or a tool's
    /// short-lived file): not a change, and not an error; the deletion's
    /// event brings what follows.
    pub(super) vanished: Vec<usize>,
    /// Chunk lists of large files sent, by content hash, for later deltas.
    pub(super) new_chunks: Vec<([u8; 32], Vec<Chunk>)>,
    /// What was really sent for each put: (op index, size, blake3).
    pub(super) sent: Vec<(usize, u64, [u8; 32])>,
}

/// Streams the messages of a batch; runs on a blocking thread so file reads
/// overlap with the network.
pub(super) fn produce(
    root: &std::path::Path,
    ops: &[Op],
    bases: &HashMap<RelPath, Arc<Vec<Chunk>>>,
    prefix: Option<&RelPath>,
    ensure_prefix: Option<&RelPath>,
    commit: v1::Commit,
    tx: readahead::Sender,
) -> Produced {
    let wire = |p: &RelPath| match prefix {
        Some(pre) => format!("{pre}/{p}"),
        None => p.to_string(),
    };
    let mut out = Produced {
        starts: Vec::with_capacity(ops.len()),
        sent: Vec::with_capacity(ops.len()),
        ..Produced::default()
    };
    let mut outbox = Outbox::new(tx);
    let mut dirs = Dirs::default();
    if let Some(pre) = ensure_prefix
        && !outbox.send(WireOp::Mkdir(v1::Mkdir {
            path: pre.to_string(),
            mode: 0o755,
        }))
    {
        return out;
    }
    for (i, op) in ops.iter().enumerate() {
        out.starts.push(outbox.index);
        let ok = match op {
            Op::Delete(p) => outbox.send(WireOp::Delete(v1::Delete { path: wire(p) })),
            Op::Mkdir(p, mode) => outbox.send(WireOp::Mkdir(v1::Mkdir {
                path: wire(p),
                mode: *mode,
            })),
            Op::Symlink(p, t) => outbox.send(WireOp::Symlink(v1::Symlink {
                path: wire(p),
                target: t.to_string(),
            })),
            Op::Chmod(p, mode) => outbox.send(WireOp::Chmod(v1::Chmod {
                path: wire(p),
                mode: *mode,
            })),
            Op::Put { path, file, base } => {
                match send_file(
                    dirs.open(root, path),
                    &wire(path),
                    file,
                    base.as_deref().filter(|_| bases.contains_key(path)),
                    bases.get(path),
                    &mut outbox,
                ) {
                    Ok(sent) => {
                        if let Some((size, hash, chunks)) = sent.file {
                            out.sent.push((i, size, hash));
                            if let Some(c) = chunks {
                                out.new_chunks.push((hash, c));
                            }
                        }
                        sent.open
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        out.vanished.push(i);
                        true
                    }
                    Err(e) => {
                        out.problems.push((i, format!("cannot read {path}: {e}")));
                        true
                    }
                }
            }
        };
        if !ok {
            return out;
        }
    }
    outbox.send(WireOp::Commit(commit));
    out
}

/// Files this small travel together, several in one message.
const PACKED_FILE_BYTES: u64 = 64 * 1024;
/// A message of small files is sent once it holds this many bytes...
const PACK_BYTES: usize = 1024 * 1024;
/// ...or this many files.
const PACK_FILES: usize = 1024;

/// The messages of a batch on their way out: it counts operations (the
/// agent's error indices count them so) and packs small files together
/// (one message for up to [`PACK_FILES`] of them, not two each).
pub(super) struct Outbox {
    tx: readahead::Sender,
    /// The index of the next operation.
    index: u64,
    pack: Vec<v1::Put>,
    pack_bytes: usize,
}

impl Outbox {
    fn new(tx: readahead::Sender) -> Outbox {
        Outbox {
            tx,
            index: 0,
            pack: Vec::new(),
            pack_bytes: 0,
        }
    }

    /// Sends one operation (after the small files packed so far); false
    /// once the stream is closed.
    fn send(&mut self, op: WireOp) -> bool {
        if !self.flush() {
            return false;
        }
        self.index += 1;
        self.deliver(op)
    }

    /// Adds a whole small file (all its bytes in `put.data`) to the pack.
    fn pack(&mut self, put: v1::Put) -> bool {
        self.index += 1;
        self.pack_bytes += put.data.len() + put.path.len();
        self.pack.push(put);
        if self.pack_bytes >= PACK_BYTES || self.pack.len() >= PACK_FILES {
            return self.flush();
        }
        true
    }

    /// Sends the small files packed so far.
    fn flush(&mut self) -> bool {
        self.pack_bytes = 0;
        let op = match self.pack.len() {
            0 => return true,
            1 => WireOp::Put(self.pack.pop().expect("one")),
            _ => WireOp::Puts(v1::Puts {
                puts: std::mem::take(&mut self.pack),
            }),
        };
        self.deliver(op)
    }

    fn deliver(&self, op: WireOp) -> bool {
        self.tx.blocking_send(ApplyRequest { op: Some(op) })
    }
}

/// The directory the last file was read from, kept open: the files of a
/// directory are opened relative to it (`openat`), not each by a path walked
/// from `/` (a third of the cost of opening a small file).
#[derive(Default)]
struct Dirs {
    last: Option<(Option<RelPath>, OwnedFd)>,
}

impl Dirs {
    /// Opens the local file `path` beneath `root` for reading.
    fn open(&mut self, root: &Path, path: &RelPath) -> std::io::Result<std::fs::File> {
        let parent = path.parent();
        if !matches!(&self.last, Some((p, _)) if *p == parent) {
            self.last = None;
            let dir = match &parent {
                Some(p) => root.join(p.as_str()),
                None => root.to_path_buf(),
            };
            let fd = rustix::fs::open(
                &dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            self.last = Some((parent, fd));
        }
        let (_, dir) = self.last.as_ref().expect("just opened");
        let fd = rustix::fs::openat(
            dir,
            path.file_name(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    }
}

/// The outcome of sending one file.
pub(super) struct SentFile {
    /// Whether the stream is still open.
    open: bool,
    /// Size and blake3 of what was sent, and its chunks when it is large.
    file: Option<(u64, [u8; 32], Option<Vec<Chunk>>)>,
}

/// Sends one file, as a delta against `base_chunks` when given. The hash and
/// size announced are those of the bytes actually read, so a file that changes
/// meanwhile is still sent consistently (its next event brings the rest).
pub(super) fn send_file(
    file: std::io::Result<std::fs::File>,
    path: &str,
    planned: &PutFile,
    base: Option<&[u8; 32]>,
    base_chunks: Option<&Arc<Vec<Chunk>>>,
    outbox: &mut Outbox,
) -> std::io::Result<SentFile> {
    let closed = SentFile {
        open: false,
        file: None,
    };
    let mut f = file?;
    let put = |size: u64, hash: &[u8; 32], base_blake3: Vec<u8>, data: Vec<u8>| v1::Put {
        path: path.to_string(),
        mode: planned.mode,
        size,
        blake3: hash.to_vec(),
        mtime_ns: planned.mtime_ns,
        base_blake3,
        data,
    };
    if planned.size < chunk::DELTA_MIN_FILE_BYTES {
        // Small: one read, hashed in memory, its bytes in the Put itself
        // (and the smallest packed with others).
        let data = read_small(&mut f, planned.size)?;
        let hash = *blake3::hash(&data).as_bytes();
        let size = data.len() as u64;
        let put = put(size, &hash, Vec::new(), data);
        let open = if size <= PACKED_FILE_BYTES {
            outbox.pack(put)
        } else {
            outbox.send(WireOp::Put(put))
        };
        return Ok(SentFile {
            open,
            file: open.then_some((size, hash, None)),
        });
    }
    // Large: one streaming pass for the hash and the chunks, then the pieces.
    let size = f.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    let new_chunks = chunk::chunks_of_reader(HashingReader {
        inner: (&mut f).take(size),
        hasher: &mut hasher,
    })?;
    let hash = *hasher.finalize().as_bytes();
    let pieces = match (base, base_chunks) {
        (Some(_), Some(old)) => chunk::recipe(old, &new_chunks),
        _ => vec![Piece::Literal {
            offset: 0,
            length: size,
        }],
    };
    let base_blake3 = if pieces.iter().any(|p| matches!(p, Piece::Copy { .. })) {
        base.map(|b| b.to_vec()).unwrap_or_default()
    } else {
        Vec::new()
    };
    if !outbox.send(WireOp::Put(put(size, &hash, base_blake3, Vec::new()))) {
        return Ok(closed);
    }
    for piece in pieces {
        match piece {
            Piece::Copy { offset, length } => {
                if !outbox.send(WireOp::Copy(v1::Copy { offset, length })) {
                    return Ok(closed);
                }
            }
            Piece::Literal { offset, length } => {
                let mut done = 0;
                while done < length {
                    let n = (length - done).min(DATA_CHUNK_BYTES as u64) as usize;
                    let mut buf = vec![0u8; n];
                    f.read_exact_at(&mut buf, offset + done)?;
                    if !outbox.send(WireOp::Data(v1::Data { bytes: buf })) {
                        return Ok(closed);
                    }
                    done += n as u64;
                }
            }
        }
    }
    Ok(SentFile {
        open: true,
        file: Some((size, hash, Some(new_chunks))),
    })
}

/// The whole content of a small file (at most [`chunk::DELTA_MIN_FILE_BYTES`];
/// more is left for the next sync), expected to be `size` bytes long: one
/// `read` of a byte more than that, whose short count is the end of a
/// regular file (`read_to_end` asks once more to find it: a second system
/// call for every file of a cold sync).
fn read_small(f: &mut std::fs::File, size: u64) -> std::io::Result<Vec<u8>> {
    let want = (size + 1).min(chunk::DELTA_MIN_FILE_BYTES) as usize;
    let mut data = vec![0u8; want];
    let n = loop {
        match f.read(&mut data) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    data.truncate(n);
    if n == want {
        // It grew since the scan: the rest, up to the limit.
        let rest = chunk::DELTA_MIN_FILE_BYTES - n as u64;
        f.take(rest).read_to_end(&mut data)?;
    }
    Ok(data)
}

/// Hashes everything read through it.
pub(super) struct HashingReader<'a, R> {
    inner: R,
    hasher: &'a mut blake3::Hasher,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[test]
    fn a_file_gone_before_it_is_read_is_not_sent_and_not_a_problem() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("kept.txt"), b"kept").unwrap();
        let file = PutFile::test_file;
        let put = |p: &str, size| Op::Put {
            path: RelPath::new(p).unwrap(),
            file: file(size),
            base: None,
        };
        let ops = vec![put("sedAb12Cd", 4), put("kept.txt", 4)];
        let (tx, rx) = readahead::channel(readahead::BUDGET, None);
        let produced = produce(
            root.path(),
            &ops,
            &HashMap::new(),
            None,
            None,
            v1::Commit::default(),
            tx,
        );
        assert!(produced.problems.is_empty());
        assert_eq!(produced.vanished, vec![0]);
        assert_eq!(produced.sent.len(), 1);
        assert_eq!(produced.sent[0].0, 1);
        let mut puts = Vec::new();
        for m in futures::executor::block_on(rx.collect::<Vec<_>>()) {
            if let Some(WireOp::Put(p)) = m.op {
                puts.push(p.path);
            }
        }
        assert_eq!(puts, vec!["kept.txt".to_string()]);
    }

    #[test]
    fn small_files_travel_together_and_each_keeps_its_operation_index() {
        let root = tempfile::tempdir().unwrap();
        let file = PutFile::test_file;
        let mut ops = Vec::new();
        for i in 0..5 {
            std::fs::write(root.path().join(format!("s{i}")), format!("small {i}")).unwrap();
            ops.push(Op::Put {
                path: RelPath::new(format!("s{i}")).unwrap(),
                file: file(7),
                base: None,
            });
        }
        let big = vec![7u8; 300 * 1024];
        std::fs::write(root.path().join("big"), &big).unwrap();
        ops.push(Op::Put {
            path: RelPath::new("big").unwrap(),
            file: file(big.len() as u64),
            base: None,
        });
        ops.push(Op::Delete(RelPath::new("gone").unwrap()));
        let (tx, rx) = readahead::channel(readahead::BUDGET, None);
        let produced = produce(
            root.path(),
            &ops,
            &HashMap::new(),
            None,
            None,
            v1::Commit::default(),
            tx,
        );
        let mut kinds = Vec::new();
        for m in futures::executor::block_on(rx.collect::<Vec<_>>()) {
            kinds.push(match m.op.unwrap() {
                WireOp::Puts(p) => {
                    assert!(p.puts.iter().all(|p| p.data.len() as u64 == p.size));
                    format!("puts {}", p.puts.len())
                }
                WireOp::Put(p) => format!("put {} inline {}", p.path, p.data.len()),
                WireOp::Data(d) => format!("data {}", d.bytes.len()),
                WireOp::Delete(_) => "delete".into(),
                WireOp::Commit(_) => "commit".into(),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(
            kinds,
            [
                "puts 5",
                "put big inline 0",
                "data 307200",
                "delete",
                "commit"
            ]
        );
        // One index per small file, then the big one's Put and Data.
        assert_eq!(produced.starts, [0, 1, 2, 3, 4, 5, 7]);
        assert_eq!(produced.sent.len(), 6);
    }

    #[test]
    fn a_small_file_is_read_whole_whatever_its_size_became() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let read = |size: u64| {
            let mut f = std::fs::File::open(&path).unwrap();
            read_small(&mut f, size).unwrap()
        };
        std::fs::write(&path, b"").unwrap();
        assert_eq!(read(0), b"");
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(read(5), b"hello");
        // Shrank, grew since the scan said 5 bytes.
        assert_eq!(read(9), b"hello");
        std::fs::write(&path, b"hello, world").unwrap();
        assert_eq!(read(5), b"hello, world");
        // Grew past the limit: what the limit allows.
        std::fs::write(&path, vec![1u8; chunk::DELTA_MIN_FILE_BYTES as usize + 10]).unwrap();
        assert_eq!(read(5).len() as u64, chunk::DELTA_MIN_FILE_BYTES);
    }
}
