//! The `lks.agent.v1.Agent` gRPC service.

use crate::apply::{Batch, BatchError};
use crate::followup::Followup;
use crate::manifest::Manifest;
use crate::root::Root;
use crate::turns::{self, Turns};
use futures::{FutureExt, Stream};
use lks_proto::v1::agent_server::Agent;
use lks_proto::v1::{
    ApplyRequest, ApplyResult, BatchApplied, ChunkRef, ChunksRequest, ChunksResponse, Commit,
    Event, EventsRequest, ForwardData, HelloRequest, HelloResponse, Limits, ManifestBatch,
    ManifestRequest, apply_request, event,
};
use lks_proto::{PROTOCOL_VERSION, RelPath, limits};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Longest pause between two messages of one batch.
const BATCH_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Most messages handed to the thread that applies a batch at once.
const RUN_MESSAGES: usize = 64;

/// Most file bytes in one run (a message more at the most).
const RUN_BYTES: usize = 1 << 20;

/// Runs received before the thread that applies them took them.
const RUNS_AHEAD: usize = 2;

/// The file bytes a message carries.
fn payload(req: &ApplyRequest) -> usize {
    match &req.op {
        Some(apply_request::Op::Data(d)) => d.bytes.len(),
        Some(apply_request::Op::Put(p)) => p.data.len(),
        Some(apply_request::Op::Puts(p)) => p.puts.iter().map(|p| p.data.len()).sum(),
        _ => 0,
    }
}

/// Entries per Manifest message.
const MANIFEST_BATCH: usize = 2000;

/// State shared by every call.
pub struct AgentService {
    root: Arc<Root>,
    /// What the agent knows of its root, kept current.
    manifest: Arc<Manifest>,
    boot_id: String,
    /// One batch at a time, follow-up included: batches are applied in the
    /// order they arrive, and a batch waits for the steps and restart of the
    /// previous one (a silent one yields: see `turns.rs`).
    turns: Turns,
    events: broadcast::Sender<Event>,
    followup: Followup,
    /// Becomes true when the agent shuts down: event streams end.
    shutdown: watch::Receiver<bool>,
}

