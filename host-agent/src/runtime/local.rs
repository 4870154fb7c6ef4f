//! The `local` runtime: each service's agent is a child process of `lks`
//! (`lks-agent supervise --no-start`), its root a work dir under `.lks/`. No
//! containers: the loop, the rules and the console all work anywhere.
//!
//! "Building" here means: the root is filled by a full sync, then the service's
//! `build.local` commands run in it as steps, then the app starts. A rebuild
//! does the same again, from an empty root.

use super::{Instance, Live, Mode, Runtime, RuntimeError, Tunnel};
use crate::config::Service;
use crate::events::Reporter;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// The local runtime.
pub struct Local {
    work: PathBuf,
    token: String,
    agent: PathBuf,
}

impl Local {
    /// A local runtime keeping its work dirs under `work` (`.lks/`).
    pub fn new(work: &Path, token: &str) -> Result<Local, RuntimeError> {
        Ok(Local {
            work: work.to_path_buf(),
            token: token.to_string(),
            agent: super::agent_binary::find(super::agent_binary::Linkage::Any)?,
        })
    }

    /// The root of a service's agent: its `local_root`, else
    /// `.lks/SERVICE/root`.
    pub fn root_of(&self, service: &Service) -> PathBuf {
        match &service.live_update.local_root {
            Some(root) => root.clone(),
            None => self.work.join(&service.name).join("root"),
        }
    }

    /// Makes `service`'s root ready for its agent: created, and emptied when
    /// `fresh` (a rebuild starts from nothing, as a new image would). A
    /// named root (`local_root`) is used only when it is empty or lks made
    /// it (recorded in `.lks/SERVICE/local-root`): lks replaces what is in
    /// it, and never what it did not put there.
    async fn prepare_root(&self, service: &Service, fresh: bool) -> Result<PathBuf, RuntimeError> {
        let root = self.root_of(service);
        let io = |context: String| {
            let service = service.name.clone();
            move |cause| RuntimeError::Io {
                service,
                context,
                cause,
            }
        };
        if service.live_update.local_root.is_some() {
            let record = self.work.join(&service.name).join("local-root");
            let ours = tokio::fs::read_to_string(&record)
                .await
                .is_ok_and(|r| Path::new(&r) == root);
            if !ours
                && !empty_or_missing(&root)
                    .await
                    .map_err(io(format!("reading {}", root.display())))?
            {
                return Err(RuntimeError::Misconfigured {
                    service: service.name.clone(),
                    reason: format!(
                        "its local_root {} is not empty, and lks did not make it: lks replaces \
                         what is in its root. Empty it (or remove it) if it holds nothing you need, \
                         or name another directory",
                        root.display()
                    ),
                });
            }
            tokio::fs::create_dir_all(record.parent().unwrap_or(&self.work))
                .await
                .map_err(io("creating the work dir".into()))?;
            tokio::fs::write(&record, root.as_os_str().as_encoded_bytes())
                .await
                .map_err(io(format!("writing {}", record.display())))?;
        }
        if fresh {
            empty(&root)
                .await
                .map_err(io(format!("emptying {} for a rebuild", root.display())))?;
        }
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(io(format!("creating {}", root.display())))?;
        Ok(root)
    }
}

