//! A sync session with one agent: learn what it has, send what differs, and keep
//! the tree it last confirmed.

use crate::ignores::Ignores;
use crate::plan::{Op, confirm};
use crate::progress::Sent;
use crate::tree::{self, Kind, LocalTree, Node, Tree};
use crate::tunnel::{self, Client, WireCounter};
use lks_proto::chunk::{self, Chunk};
use lks_proto::limits::{HOST_BYTES_PER_BATCH, HOST_FILES_PER_BATCH};
use lks_proto::v1;
use lks_proto::{PROTOCOL_VERSION, RelPath};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_stream::StreamExt;

mod error;
mod events;
mod produce;
mod readahead;
pub use error::SessionError;
pub use events::AgentEvents;
use events::Probes;
use produce::produce;

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
        self.vanished += other.vanished;
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
    /// Files not sent because they were gone when read (a short-lived
    /// file): not a change, but the agent has what it had there.
    pub vanished: usize,
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
    /// The agent's root, as the agent names it (`/app` in a container).
    pub agent_root: String,
    /// The agent's tree as last confirmed (ignored paths left out).
    remote: Tree,
    /// Whether batches move what the agent confirmed into `remote` (not
    /// for a run that ends after them: see [`Session::forget_confirmed`]).
    keep_confirmed: bool,
    /// The batch ids of the probes sent (readiness checks): the events of
    /// their steps are the loop's own business, not the user's.
    probes: Probes,
    chunks: HashMap<[u8; 32], Arc<Vec<Chunk>>>,
    /// The directory beneath the agent's root this session syncs (None: the
    /// whole root). Paths in `remote` and in ops are relative to it.
    prefix: Option<RelPath>,
    /// Whether the prefix directory exists on the agent.
    prefix_exists: bool,
    /// The version of the agent's records that `remote` shows: the last
    /// manifest answer's, moved on by each batch the agent vouched was the
    /// only change since (see `ApplyResult.version`); empty when unknown.
    pub manifest_version: String,
    /// Where the files and bytes the wire takes are counted, while a long
    /// sync shows its progress.
    sent: Option<Arc<Sent>>,
}

impl Session {
    /// For a run that ends after its batches (`lks sync --once`): the tree
    /// of what the agent has is dropped now, and batches only count what
    /// the agent confirmed. A first sync of 100,000 files holds 12 MiB less
    /// and spends no time between batches building a tree nobody reads.
    pub fn forget_confirmed(&mut self) {
        self.keep_confirmed = false;
        self.remote = Tree::new();
    }

