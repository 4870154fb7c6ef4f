//! A sync session with one agent: learn what it has, send what differs, and keep
//! the tree it last confirmed.

use crate::ignores::Ignores;
use crate::plan::{Op, confirm};
use crate::tree::{Kind, LocalTree, Node, Tree};
use crate::tunnel::{self, Client, WireCounter};
use lks_proto::chunk::{self, Chunk, Piece};
use lks_proto::limits::{DATA_CHUNK_BYTES, HOST_BYTES_PER_BATCH, HOST_FILES_PER_BATCH};
use lks_proto::v1::{self, ApplyRequest, apply_request::Op as WireOp};
use lks_proto::{PROTOCOL_VERSION, RelPath};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// What went wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The tunnel could not be opened.
    #[error(transparent)]
    Tunnel(#[from] tunnel::TunnelError),
    /// The agent refused the token.
    #[error(
        "the agent at {url} refused the token ({message}); use the same LKS_TOKEN or --token-file on both sides"
    )]
    Unauthenticated {
        /// The agent's URL.
        url: String,
        /// What it said.
        message: String,
    },
    /// The agent speaks another protocol version.
    #[error("the agent at {url} is incompatible: {message}")]
    Incompatible {
        /// The agent's URL.
        url: String,
        /// What it said.
        message: String,
    },
    /// The call failed (connection lost, agent restarted, ...).
    #[error("lost the agent at {url}: {message}")]
    Lost {
        /// The agent's URL.
        url: String,
        /// What happened.
        message: String,
    },
}

impl SessionError {
    /// Whether trying again later may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SessionError::Tunnel(tunnel::TunnelError::Unreachable { .. })
                | SessionError::Lost { .. }
        )
    }

    fn from_status(url: &str, s: tonic::Status) -> SessionError {
        let message = if s.message().is_empty() {
            tunnel::source_chain(&s)
        } else {
            s.message().to_string()
        };
        match s.code() {
            Code::Unauthenticated => SessionError::Unauthenticated {
                url: url.into(),
                message,
            },
            Code::FailedPrecondition => SessionError::Incompatible {
                url: url.into(),
                message,
            },
            _ => SessionError::Lost {
                url: url.into(),
                message,
            },
        }
    }
}

/// What the agent should do once a batch's files are applied.
#[derive(Debug, Default, Clone)]
pub struct Followup {
    /// Steps to run, in order.
    pub steps: Vec<v1::Step>,
    /// Restart the app if every step succeeded.
    pub restart: bool,
    /// Commit even with nothing to do: the end of a full sync, which an app
    /// held for it (`supervise --wait-for-sync`) waits for.
    pub sync_point: bool,
}

impl Report {
    /// Adds another batch's outcome to this one.
    pub fn absorb(&mut self, other: Report) {
        self.steps.extend(other.steps);
        self.restarted |= other.restarted;
        if !other.restart_skipped.is_empty() {
            self.restart_skipped = other.restart_skipped;
        }
        self.files += other.files;
        self.deleted += other.deleted;
        self.other += other.other;
        self.wire_bytes += other.wire_bytes;
        self.errors.extend(other.errors);
    }
}

impl Followup {
    fn is_empty(&self) -> bool {
        self.steps.is_empty() && !self.restart && !self.sync_point
    }
}

/// The outcome of sending one set of operations.
#[derive(Debug, Default)]
pub struct Report {
    /// Results of the steps that ran (a failure stops the rest).
    pub steps: Vec<v1::StepResult>,
    /// Whether the app was restarted.
    pub restarted: bool,
    /// Why a requested restart did not happen.
    pub restart_skipped: String,
    /// Files written.
    pub files: usize,
    /// Paths deleted.
    pub deleted: usize,
    /// Directories created or changed, symlinks, modes.
    pub other: usize,
    /// Bytes written to the wire.
    pub wire_bytes: u64,
    /// Operations the agent refused, with its message.
    pub errors: Vec<String>,
}

/// A connected agent and the tree it last confirmed.
pub struct Session {
    url: String,
    client: Client,
    wire: Arc<WireCounter>,
    /// Changes when the agent process restarts.
    pub boot_id: String,
    /// The agent's tree as last confirmed (ignored paths left out).
    remote: Tree,
    /// The batch ids of the probes sent (readiness checks): the events of
    /// their steps are the loop's own business, not the user's.
    probes: Probes,
    chunks: HashMap<[u8; 32], Arc<Vec<Chunk>>>,
    /// The directory beneath the agent's root this session syncs (None: the
    /// whole root). Paths in `remote` and in ops are relative to it.
    prefix: Option<RelPath>,
    /// Whether the prefix directory exists on the agent.
    prefix_exists: bool,
}

