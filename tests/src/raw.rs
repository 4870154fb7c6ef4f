//! A raw `lks.agent.v1` client and a builder of `Apply` batches, for tests
//! that speak the protocol directly (hostile or broken clients): every call
//! has a timeout, nothing is checked on the client side.

use lks_proto::v1::agent_client::AgentClient;
use lks_proto::v1::apply_request::Op;
use lks_proto::v1::{
    ApplyRequest, ApplyResult, ChunksRequest, Commit, Copy, Data, Delete, ErrorCode, EventsRequest,
    HelloRequest, ManifestRequest, Mkdir, OpError, Put, Puts, Symlink,
};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// How long a call may take before the test fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The generated client plus the `authorization` value it sends (if any).
pub struct Client {
    /// The generated client.
    pub inner: AgentClient<Channel>,
    /// What it sends as `authorization` (None: nothing).
    pub authorization: Option<String>,
}

impl Client {
    pub async fn connect(url: &str, authorization: Option<String>) -> Client {
        let channel = crate::agent_channel(url).await;
        Client {
            inner: AgentClient::new(channel),
            authorization,
        }
    }

    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(a) = &self.authorization {
            req.metadata_mut()
                .insert(lks_proto::AUTHORIZATION, a.parse().unwrap());
        }
        req
    }

    pub async fn hello(&mut self) -> Result<lks_proto::v1::HelloResponse, Status> {
        self.hello_with("lks-e2e-raw-client".into()).await
    }

    pub async fn hello_with(
        &mut self,
        client_version: String,
    ) -> Result<lks_proto::v1::HelloResponse, Status> {
        let req = self.req(HelloRequest {
            protocol_version: lks_proto::PROTOCOL_VERSION,
            client_version,
        });
        let call = self.inner.hello(req);
        let r = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .expect("Hello timed out");
        r.map(|r| r.into_inner())
    }

    /// Every manifest entry, or the status of the first failure.
    pub async fn manifest(&mut self) -> Result<Vec<lks_proto::v1::Entry>, Status> {
        let req = self.req(ManifestRequest::default());
        let fut = async {
            let mut stream = self.inner.manifest(req).await?.into_inner();
            let mut out = Vec::new();
            while let Some(batch) = stream.message().await? {
                out.extend(batch.entries);
            }
            Ok(out)
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .expect("Manifest timed out")
    }

    /// The answer for `prefix` ("" for the whole root): its entries and its
    /// warnings, or the status of the first failure.
    pub async fn manifest_of(
        &mut self,
        prefix: &str,
    ) -> Result<(Vec<lks_proto::v1::Entry>, Vec<String>), Status> {
        let req = self.req(ManifestRequest {
            prefix: prefix.into(),
            ..Default::default()
        });
        let fut = async {
            let mut stream = self.inner.manifest(req).await?.into_inner();
            let (mut entries, mut warnings) = (Vec::new(), Vec::new());
            while let Some(batch) = stream.message().await? {
                entries.extend(batch.entries);
                warnings.extend(batch.warnings);
            }
            Ok((entries, warnings))
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .expect("Manifest timed out")
    }

    /// The version a whole-root answer names (its first batch's).
    pub async fn manifest_version(&mut self) -> Result<String, Status> {
        let req = self.req(ManifestRequest::default());
        let fut = async {
            let mut stream = self.inner.manifest(req).await?.into_inner();
            let mut version = None;
            while let Some(batch) = stream.message().await? {
                version.get_or_insert(batch.version);
            }
            Ok(version.unwrap_or_default())
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .expect("Manifest timed out")
    }

    pub async fn chunks(&mut self, path: &str) -> Result<lks_proto::v1::ChunksResponse, Status> {
        let req = self.req(ChunksRequest { path: path.into() });
        let call = self.inner.chunks(req);
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .expect("Chunks timed out")
            .map(|r| r.into_inner())
    }

    /// Opens the Events stream and returns once the agent accepted or refused it.
    pub async fn events(&mut self) -> Result<(), Status> {
        let req = self.req(EventsRequest {});
        let call = self.inner.events(req);
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .expect("Events timed out")
            .map(|_| ())
    }

    pub async fn apply(&mut self, ops: Vec<ApplyRequest>) -> Result<ApplyResult, Status> {
        let req = self.req(tokio_stream::iter(ops));
        let call = self.inner.apply(req);
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .expect("Apply timed out")
            .map(|r| r.into_inner())
    }
}

/// A batch under construction; every method returns the index of its
/// operation (a `Puts` message is one operation per put).
#[derive(Default)]
pub struct Batch {
    /// The messages so far.
    pub ops: Vec<ApplyRequest>,
    /// The index the next operation gets.
    next_index: u64,
}

impl Batch {
    pub fn push(&mut self, op: Op) -> u64 {
        let width = match &op {
            Op::Puts(p) => p.puts.len() as u64,
            _ => 1,
        };
        self.ops.push(ApplyRequest { op: Some(op) });
        let index = self.next_index;
        self.next_index += width;
        index
    }

    /// One Puts message of `puts`; the index of each put.
    pub fn puts(&mut self, puts: Vec<Put>) -> Vec<u64> {
        let first = self.push(Op::Puts(Puts { puts }));
        (first..self.next_index).collect()
    }

    pub fn put_header(
        &mut self,
        path: &str,
        size: u64,
        hash: &[u8],
        mode: u32,
        base: &[u8],
    ) -> u64 {
        self.push(Op::Put(Put {
            path: path.into(),
            mode,
            size,
            blake3: hash.to_vec(),
            mtime_ns: 1_700_000_000_000_000_000,
            base_blake3: base.to_vec(),
            data: Vec::new(),
        }))
    }

    /// A Put of `data` (announced with its real size and hash) and its Data.
    pub fn put(&mut self, path: &str, data: &[u8], mode: u32) -> u64 {
        let i = self.put_header(
            path,
            data.len() as u64,
            blake3::hash(data).as_bytes(),
            mode,
            &[],
        );
        if !data.is_empty() {
            self.data(data);
        }
        i
    }

    pub fn data(&mut self, bytes: &[u8]) -> u64 {
        self.push(Op::Data(Data {
            bytes: bytes.to_vec(),
        }))
    }

    pub fn copy(&mut self, offset: u64, length: u64) -> u64 {
        self.push(Op::Copy(Copy { offset, length }))
    }

    pub fn mkdir(&mut self, path: &str, mode: u32) -> u64 {
        self.push(Op::Mkdir(Mkdir {
            path: path.into(),
            mode,
        }))
    }

    pub fn delete(&mut self, path: &str) -> u64 {
        self.push(Op::Delete(Delete { path: path.into() }))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> u64 {
        self.push(Op::Symlink(Symlink {
            path: path.into(),
            target: target.into(),
        }))
    }

    pub fn chmod(&mut self, path: &str, mode: u32) -> u64 {
        self.push(Op::Chmod(lks_proto::v1::Chmod {
            path: path.into(),
            mode,
        }))
    }

    /// A message with no operation in it.
    pub fn empty(&mut self) -> u64 {
        self.ops.push(ApplyRequest { op: None });
        self.next_index += 1;
        self.next_index - 1
    }

    /// The operations followed by a Commit.
    pub fn commit(mut self) -> Vec<ApplyRequest> {
        self.push(Op::Commit(Commit {
            batch_id: "hostile".into(),
            ..Default::default()
        }));
        self.ops
    }

    /// The operations followed by a Commit planned against the agent's
    /// version `based_on`.
    pub fn commit_based_on(mut self, based_on: &str) -> Vec<ApplyRequest> {
        self.push(Op::Commit(Commit {
            batch_id: "based".into(),
            based_on: based_on.into(),
            ..Default::default()
        }));
        self.ops
    }

    /// The operations with no Commit.
    pub fn without_commit(self) -> Vec<ApplyRequest> {
        self.ops
    }
}

/// A Put of `data` with all its bytes inline, its real size and hash.
pub fn whole_put(path: &str, data: &[u8], mode: u32) -> Put {
    Put {
        path: path.into(),
        mode,
        size: data.len() as u64,
        blake3: blake3::hash(data).as_bytes().to_vec(),
        mtime_ns: 1_700_000_000_000_000_000,
        base_blake3: Vec::new(),
        data: data.to_vec(),
    }
}

pub fn code_name(code: i32) -> String {
    match ErrorCode::try_from(code) {
        Ok(c) => format!("{c:?}"),
        Err(_) => format!("unknown code {code}"),
    }
}

/// The one error reported for operation `index`; panics with the whole result otherwise.
pub fn error_at(r: &ApplyResult, index: u64) -> &OpError {
    let found: Vec<&OpError> = r.errors.iter().filter(|e| e.index == index).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one error for operation {index}, got {found:?}; all errors: {:#?}",
        r.errors
    );
    found[0]
}

/// Checks the error of operation `index`: its code and a piece of its message.
pub fn expect_error(r: &ApplyResult, index: u64, code: ErrorCode, needle: &str) -> OpError {
    let e = error_at(r, index);
    assert_eq!(
        e.code,
        code as i32,
        "operation {index}: expected {code:?}, got {} ({e:?})",
        code_name(e.code)
    );
    assert!(
        e.message.contains(needle),
        "operation {index}: the message {:?} does not mention {needle:?}",
        e.message
    );
    e.clone()
}

/// `lks-agent serve` with extra arguments and its log at debug level
/// (`LKS_LOG=lks_agent=debug`), for tests that read what it says it did.
pub struct LoggingAgent {
    child: Child,
    /// `http://ADDR`.
    pub url: String,
    /// Lines the agent wrote to stderr.
    pub stderr: std::sync::mpsc::Receiver<String>,
}

impl LoggingAgent {
    pub fn start(root: &Path, token: &str, extra: &[&str]) -> LoggingAgent {
        LoggingAgent::start_with(&[], root, token, extra)
    }

    /// Started by the command `wrapper` (`setpriv --reuid=...`, say) when
    /// not empty.
    pub fn start_with(wrapper: &[&str], root: &Path, token: &str, extra: &[&str]) -> LoggingAgent {
        let agent = crate::bin("lks-agent");
        let mut cmd = match wrapper.split_first() {
            None => Command::new(&agent),
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(&agent);
                cmd
            }
        };
        let mut child = cmd
            .args(["serve", "--root"])
            .arg(root)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("LKS_TOKEN", token)
            .env("LKS_LOG", "lks_agent=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lks-agent");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read agent stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from lks-agent: {line:?}"));
        let url = format!("http://{addr}");
        let stderr = crate::lines(child.stderr.take().unwrap());
        LoggingAgent { child, url, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of its log that holds `needle`, waiting up to 10 s.
    pub fn next_line_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the agent logged no line with {needle:?}"),
            }
        }
    }
}

impl Drop for LoggingAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