    /// Counts what the batches send in `sent` from now on (`None`: no more).
    pub fn count_sent_in(&mut self, sent: Option<Arc<Sent>>) {
        self.sent = sent;
    }

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
            agent_root: hello.root,
            manifest_version: String::new(),
            sent: None,
            remote: Tree::new(),
            keep_confirmed: true,
            probes: Probes::default(),
            chunks: HashMap::new(),
            prefix: None,
            prefix_exists: true,
        })
    }

    /// Says hello again (the tunnel may have reached a new agent process by
    /// itself); whether the agent restarted since the last hello.
    pub async fn hello_again(&mut self) -> Result<bool, SessionError> {
        let url = self.url.clone();
        let hello = self
            .client
            .hello(v1::HelloRequest {
                protocol_version: PROTOCOL_VERSION,
                client_version: env!("CARGO_PKG_VERSION").into(),
            })
            .await
            .map_err(|s| SessionError::from_status(&url, s))?
            .into_inner();
        let restarted = hello.boot_id != self.boot_id;
        self.boot_id = hello.boot_id;
        Ok(restarted)
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

    /// Whether the app accepts a connection to `port` of the agent's
    /// loopback (a TCP readiness check), through a `Forward` call that is
    /// closed at once.
    pub async fn connect(&mut self, port: u16) -> Result<(), String> {
        crate::forward::open(&mut self.client, port)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
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

    /// A Manifest request for the session's directory (`unchanged_since`
    /// empty: the whole answer, whatever changed).
    fn manifest_request(&self, unchanged_since: &str) -> v1::ManifestRequest {
        v1::ManifestRequest {
            prefix: self
                .prefix
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            unchanged_since: unchanged_since.to_string(),
        }
    }

    /// Whether what the agent's manifest says is still what it said as
    /// `version` (nothing is fetched).
    pub async fn unchanged_since(&mut self, version: &str) -> Result<bool, SessionError> {
        let url = self.url.clone();
        let mut stream = self
            .client
            .manifest(self.manifest_request(version))
            .await
            .map_err(|s| SessionError::from_status(&url, s))?
            .into_inner();
        // The first batch says; the rest of a full answer is not read.
        match stream.next().await {
            Some(Ok(b)) => Ok(b.unchanged),
            Some(Err(s)) => Err(SessionError::from_status(&url, s)),
            None => Ok(false),
        }
    }

    /// Replaces the confirmed tree with the agent's manifest (of the
    /// session's directory alone), leaving out what the local rules ignore
    /// (the agent's copy of those is never touched). `local` is the local
    /// tree: the paths both have share its text.
    pub async fn fetch_manifest<V>(
        &mut self,
        ignores: &Ignores,
        local: &std::collections::BTreeMap<RelPath, V>,
    ) -> Result<Vec<String>, SessionError> {
        let url = self.url.clone();
        let mut stream = self
            .client
            .manifest(self.manifest_request(""))
            .await
            .map_err(|s| SessionError::from_status(&url, s))?
            .into_inner();
        // What it confirmed before goes first, and the tree is built as the
        // entries arrive: a tree of 100,000 entries is never held twice.
        self.remote = Tree::new();
        let mut entries: Vec<(RelPath, Node)> = Vec::new();
        let mut keep = ignores.tree_filter();
        let mut warnings = Vec::new();
        let mut prefix_exists = self.prefix.is_none();
        // Both sorted: one walk along the local paths finds the shared ones.
        let mut shared = local.keys().peekable();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|s| SessionError::from_status(&url, s))?;
            if !batch.version.is_empty() {
                self.manifest_version = batch.version;
            }
            warnings.extend(batch.warnings.into_iter().map(|w| format!("agent: {w}")));
            for e in &batch.entries {
                let rest = match &self.prefix {
                    None => e.path.as_str(),
                    Some(pre) if e.path == pre.as_str() => {
                        prefix_exists = e.kind == v1::EntryKind::Dir as i32;
                        continue;
                    }
                    Some(pre) => match e
                        .path
                        .strip_prefix(pre.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                    {
                        Some(rest) => rest,
                        None => continue,
                    },
                };
                while shared.next_if(|l| l.as_str() < rest).is_some() {}
                let path = match shared.peek() {
                    Some(l) if l.as_str() == rest => (*l).clone(),
                    _ => match RelPath::new(rest) {
                        Ok(p) => p,
                        Err(_) => continue,
                    },
                };
                if let Some(node) = Node::from_entry(e)
                    && keep.keeps(&path, node.kind == Kind::Dir)
                {
                    entries.push((path, node));
                }
            }
            if entries.len() >= tree::PART {
                add_entries(&mut self.remote, &mut entries);
            }
        }
        add_entries(&mut self.remote, &mut entries);
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
        // Entries put into `remote` one by one (not appended whole): they
        // leave its nodes half full.
        let mut loose = 0;
        // The operations of each batch leave the list as it goes (taken from
        // its end, the list reversed; what is left shrinks in place), so a
        // first sync of 100,000 files does not hold every operation until
        // its last batch is done, nor copy what is left at each batch.
        let mut rest = ops;
        rest.reverse();
        let mut sent_any = false;
        while !rest.is_empty() {
            let mut files = 0;
            let mut bytes = 0u64;
            let n = rest
                .iter()
                .rev()
                .position(|op| {
                    files += 1;
                    if let Op::Put { file, .. } = op {
                        bytes += file.size;
                    }
                    files >= HOST_FILES_PER_BATCH || bytes >= HOST_BYTES_PER_BATCH
                })
                .map_or(rest.len(), |i| i + 1);
            let mut batch = rest.split_off(rest.len() - n);
            batch.reverse();
            rest.shrink_to_fit();
            // The follow-up goes with the last batch, so it sees every file.
            let then = if rest.is_empty() {
                followup.clone()
            } else {
                Followup::default()
            };
            loose += self
                .apply_batch(local, batch, &then, batch_id(), &mut report)
                .await?;
            sent_any = true;
        }
        if !sent_any && (!followup.is_empty() || self.missing_prefix().is_some()) {
            loose += self
                .apply_batch(local, Vec::new(), &followup, batch_id(), &mut report)
                .await?;
        }
        report.wire_bytes = self.wire.sent() - start_wire;
        if self.keep_confirmed && loose > COMPACT_AFTER {
            // Entries confirmed one by one in path order leave the tree's
            // nodes half full (a first sync of 100,000 files: 20 MiB, not 9);
            // built again, each is full. A first sync's are appended whole:
            // nothing to do.
            self.remote = tree::build_sorted(std::mem::take(&mut self.remote));
        }
        Ok(report)
    }

    /// Sends one batch and records what the agent confirmed; returns how
    /// many entries went into `remote` one by one.
    #[tracing::instrument(name = "batch", level = "debug", skip_all, fields(id = %batch_id))]
    async fn apply_batch(
        &mut self,
        local: &LocalTree,
        ops: Vec<Op>,
        followup: &Followup,
        batch_id: String,
        report: &mut Report,
    ) -> Result<usize, SessionError> {
        let url = self.url.clone();
        // Deltas need the chunks of what the agent has; fetch the ones we lack.
        let mut bases: HashMap<RelPath, Arc<Vec<Chunk>>> = HashMap::new();
        for op in &ops {
            if let Op::Put {
                path,
                file,
                base: Some(base),
            } = op
                && file.size >= chunk::DELTA_MIN_FILE_BYTES
                && let Some(chunks) = self.base_chunks(path, base).await
            {
                bases.insert(path.clone(), chunks);
            }
        }
        let ops = Arc::new(ops);
        let (tx, rx) = readahead::channel(readahead::BUDGET, self.sent.clone());
        let root = local.abs_root();
        let producer_ops = ops.clone();
        let commit = v1::Commit {
            batch_id,
            steps: followup.steps.clone(),
            restart: followup.restart,
            based_on: self.manifest_version.clone(),
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
        let mut request = tonic::Request::new(rx);
        if let Ok(boot) = self.boot_id.parse() {
            request
                .metadata_mut()
                .insert(lks_proto::BOOT_ID_METADATA, boot);
        }
        let result = self.client.apply(request).await;
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
        let mut vanished = vec![false; ops.len()];
        for i in &produced.vanished {
            vanished[*i] = true;
        }
        // What `remote` shows after this batch is the agent's version only
        // when every operation went through as planned.
        if result.errors.is_empty() && produced.problems.is_empty() && produced.vanished.is_empty()
        {
            self.manifest_version = result.version.clone();
        } else {
            self.manifest_version.clear();
        }
        // The producer is done with the operations: they move into the
        // confirmed tree, not copied.
        let ops = Arc::try_unwrap(ops).unwrap_or_else(|shared| (*shared).clone());
        let loose = confirm_batch(
            self.keep_confirmed.then_some(&mut self.remote),
            ops,
            &produced.sent,
            &failed,
            &vanished,
            report,
        );
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
        Ok(loose)
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

/// Records in `remote` what the agent confirmed of a batch's `ops` (and
/// counts it in `report`; without `remote` it is only counted): each put
/// with the size and blake3 the producer really `sent`, nothing for a file
/// that `vanished` before it was read, and a `failed` path forgotten (the
/// next plan sends it whole). What a batch adds in path order past all
/// `remote` holds (a first sync) is appended whole, its nodes full; a
/// delete or chmod first takes in what came before it, so the order of the
/// operations holds. Returns how many entries went in one by one.
fn confirm_batch(
    remote: Option<&mut Tree>,
    ops: Vec<Op>,
    sent: &[(usize, u64, [u8; 32])],
    failed: &[bool],
    vanished: &[bool],
    report: &mut Report,
) -> usize {
    // `sent` names operations in their order: walked beside them.
    debug_assert!(sent.windows(2).all(|w| w[0].0 < w[1].0));
    let mut sent = sent.iter().peekable();
    let mut confirmed = Confirmed::new(remote, ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        let really = sent.next_if(|(at, ..)| *at == i);
        if vanished[i] {
            // Not sent: the agent has what it had.
            report.vanished += 1;
            continue;
        }
        match op {
            op if failed[i] => confirmed.forget(op.path()),
            // Confirmed as it was read and sent.
            Op::Put { path, file, .. } => match really {
                Some(&(_, size, hash)) => {
                    report.files += 1;
                    confirmed.add(path, || file.node(size, Some(hash)));
                }
                // Not sent whole (the stream ended first): the agent may have
                // the old file or none, so it is forgotten, and sent whole next.
                None => confirmed.forget(&path),
            },
            Op::Mkdir(path, mode) => {
                report.other += 1;
                confirmed.add(path, || Node::dir(mode));
            }
            Op::Symlink(path, target) => {
                report.other += 1;
                confirmed.add(path, || Node::symlink(&target));
            }
            op => {
                if matches!(op, Op::Delete(_)) {
                    report.deleted += 1;
                } else {
                    report.other += 1;
                }
                confirmed.apply(&op);
            }
        }
    }
    confirmed.flush();
    confirmed.loose
}

/// The confirmed tree as a batch's operations go into it: additions wait
/// beside it, a part at a time, to be appended in one pass; anything else
/// takes them in first. Without a tree, nothing is kept.
struct Confirmed<'a> {
    tree: Option<&'a mut Tree>,
    added: Vec<(RelPath, Node)>,
    /// How many went in one by one.
    loose: usize,
}

impl<'a> Confirmed<'a> {
    fn new(tree: Option<&'a mut Tree>, ops: usize) -> Confirmed<'a> {
        let added = match tree {
            Some(_) => Vec::with_capacity(ops.min(tree::PART)),
            None => Vec::new(),
        };
        Confirmed {
            tree,
            added,
            loose: 0,
        }
    }

    /// `path` now holds what `node` makes.
    fn add(&mut self, path: RelPath, node: impl FnOnce() -> Node) {
        if self.tree.is_some() {
            if self.added.len() == tree::PART {
                self.flush();
            }
            self.added.push((path, node()));
        }
    }

    /// What the agent has at `path` is not known.
    fn forget(&mut self, path: &RelPath) {
        self.flush();
        if let Some(tree) = self.tree.as_deref_mut() {
            tree.remove(path);
        }
    }

    /// A delete or chmod went through.
    fn apply(&mut self, op: &Op) {
        self.flush();
        if let Some(tree) = self.tree.as_deref_mut() {
            confirm(tree, op);
        }
    }

    /// Takes in the additions waiting.
    fn flush(&mut self) {
        if let Some(tree) = self.tree.as_deref_mut() {
            self.loose += add_entries(tree, &mut self.added);
        }
    }
}

/// After how many new entries in one go the confirmed tree is built again.
const COMPACT_AFTER: usize = 4096;

/// Adds `entries` (taken) to `tree`: in one pass when they are sorted and
/// follow what it holds (the agent sends them so), else one by one.
/// Returns how many went in one by one.
fn add_entries(tree: &mut Tree, entries: &mut Vec<(RelPath, Node)>) -> usize {
    let sorted = entries.windows(2).all(|w| w[0].0 < w[1].0)
        && match (tree.last_key_value(), entries.first()) {
            (Some((last, _)), Some((first, _))) => last < first,
            _ => true,
        };
    if sorted {
        tree.append(&mut entries.drain(..).collect());
        0
    } else {
        let n = entries.len();
        tree.extend(entries.drain(..));
        n
    }
}

fn batch_id() -> String {
    format!("{:08x}", rand_id())
}

fn rand_id() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn put(path: &str, size: u64) -> Op {
        Op::Put {
            path: rp(path),
            file: crate::plan::PutFile::test_file(size),
            base: None,
        }
    }

    /// The tree as (path, kind, size, hash) rows, in order.
    fn rows(tree: &Tree) -> Vec<(String, Kind, u64, Option<[u8; 32]>)> {
        tree.iter()
            .map(|(p, n)| (p.to_string(), n.kind, n.size, n.hash))
            .collect()
    }

    #[test]
    fn a_first_batch_is_appended_in_order_with_what_was_really_sent() {
        let mut remote = Tree::new();
        remote.insert(rp("a"), Node::dir(0o755));
        let ops = vec![
            Op::Mkdir(rp("b"), 0o755),
            put("b/f", 3),
            put("b/gone", 4),
            Op::Symlink(rp("b/l"), "f".into()),
            put("c", 5),
        ];
        let mut report = Report::default();
        let loose = confirm_batch(
            Some(&mut remote),
            ops,
            &[(1, 7, [1; 32]), (4, 5, [2; 32])],
            &[false; 5],
            &[false, false, true, false, false],
            &mut report,
        );
        assert_eq!(
            rows(&remote),
            [
                ("a".into(), Kind::Dir, 0, None),
                ("b".into(), Kind::Dir, 0, None),
                // Its size and hash as read when sent, not as planned.
                ("b/f".into(), Kind::File, 7, Some([1; 32])),
                ("b/l".into(), Kind::Symlink, 0, None),
                ("c".into(), Kind::File, 5, Some([2; 32])),
            ]
        );
        assert_eq!(&*remote[&rp("b/l")].target, "f");
        assert_eq!((report.files, report.other, report.vanished), (2, 2, 1));
        assert_eq!(loose, 0, "appended whole");
    }

    #[test]
    fn deletes_chmods_and_failures_keep_their_place_among_the_additions() {
        let mut remote = Tree::new();
        for (p, n) in [
            ("d", Node::test_file(1)),
            ("e", Node::dir(0o755)),
            ("e/x", Node::test_file(2)),
            ("k", Node::test_file(3)),
            ("z", Node::test_file(4)),
        ] {
            remote.insert(rp(p), n);
        }
        let ops = vec![
            // A file that becomes a directory: deleted, then made.
            Op::Delete(rp("d")),
            Op::Mkdir(rp("d"), 0o700),
            put("d/new", 6),
            // A directory that becomes a file: made (out of order for an
            // append), then its old subtree deleted.
            put("a", 8),
            Op::Delete(rp("e")),
            put("e", 9),
            Op::Chmod(rp("k"), 0o600),
            // Refused by the agent: forgotten.
            put("z", 10),
        ];
        let mut report = Report::default();
        let loose = confirm_batch(
            Some(&mut remote),
            ops,
            &[
                (2, 6, [2; 32]),
                (3, 8, [3; 32]),
                (5, 9, [5; 32]),
                (7, 10, [7; 32]),
            ],
            &[false, false, false, false, false, false, false, true],
            &[false; 8],
            &mut report,
        );
        assert_eq!(
            rows(&remote),
            [
                ("a".into(), Kind::File, 8, Some([3; 32])),
                ("d".into(), Kind::Dir, 0, None),
                ("d/new".into(), Kind::File, 6, Some([2; 32])),
                ("e".into(), Kind::File, 9, Some([5; 32])),
                ("k".into(), Kind::File, 3, None),
            ]
        );
        assert_eq!(remote[&rp("d")].mode, 0o700);
        assert_eq!(remote[&rp("k")].mode, 0o600);
        assert_eq!((report.files, report.deleted, report.other), (3, 2, 2));
        // None of them follows all the tree held ("z"): one by one.
        assert_eq!(loose, 4);
    }

    #[test]
    fn without_a_tree_a_batch_is_counted_as_with_one() {
        let ops = || {
            vec![
                Op::Delete(rp("d")),
                Op::Mkdir(rp("d"), 0o700),
                put("d/gone", 1),
                put("d/new", 2),
                put("d/refused", 3),
                put("d/unsent", 4),
                Op::Chmod(rp("k"), 0o600),
            ]
        };
        let sent = [(3, 2, [3; 32]), (4, 3, [4; 32])];
        let failed = [false, false, false, false, true, false, false];
        let vanished = [false, false, true, false, false, false, false];
        let mut kept = Report::default();
        let mut remote = Tree::new();
        confirm_batch(
            Some(&mut remote),
            ops(),
            &sent,
            &failed,
            &vanished,
            &mut kept,
        );
        let mut counted = Report::default();
        confirm_batch(None, ops(), &sent, &failed, &vanished, &mut counted);
        let totals = |r: &Report| (r.files, r.deleted, r.other, r.vanished);
        assert_eq!(totals(&kept), (1, 1, 2, 1));
        assert_eq!(totals(&counted), totals(&kept));
        assert_eq!(remote.len(), 2, "{remote:?}");
    }

    #[test]
    fn a_put_whose_file_was_not_sent_whole_is_forgotten() {
        // The stream ended before the producer had sent "b": the agent has
        // the old "b" or none, so the next plan sends it whole.
        let mut remote = Tree::new();
        remote.insert(rp("b"), Node::test_file(1));
        let mut report = Report::default();
        confirm_batch(
            Some(&mut remote),
            vec![put("a", 1), put("b", 2)],
            &[(0, 1, [1; 32])],
            &[false; 2],
            &[false; 2],
            &mut report,
        );
        assert_eq!(rows(&remote), [("a".into(), Kind::File, 1, Some([1; 32]))]);
        assert_eq!(report.files, 1);
    }
}