impl Session {
    /// Connects and says hello.
    pub async fn open(url: &str, token: &str) -> Result<Session, SessionError> {
        Session::open_with(&tunnel::Dialer::Tcp(url.to_string()), token).await
    }

    /// Connects through `dialer` (any byte stream to the agent) and says hello.
    pub async fn open_with(dialer: &tunnel::Dialer, token: &str) -> Result<Session, SessionError> {
        let url = &dialer.to_string();
        let (mut client, wire) = tunnel::connect_with(dialer, token).await?;
        let hello = client
            .hello(v1::HelloRequest {
                protocol_version: PROTOCOL_VERSION,
                client_version: env!("CARGO_PKG_VERSION").into(),
            })
            .await
            .map_err(|s| SessionError::from_status(url, s))?
            .into_inner();
        Ok(Session {
            url: url.into(),
            client,
            wire,
            boot_id: hello.boot_id,
            remote: Tree::new(),
            probes: Probes::default(),
            chunks: HashMap::new(),
            prefix: None,
            prefix_exists: true,
        })
    }

    /// The agent's event stream (step output, app output, restarts).
    pub async fn events(&mut self) -> Result<AgentEvents, SessionError> {
        let url = self.url.clone();
        let stream = self
            .client
            .events(v1::EventsRequest {})
            .await
            .map_err(|s| SessionError::from_status(&url, s))?
            .into_inner();
        Ok(AgentEvents {
            stream,
            probes: self.probes.clone(),
        })
    }

    /// The agent's tree as last confirmed (ignored paths left out).
    pub fn remote(&self) -> &Tree {
        &self.remote
    }

    /// Forgets what the agent has beyond `keep`: those paths are left alone
    /// (in a root seeded from an image, what its build made).
    pub fn keep_only(&mut self, keep: impl Fn(&RelPath) -> bool) -> usize {
        let before = self.remote.len();
        self.remote.retain(|p, _| keep(p));
        before - self.remote.len()
    }

    /// Runs `step` on the agent as a probe (a readiness check): its events
    /// are marked as such, nothing is synced.
    pub async fn probe(&mut self, step: v1::Step) -> Result<Option<v1::StepResult>, SessionError> {
        let followup = Followup {
            steps: vec![step],
            ..Followup::default()
        };
        let mut report = Report::default();
        let id = batch_id();
        self.probes.add(&id);
        self.apply_batch(
            &LocalTree::new(std::path::Path::new("/")),
            vec![],
            &followup,
            id,
            &mut report,
        )
        .await?;
        Ok(report.steps.into_iter().next())
    }

    /// Restricts the session to `prefix` beneath the agent's root (a sync
    /// mapping's remote directory).
    pub fn set_prefix(&mut self, prefix: Option<RelPath>) {
        self.prefix_exists = prefix.is_none();
        self.prefix = prefix;
    }

    fn missing_prefix(&self) -> Option<&RelPath> {
        self.prefix.as_ref().filter(|_| !self.prefix_exists)
    }

    fn wire_path(&self, p: &RelPath) -> String {
        match &self.prefix {
            Some(pre) => format!("{pre}/{p}"),
            None => p.to_string(),
        }
    }