impl AgentService {
    /// A service for `root` (watched, from the first Manifest on, if
    /// `watch_root`), publishing on `events`, running `followup` after each
    /// committed batch.
    pub fn new(
        root: Arc<Root>,
        watch_root: bool,
        events: broadcast::Sender<Event>,
        followup: Followup,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let boot_id = hex::encode(rand::random::<[u8; 8]>());
        AgentService {
            manifest: Arc::new(Manifest::new(root.clone(), watch_root, &boot_id)),
            root,
            boot_id,
            turns: Turns::default(),
            events,
            followup,
            shutdown,
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        let req = req.into_inner();
        if req.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} is not supported by lks-agent {} (speaks {PROTOCOL_VERSION}); \
                 use matching lks and lks-agent versions",
                req.protocol_version,
                env!("CARGO_PKG_VERSION")
            )));
        }
        if let Some(app) = &self.followup.app {
            app.connected();
        }
        Ok(Response::new(HelloResponse {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            root: self.root.path().display().to_string(),
            capabilities: self.capabilities(),
            boot_id: self.boot_id.clone(),
            limits: Some(Limits {
                max_message_bytes: limits::MAX_MESSAGE_BYTES as u64,
                max_path_bytes: limits::MAX_PATH_BYTES as u64,
                max_ops_per_batch: limits::MAX_OPS_PER_BATCH,
                max_file_bytes: limits::MAX_FILE_BYTES,
            }),
        }))
    }

    type ManifestStream = BoxStream<ManifestBatch>;

    async fn manifest(
        &self,
        req: Request<ManifestRequest>,
    ) -> Result<Response<Self::ManifestStream>, Status> {
        let req = req.into_inner();
        let unchanged_since = req.unchanged_since;
        let prefix = match req.prefix {
            p if p.is_empty() => None,
            p => Some(
                RelPath::new(p)
                    .map_err(|e| Status::invalid_argument(format!("refused prefix: {e}")))?,
            ),
        };
        let manifest = self.manifest.clone();
        let asked = prefix.clone();
        // Looking at the root and hashing happen off the async workers.
        let warnings = tokio::task::spawn_blocking(move || manifest.refresh(asked.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("manifest scan failed: {e}")))?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let version = self.manifest.version();
        if warnings.is_empty() && !unchanged_since.is_empty() && unchanged_since == version {
            let batch = ManifestBatch {
                version,
                unchanged: true,
                ..Default::default()
            };
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(batch)]))));
        }
        let answer = Answer {
            manifest: self.manifest.clone(),
            prefix: prefix.map(|p| p.to_string()),
            after: None,
            warnings: Some(warnings),
            version: Some(version),
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            answer,
            |mut answer| async move { answer.next().map(|batch| (Ok(batch), answer)) },
        ))))
    }

    async fn chunks(
        &self,
        req: Request<ChunksRequest>,
    ) -> Result<Response<ChunksResponse>, Status> {
        let path = RelPath::new(req.into_inner().path)
            .map_err(|e| Status::invalid_argument(format!("refused path: {e}")))?;
        let root = self.root.clone();
        let resp = tokio::task::spawn_blocking(move || -> Result<ChunksResponse, Status> {
            let Some(f) = root
                .open_file(&path)
                .map_err(|e| Status::failed_precondition(e.to_string()))?
            else {
                return Err(Status::not_found(format!("{path}: no regular file there")));
            };
            let size = f
                .metadata()
                .map_err(|e| Status::internal(e.to_string()))?
                .len();
            let mut whole = blake3::Hasher::new();
            let tee = HashingReader {
                inner: f,
                hasher: &mut whole,
            };
            let chunks = lks_proto::chunk::chunks_of_reader(tee)
                .map_err(|e| Status::internal(format!("{path}: {e}")))?;
            Ok(ChunksResponse {
                size,
                blake3: whole.finalize().as_bytes().to_vec(),
                chunks: chunks
                    .into_iter()
                    .map(|c| ChunkRef {
                        offset: c.offset,
                        length: c.length,
                        blake3: c.hash.to_vec(),
                    })
                    .collect(),
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(resp))
    }

    async fn apply(
        &self,
        req: Request<Streaming<ApplyRequest>>,
    ) -> Result<Response<ApplyResult>, Status> {
        if let Some(expected) = req.metadata().get(lks_proto::BOOT_ID_METADATA)
            && expected.as_bytes() != self.boot_id.as_bytes()
        {
            return Err(Status::aborted(format!(
                "the agent restarted: it is boot {}, the batch was planned against boot {}; \
                 fetch its manifest again",
                self.boot_id,
                String::from_utf8_lossy(expected.as_bytes())
            )));
        }
        let stream = req.into_inner();
        let turn = self.turns.take().await;
        // Received and applied in a task of its own: a client that goes away
        // cancels this call, not the batch, which keeps its turn until what
        // it staged is removed (or its commit is applied). The next batch
        // never runs beside it.
        let received = tokio::spawn(receive(
            stream,
            turn,
            self.root.clone(),
            self.manifest.clone(),
        ));
        let (outcome, turn, client_error) = received
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let outcome = outcome?;
        let guard = turn.received();
        let (mut result, commit) =
            outcome.map_err(|e| Status::resource_exhausted(e.to_string()))?;
        if let Some(e) = client_error {
            tracing::warn!("batch stream broke off: {e}");
            return Err(Status::aborted(format!(
                "the batch stream broke off: {}",
                e.message()
            )));
        }
        let Some(commit) = commit else {
            return Err(Status::invalid_argument("the batch ended without a Commit"));
        };
        let _ = self.events.send(Event {
            kind: Some(event::Kind::BatchApplied(BatchApplied {
                batch_id: commit.batch_id.clone(),
                ops: result.ops,
                errors: result.errors.len() as u64,
            })),
        });
        // The follow-up runs in a task of its own that holds the batch lock: a
        // client that goes away mid-build neither kills the build nor lets the
        // next batch overtake it, and the restart still follows the files.
        let followup = self.followup.clone();
        let span = tracing::info_span!("batch", id = %commit.batch_id);
        let outcome = tokio::spawn(
            async move {
                let outcome = followup.run(&commit).await;
                drop(guard);
                outcome
            }
            .instrument(span),
        )
        .await
        .map_err(|e| Status::internal(format!("the batch's steps failed: {e}")))?;
        result.steps = outcome.steps;
        result.restarted = outcome.restarted;
        result.restart_skipped = outcome.restart_skipped;
        Ok(Response::new(result))
    }

    type EventsStream = BoxStream<Event>;

    async fn events(
        &self,
        _req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let rx = self.events.subscribe();
        let stream = BroadcastStream::new(rx).filter_map(|e| e.ok().map(Ok));
        let (tx, out) = mpsc::channel(64);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::pin!(stream);
            loop {
                // The stream ends when the agent shuts down, or the server's
                // graceful shutdown would wait for it forever.
                let e = tokio::select! {
                    e = stream.next() => e,
                    _ = shutdown.wait_for(|&down| down) => None,
                };
                let Some(e) = e else { break };
                if tx.send(e).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    type ForwardStream = BoxStream<ForwardData>;

    async fn forward(
        &self,
        req: Request<Streaming<ForwardData>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let rx = crate::forward::open(req.into_inner()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl AgentService {
    /// What this agent can do beyond the base protocol.
    fn capabilities(&self) -> Vec<String> {
        let mut caps = vec![
            "delta".into(),
            "mtime".into(),
            "steps".into(),
            "forward".into(),
        ];
        if self.followup.app.is_some() {
            caps.push("supervise".into());
        }
        caps
    }
}

/// A Manifest answer on its way: batches of entries read from memory (each
/// under the lock a moment), then the warnings.
struct Answer {
    manifest: Arc<Manifest>,
    prefix: Option<String>,
    /// The last path sent.
    after: Option<String>,
    /// Sent last (and in the only batch when there is no entry); None once sent.
    warnings: Option<Vec<String>>,
    /// Sent first; None once sent.
    version: Option<String>,
}

impl Answer {
    fn next(&mut self) -> Option<ManifestBatch> {
        let entries = self.manifest.page(
            self.prefix.as_deref(),
            self.after.as_deref(),
            MANIFEST_BATCH,
        );
        if let Some(last) = entries.last() {
            self.after = Some(last.path.clone());
            return Some(ManifestBatch {
                entries,
                version: self.version.take().unwrap_or_default(),
                ..Default::default()
            });
        }
        let warnings = self.warnings.take()?;
        // Nothing at all to answer is still one (empty) batch.
        if warnings.is_empty() && self.after.is_some() {
            return None;
        }
        Some(ManifestBatch {
            warnings,
            version: self.version.take().unwrap_or_default(),
            ..Default::default()
        })
    }
}

/// Hashes everything read through it.
struct HashingReader<'a, R> {
    inner: R,
    hasher: &'a mut blake3::Hasher,
}

impl<R: std::io::Read> std::io::Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What a batch's stream brought: the batch's result (applied with its
/// commit, else nothing), its turn, and why its client's stream broke off
/// if it did.
type Received = (
    Result<Result<(ApplyResult, Option<Commit>), BatchError>, Status>,
    turns::Turn,
    Option<Status>,
);

/// Receives a batch from `stream` and applies it on a blocking thread as
/// its messages arrive (with its commit; without, everything staged is
/// removed).
async fn receive(
    mut stream: Streaming<ApplyRequest>,
    turn: turns::Turn,
    root: Arc<Root>,
    manifest: Arc<Manifest>,
) -> Received {
    let receiving = turn.receiving().clone();
    // The batch is applied on a blocking thread, fed as messages arrive.
    // Messages are handed over in runs (whatever has already arrived, up
    // to RUN_MESSAGES or RUN_BYTES), so small files do not cost a thread
    // wake-up each; a few runs wait at most (what the thread has not
    // written yet is held in memory).
    let (tx, mut rx) = mpsc::channel::<Vec<ApplyRequest>>(RUNS_AHEAD);
    let worker = tokio::task::spawn_blocking(
        move || -> Result<(ApplyResult, Option<Commit>), BatchError> {
            let mut batch = Batch::new(&root, &manifest);
            'run: while let Some(reqs) = rx.blocking_recv() {
                for req in reqs {
                    batch.apply(req)?;
                    if batch.committed() {
                        break 'run;
                    }
                }
            }
            // Applied only with its commit; else everything staged goes.
            Ok(batch.finish())
        },
    );
    let mut client_error = None;
    loop {
        // A client that stops sending mid-batch must not hold the batch
        // lock forever (a dead tunnel is caught by HTTP/2 keepalive), nor
        // hold up a batch that waits (it yields after a few silent
        // seconds; it has applied nothing).
        let next = tokio::select! {
            next = tokio::time::timeout(BATCH_IDLE_TIMEOUT, stream.next()) => next,
            () = receiving.asked_to_yield() => {
                client_error = Some(Status::aborted(format!(
                    "another batch arrived while this one had sent nothing for {}s; \
                     it applied nothing",
                    turns::YIELD_AFTER.as_secs()
                )));
                break;
            }
        };
        let msg = match next {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(_) => {
                client_error = Some(Status::deadline_exceeded(format!(
                    "no message for {}s in the middle of a batch",
                    BATCH_IDLE_TIMEOUT.as_secs()
                )));
                break;
            }
        };
        receiving.heard();
        let mut run = Vec::with_capacity(RUN_MESSAGES);
        let mut bytes = 0;
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                Ok(m) => {
                    bytes += payload(&m);
                    run.push(m);
                }
                Err(e) => {
                    client_error = Some(e);
                    break;
                }
            }
            if run.len() < RUN_MESSAGES && bytes < RUN_BYTES {
                next = stream.next().now_or_never().flatten();
            }
        }
        if !run.is_empty() && tx.send(run).await.is_err() {
            break; // the worker stopped early (commit or abort)
        }
        if client_error.is_some() {
            break;
        }
    }
    drop(tx);
    let outcome = worker.await.map_err(|e| Status::internal(e.to_string()));
    (outcome, turn, client_error)
}