/// Whether `dir` has nothing in it (or is not there).
async fn empty_or_missing(dir: &Path) -> std::io::Result<bool> {
    match tokio::fs::read_dir(dir).await {
        Ok(mut entries) => Ok(entries.next_entry().await?.is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Removes what is in `dir`, keeping `dir` itself (it may be a mount point,
/// or one the developer made with its owner and mode).
async fn empty(dir: &Path) -> std::io::Result<()> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if entry.file_type().await?.is_dir() {
            tokio::fs::remove_dir_all(&path).await?;
        } else {
            tokio::fs::remove_file(&path).await?;
        }
    }
    Ok(())
}

impl Runtime for Local {
    /// The agent's process.
    type Handle = tokio::process::Child;

    fn name(&self) -> &'static str {
        "local"
    }

    fn host_of(&self, _name: &str) -> String {
        "127.0.0.1".into()
    }

    fn root_of_app(&self, service: &Service) -> String {
        self.root_of(service).display().to_string()
    }

    async fn start(
        &self,
        service: &Service,
        fresh: bool,
        _progress: &Reporter,
    ) -> Result<Instance<Self::Handle>, RuntimeError> {
        if service.command.is_empty() {
            return Err(RuntimeError::Misconfigured {
                service: service.name.clone(),
                reason: "the local runtime needs a `command` to start the app".into(),
            });
        }
        let io = |context: &str| {
            let service = service.name.clone();
            let context = context.to_string();
            move |cause| RuntimeError::Io {
                service,
                context,
                cause,
            }
        };
        // A leftover app on its port would answer its readiness check.
        let mut ports = crate::ports::of_local_service(service);
        ports.extend(service.debugging.as_ref().map(|d| d.port));
        RuntimeError::check_ports(service, &ports)?;
        let dir = self.work.join(&service.name);
        // The root is kept between runs (ignored build outputs such as a
        // dependency dir act as a cache; the sync makes everything else
        // equal).
        let root = self.prepare_root(service, fresh).await?;
        let log_path = dir.join("agent.log");
        let mut log = tokio::fs::File::create(&log_path)
            .await
            .map_err(io("creating agent.log"))?;
        let spec = lks_proto::launch::Supervise {
            root: root.display().to_string(),
            listen: "127.0.0.1:0".into(),
            grace_period: Some(3),
            workdir: None,
            // The first batch's build steps may make the app.
            start: lks_proto::launch::Start::OnRestart,
            // lks holds the pipe's other end (in the child's handle): the
            // agent and its app end with lks, also when it is killed.
            exit_with_stdin: true,
            watch_root: false,
            app: crate::debug::app_argv(service, service.command.clone()).map_err(|reason| {
                RuntimeError::Misconfigured {
                    service: service.name.clone(),
                    reason,
                }
            })?,
        };
        let mut cmd = Command::new(&self.agent);
        cmd.args(spec.args())
            .envs(super::expand_env(&service.env, |n| self.host_of(n)))
            .env(lks_proto::launch::TOKEN_ENV, &self.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(io("starting lks-agent"))?;
        if let Some(pid) = child.id() {
            crate::claim::record(&self.work, &service.name, "agent", pid);
        }
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) if lks_proto::launch::listening_address(&line).is_some() => {
                lks_proto::launch::listening_address(&line)
                    .unwrap_or_default()
                    .to_string()
            }
            other => {
                let mut err = String::new();
                let mut r = BufReader::new(stderr);
                let _ = tokio::time::timeout(Duration::from_secs(2), r.read_line(&mut err)).await;
                return Err(RuntimeError::AgentFailed {
                    service: service.name.clone(),
                    reason: format!("{other:?}; stderr: {}", err.trim()),
                });
            }
        };
        // The rest of the agent's output (the app's lines too; the console
        // gets those from the Events stream) goes to .lks/<service>/agent.log.
        let (log_tx, mut log_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let tx2 = log_tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = log_tx.send(l);
            }
        });
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx2.send(l);
            }
        });
        tokio::spawn(async move {
            while let Some(l) = log_rx.recv().await {
                let _ = log.write_all(l.as_bytes()).await;
                let _ = log.write_all(b"\n").await;
            }
        });
        Ok(Instance {
            tunnel: Tunnel {
                dialer: crate::tunnel::Dialer::Tcp(format!("http://{addr}")),
                token: self.token.clone(),
            },
            // An empty root: the first batch fills it, builds, starts the app.
            mode: Mode::Live(Live {
                seeded: false,
                first_batch: Some(service.build.local.clone()),
                rebuild_on: vec![],
            }),
            pid: child.id(),
            location: format!("root {}", root.display()),
            app_pid: Default::default(),
            pods: None,
            handle: child,
        })
    }

    async fn stop(
        &self,
        service: &Service,
        instance: Instance<Self::Handle>,
    ) -> Result<(), RuntimeError> {
        let mut child = instance.handle;
        if let Some(pid) = child.id()
            && let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
        {
            // The agent stops the app (SIGTERM, grace, SIGKILL to its group).
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        // An agent that died (or was killed) could not stop its app: the app
        // leads its own process group, so stop that group here.
        let app = instance.app_pid.load(std::sync::atomic::Ordering::Relaxed);
        if app != 0
            && let Some(pgid) = rustix::process::Pid::from_raw(app as i32)
        {
            crate::procs::stop_group(pgid, None).await;
        }
        crate::claim::forget(&self.work, &service.name, "agent");
        Ok(())
    }
}