    /// Replaces the confirmed tree with the agent's manifest, leaving out what
    /// the local rules ignore (the agent's copy of those is never touched).
    pub async fn fetch_manifest(&mut self, ignores: &Ignores) -> Result<Vec<String>, SessionError> {
        let url = self.url.clone();
        let mut stream = self
            .client
            .manifest(v1::ManifestRequest {})
            .await
            .map_err(|s| SessionError::from_status(&url, s))?
            .into_inner();
        let mut remote = Tree::new();
        let mut warnings = Vec::new();
        let mut prefix_exists = self.prefix.is_none();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|s| SessionError::from_status(&url, s))?;
            warnings.extend(batch.warnings.into_iter().map(|w| format!("agent: {w}")));
            for e in &batch.entries {
                let Some((path, node)) = Node::from_entry(e) else {
                    continue;
                };
                match &self.prefix {
                    None => {
                        remote.insert(path, node);
                    }
                    Some(pre) if path == *pre => prefix_exists = node.kind == Kind::Dir,
                    Some(pre) => {
                        if let Some(rest) = path
                            .as_str()
                            .strip_prefix(pre.as_str())
                            .and_then(|r| r.strip_prefix('/'))
                            && let Ok(rest) = RelPath::new(rest)
                        {
                            remote.insert(rest, node);
                        }
                    }
                }
            }
        }
        remote.retain(|p, n| !ignores.ignores_path(p, n.kind == Kind::Dir));
        self.remote = remote;
        self.prefix_exists = prefix_exists;
        Ok(warnings)
    }

    /// Sends `ops` (in batches that stay within the agent's limits) and records
    /// what the agent confirmed.
    pub async fn apply(&mut self, local: &LocalTree, ops: Vec<Op>) -> Result<Report, SessionError> {
        self.apply_with(local, ops, Followup::default()).await
    }

    /// Sends `ops`, then has the agent run `followup` (in the last batch, so
    /// it sees every file).
    pub async fn apply_with(
        &mut self,
        local: &LocalTree,
        ops: Vec<Op>,
        followup: Followup,
    ) -> Result<Report, SessionError> {
        let mut report = Report::default();
        let start_wire = self.wire.sent();
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        for op in ops {
            if let Op::Put { node, .. } = &op {
                batch_bytes += node.size;
            }
            batch.push(op);
            if batch.len() >= HOST_FILES_PER_BATCH || batch_bytes >= HOST_BYTES_PER_BATCH {
                self.apply_batch(
                    local,
                    std::mem::take(&mut batch),
                    &Followup::default(),
                    batch_id(),
                    &mut report,
                )
                .await?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() || !followup.is_empty() || self.missing_prefix().is_some() {
            self.apply_batch(local, batch, &followup, batch_id(), &mut report)
                .await?;
        }
        report.wire_bytes = self.wire.sent() - start_wire;
        Ok(report)
    }

    async fn apply_batch(
        &mut self,
        local: &LocalTree,
        ops: Vec<Op>,
        followup: &Followup,
        batch_id: String,
        report: &mut Report,
    ) -> Result<(), SessionError> {
        let url = self.url.clone();
        // Deltas need the chunks of what the agent has; fetch the ones we lack.
        let mut bases: HashMap<RelPath, Arc<Vec<Chunk>>> = HashMap::new();
        for op in &ops {
            if let Op::Put {
                path,
                node,
                base: Some(base),
            } = op
                && node.size >= chunk::DELTA_MIN_FILE_BYTES
                && let Some(chunks) = self.base_chunks(path, base).await
            {
                bases.insert(path.clone(), chunks);
            }
        }
        let ops = Arc::new(ops);
        let (tx, rx) = mpsc::channel::<ApplyRequest>(512);
        let root = local.abs_root();
        let producer_ops = ops.clone();
        let commit = v1::Commit {
            batch_id,
            steps: followup.steps.clone(),
            restart: followup.restart,
        };
        let prefix = self.prefix.clone();
        let ensure_prefix = self.missing_prefix().cloned();
        let producer = tokio::task::spawn_blocking(move || {
            produce(
                &root,
                &producer_ops,
                &bases,
                prefix.as_ref(),
                ensure_prefix.as_ref(),
                commit,
                tx,
            )
        });
        let result = self.client.apply(ReceiverStream::new(rx)).await;
        let produced = producer.await.map_err(|e| SessionError::Lost {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let result = result
            .map_err(|s| SessionError::from_status(&url, s))?
            .into_inner();
        // Map each error back to the operation whose messages it belongs to.
        let mut failed = vec![false; ops.len()];
        for err in &result.errors {
            let i = produced.starts.partition_point(|&s| s <= err.index);
            if i > 0 {
                failed[i - 1] = true;
            }
            report.errors.push(err.message.clone());
        }
        for (i, problem) in &produced.problems {
            failed[*i] = true;
            report.errors.push(problem.clone());
        }
        let mut sent: HashMap<usize, (u64, [u8; 32])> = HashMap::new();
        for (i, size, hash) in &produced.sent {
            sent.insert(*i, (*size, *hash));
        }
        for (i, op) in ops.iter().enumerate() {
            let op = match (op, sent.get(&i)) {
                (Op::Put { path, node, base }, Some((size, hash))) => &Op::Put {
                    path: path.clone(),
                    node: Node {
                        size: *size,
                        hash: Some(*hash),
                        ..node.clone()
                    },
                    base: *base,
                },
                _ => op,
            };
            if failed[i] {
                // The agent's state at that path is unknown now: forget it so
                // the next plan sends it whole.
                self.remote.remove(op.path());
                continue;
            }
            confirm(&mut self.remote, op);
            match op {
                Op::Put { .. } => report.files += 1,
                Op::Delete(_) => report.deleted += 1,
                _ => report.other += 1,
            }
        }
        report.steps.extend(result.steps);
        report.restarted |= result.restarted;
        if !result.restart_skipped.is_empty() {
            report.restart_skipped = result.restart_skipped;
        }
        if self.missing_prefix().is_some() && result.errors.iter().all(|e| e.index != 0) {
            self.prefix_exists = true;
        }
        for (hash, chunks) in produced.new_chunks {
            self.chunks.insert(hash, Arc::new(chunks));
        }
        Ok(())
    }

    async fn base_chunks(&mut self, path: &RelPath, base: &[u8; 32]) -> Option<Arc<Vec<Chunk>>> {
        if let Some(c) = self.chunks.get(base) {
            return Some(c.clone());
        }
        let resp = self
            .client
            .chunks(v1::ChunksRequest {
                path: self.wire_path(path),
            })
            .await
            .ok()?
            .into_inner();
        if resp.blake3[..] != base[..] {
            return None;
        }
        let chunks: Vec<Chunk> = resp
            .chunks
            .into_iter()
            .filter_map(|c| {
                Some(Chunk {
                    offset: c.offset,
                    length: c.length,
                    hash: c.blake3.try_into().ok()?,
                })
            })
            .collect();
        let chunks = Arc::new(chunks);
        self.chunks.insert(*base, chunks.clone());
        Some(chunks)
    }
}

fn batch_id() -> String {
    format!("{:08x}", rand_id())
}

/// The ids of the last probes a session sent.
#[derive(Clone, Default)]
struct Probes(Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl Probes {
    /// Enough for the probes whose events may still be on their way.
    const KEPT: usize = 64;

    fn add(&self, id: &str) {
        let mut ids = self.0.lock().unwrap();
        if ids.len() == Self::KEPT {
            ids.pop_front();
        }
        ids.push_back(id.to_string());
    }

    fn contains(&self, id: &str) -> bool {
        self.0.lock().unwrap().iter().any(|p| p == id)
    }
}

/// One event of the agent, and whether it comes from a probe of the loop
/// (a readiness check) rather than from the user's steps and app.
pub struct AgentEvent {
    /// What happened.
    pub kind: v1::event::Kind,
    /// Whether a probe caused it.
    pub probe: bool,
}

/// The agent's event stream.
pub struct AgentEvents {
    stream: tonic::Streaming<v1::Event>,
    probes: Probes,
}

impl AgentEvents {
    /// The next event; `None` when the stream ended (the agent went away).
    pub async fn next(&mut self) -> Option<AgentEvent> {
        use v1::event::Kind;
        loop {
            let Some(kind) = self.stream.next().await?.ok()?.kind else {
                continue;
            };
            let batch = match &kind {
                Kind::Output(o) if o.source == v1::OutputSource::Step as i32 => Some(&o.batch_id),
                Kind::StepStarted(s) => Some(&s.batch_id),
                Kind::StepFinished(s) => Some(&s.batch_id),
                _ => None,
            };
            let probe = batch.is_some_and(|b| self.probes.contains(b));
            return Some(AgentEvent { kind, probe });
        }
    }
}

fn rand_id() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// What the producer thread learned while streaming a batch.
#[derive(Default)]
struct Produced {
    /// Message index at which each operation starts.
    starts: Vec<u64>,
    /// Operations that could not be sent (index, message).
    problems: Vec<(usize, String)>,
    /// Chunk lists of large files sent, by content hash, for later deltas.
    new_chunks: Vec<([u8; 32], Vec<Chunk>)>,
    /// What was really sent for each put: (op index, size, blake3).
    sent: Vec<(usize, u64, [u8; 32])>,
}

/// Streams the messages of a batch; runs on a blocking thread so file reads
/// overlap with the network.
fn produce(
    root: &std::path::Path,
    ops: &[Op],
    bases: &HashMap<RelPath, Arc<Vec<Chunk>>>,
    prefix: Option<&RelPath>,
    ensure_prefix: Option<&RelPath>,
    commit: v1::Commit,
    tx: mpsc::Sender<ApplyRequest>,
) -> Produced {
    let wire = |p: &RelPath| match prefix {
        Some(pre) => format!("{pre}/{p}"),
        None => p.to_string(),
    };
    let mut out = Produced::default();
    let index = std::cell::Cell::new(0u64);
    let mut send = |op: WireOp| -> bool {
        index.set(index.get() + 1);
        tx.blocking_send(ApplyRequest { op: Some(op) }).is_ok()
    };
    if let Some(pre) = ensure_prefix
        && !send(WireOp::Mkdir(v1::Mkdir {
            path: pre.to_string(),
            mode: 0o755,
        }))
    {
        return out;
    }
    for (i, op) in ops.iter().enumerate() {
        out.starts.push(index.get());
        let ok = match op {
            Op::Delete(p) => send(WireOp::Delete(v1::Delete { path: wire(p) })),
            Op::Mkdir(p, mode) => send(WireOp::Mkdir(v1::Mkdir {
                path: wire(p),
                mode: *mode,
            })),
            Op::Symlink(p, t) => send(WireOp::Symlink(v1::Symlink {
                path: wire(p),
                target: t.clone(),
            })),
            Op::Chmod(p, mode) => send(WireOp::Chmod(v1::Chmod {
                path: wire(p),
                mode: *mode,
            })),
            Op::Put { path, node, base } => {
                let abs: PathBuf = root.join(path.as_str());
                match send_file(
                    &abs,
                    &wire(path),
                    node,
                    base.as_ref().filter(|_| bases.contains_key(path)),
                    bases.get(path),
                    &mut send,
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
    send(WireOp::Commit(commit));
    out
}

/// The outcome of sending one file.
struct SentFile {
    /// Whether the stream is still open.
    open: bool,
    /// Size and blake3 of what was sent, and its chunks when it is large.
    file: Option<(u64, [u8; 32], Option<Vec<Chunk>>)>,
}

/// Sends one file, as a delta against `base_chunks` when given. The hash and
/// size announced are those of the bytes actually read, so a file that changes
/// meanwhile is still sent consistently (its next event brings the rest).
fn send_file(
    abs: &std::path::Path,
    path: &str,
    node: &Node,
    base: Option<&[u8; 32]>,
    base_chunks: Option<&Arc<Vec<Chunk>>>,
    send: &mut impl FnMut(WireOp) -> bool,
) -> std::io::Result<SentFile> {
    let closed = SentFile {
        open: false,
        file: None,
    };
    let mut f = std::fs::File::open(abs)?;
    let put = |size: u64, hash: &[u8; 32], base_blake3: Vec<u8>| {
        WireOp::Put(v1::Put {
            path: path.to_string(),
            mode: node.mode,
            size,
            blake3: hash.to_vec(),
            mtime_ns: node.mtime_ns,
            base_blake3,
        })
    };
    if node.size < chunk::DELTA_MIN_FILE_BYTES {
        // Small: one read, hashed in memory.
        let mut data = Vec::with_capacity(node.size as usize);
        (&mut f)
            .take(chunk::DELTA_MIN_FILE_BYTES)
            .read_to_end(&mut data)?;
        let hash = *blake3::hash(&data).as_bytes();
        let size = data.len() as u64;
        if !send(put(size, &hash, Vec::new())) {
            return Ok(closed);
        }
        if !data.is_empty() && !send(WireOp::Data(v1::Data { bytes: data })) {
            return Ok(closed);
        }
        return Ok(SentFile {
            open: true,
            file: Some((size, hash, None)),
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
    if !send(put(size, &hash, base_blake3)) {
        return Ok(closed);
    }
    for piece in pieces {
        match piece {
            Piece::Copy { offset, length } => {
                if !send(WireOp::Copy(v1::Copy { offset, length })) {
                    return Ok(closed);
                }
            }
            Piece::Literal { offset, length } => {
                let mut done = 0;
                while done < length {
                    let n = (length - done).min(DATA_CHUNK_BYTES as u64) as usize;
                    let mut buf = vec![0u8; n];
                    f.read_exact_at(&mut buf, offset + done)?;
                    if !send(WireOp::Data(v1::Data { bytes: buf })) {
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

/// Hashes everything read through it.
struct HashingReader<'a, R> {
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
