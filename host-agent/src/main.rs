//! `lks`: the developer's side of lks: `lks up` (services on the local, docker
//! or kube runtime, live updated), `lks sync`, the registry, the kind cluster,
//! `lks render`, `lks down`. See ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

mod agent_image;
mod api;
mod backoff;
mod board;
mod ci;
mod claim;
mod config;
mod console;
mod debug;
mod docker;
mod down;
mod events;
mod filter;
mod fleet;
mod forward;
mod hashcache;
mod ignores;
mod init;
mod kube;
mod mirror;
mod nofile;
mod panics;
mod plan;
mod ports;
mod procs;
mod progress;
mod readiness;
mod registry;
mod reload;
mod rules;
mod runtime;
mod scan;
mod service;
mod session;
mod source;
mod status;
mod steer;
mod sync;
mod tree;
mod tunnel;
mod ui;
mod up;
mod watch;
mod yaml;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "lks",
    version,
    about = "The inner development loop for services on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Keep an lks-agent's root equal to a local directory.
    #[command(after_help = "Examples:\n  \
        # make the agent's root equal to ./app once, then exit\n  \
        LKS_TOKEN=secret lks sync ./app --to http://127.0.0.1:7690 --once\n\n  \
        # keep syncing every change until Ctrl-C, skipping build output\n  \
        lks sync ./app --to http://127.0.0.1:7690 --token-file token.txt --exclude target --exclude '*.o'\n\n\
        Ignored: .git/ always, the root's .dockerignore (Docker's semantics), .lksignore files at any\n\
        level (gitignore semantics) and --exclude patterns. Ignored paths are never touched on the agent.\n\
        The hashes of files read to compare them with the agent's are kept in $XDG_CACHE_HOME/lks/hashes\n\
        (else ~/.cache/lks/hashes), one file per local directory, so the next run reads only what changed.")]
    Sync(SyncArgs),
    /// Write lks.yaml and a lks.service.yaml per service, guessed from the repository.
    #[command(after_help = "Examples:\n  \
        # guess the services of the repository here, write their files, say what was guessed\n  \
        lks init\n\n  \
        # see what it would write for another directory, without writing anything\n  \
        lks init path/to/repo --dry-run\n\n  \
        # guess again over files written earlier\n  \
        lks init --force\n\n\
        A service is a directory with a package.json (Node.js), requirements.txt or pyproject.toml\n\
        (Python) or go.mod (Go); a Dockerfile alone makes one for the container runtimes.\n\
        node_modules, vendor, target, hidden directories and what Git ignores are not looked into.\n\
        Each gets its language's live-update rules (restart on change; pip install into .deps when\n\
        requirements.txt changes; go build when a .go file changes; a rebuild when a lockfile or the\n\
        Dockerfile changes), the ports its Dockerfile EXPOSEs, and from the Kubernetes manifests that\n\
        run its image (or sit in its k8s/ directory) its `k8s:`, ports, env and readiness probe.\n\
        Existing files are never replaced without --force; what is written must load, or nothing is.")]
    Init {
        /// The repository (default: the current directory); lks.yaml is written there.
        dir: Option<PathBuf>,
        /// Print the files it would write and what it guessed; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replace lks.yaml and service files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Launch services and their dependencies, and live-update the local ones.
    #[command(after_help = "Examples:\n  \
        # everything in lks.yaml, on the local runtime\n  \
        lks up\n\n  \
        # an alias and a service (with their dependencies), one of them built from the working tree\n  \
        lks up appliances price --local bank\n  \
        lks up appliances price -- --local bank     # the Tilt-style spelling\n\n  \
        # web's app under its debugger (node --inspect, debugpy, dlv); how to attach is printed\n  \
        lks up web --debug web\n\n  \
        # in containers: web built from the working tree and live updated, its deps from `latest`\n  \
        lks up --runtime docker web\n\n  \
        # in a cluster: a branch environment of its own (the namespace is created when missing)\n  \
        lks up --context kind-lks --namespace pr-42 web\n\n  \
        # the web UI on another port, or none (lks status, logs, trigger... still work)\n  \
        lks up --ui-port 8080\n  \
        lks up --no-ui\n\n\
        The kube runtime applies only to local clusters (kind-*, k3d-*, minikube, docker-desktop,\n\
        a server on this machine) and to contexts listed in lks.yaml under kube.allow_contexts.\n\
        Ctrl-C (or SIGTERM) stops everything lks started.")]
    Up(UpArgs),
    /// Remove everything lks created for this workspace (containers, networks, volumes; objects in its cluster).
    #[command(after_help = "Examples:\n  \
        lks down                  # what `lks up --runtime docker` left for this workspace\n  \
        lks down --all            # for every workspace\n  \
        lks down --namespace pr-42    # only what lks applied in that namespace\n  \
        lks down --context kind-lks   # in that context's cluster\n\n\
        Found by their labels (dev.lks.managed, dev.lks.workspace; in the cluster lks.dev/managed,\n\
        lks.dev/workspace, and applied by lks). The cluster is cleaned when the context is a local\n\
        one (kind-*, k3d-*, minikube, docker-desktop, a server on this machine, or kube.allow_contexts)\n\
        or when --kube, --context or --namespace ask; the registry, namespaces and anything lks did\n\
        not apply are left alone.")]
    Down {
        /// The workspace file (default: lks.yaml here or in the nearest parent).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        /// Everything lks created, for every workspace.
        #[arg(long)]
        all: bool,
        /// Also in the cluster, required to work (the default: a local cluster
        /// of the kubeconfig context, when it can be reached).
        #[arg(long)]
        kube: bool,
        #[command(flatten)]
        target: kube::target::Selection,
    },
    /// Run, stop or check the local image registry.
    #[command(after_help = "Examples:\n  \
        lks registry start        # at 127.0.0.1:5000, or the `registry:` of lks.yaml\n  \
        lks registry status\n  \
        lks registry stop --purge # also delete its images\n\n\
        Where registry:2 cannot be pulled, build an image offline with images/registry/build.sh.")]
    Registry {
        #[command(subcommand)]
        command: registry::RegistryCommand,
        /// The workspace file (default: lks.yaml here or in the nearest parent, if any).
        #[arg(short = 'f', long = "file", value_name = "FILE", global = true)]
        file: Option<PathBuf>,
    },
    /// Build the agent image (FROM scratch + the static lks-agent), and push it.
    #[command(after_help = "Examples:\n  \
        lks agent-image           # build REGISTRY/lks-agent:VERSION and :latest\n  \
        lks agent-image --push    # and push them to the registry\n\n\
        The static agent is LKS_AGENT_BIN, lks-agent next to lks, or Cargo's\n\
        target/x86_64-unknown-linux-gnu/PROFILE/lks-agent (built with -C target-feature=+crt-static).")]
    AgentImage {
        /// Push the image to the registry (started if it is the local one).
        #[arg(long)]
        push: bool,
        /// The workspace file, for its registry (default: lks.yaml here or in a parent, if any).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Print the Kubernetes objects `lks up --runtime kube` would apply.
    #[command(after_help = "Examples:\n  \
        lks render                 # every service with k8s: manifests\n  \
        lks render web --local web # web as a live service: the agent injected\n  \
        lks render api | kubectl apply --dry-run=server -f -\n\n\
        Each service's image is put in place of its name (REGISTRY/NAME:dev-DIGEST for a live\n\
        service, :latest otherwise), objects get lks's labels, and the pod template that opts in\n\
        (lks.dev/agent: \"true\") gets the agent: an emptyDir, an init container from the agent\n\
        image, and its command wrapped by `lks-agent supervise --`.")]
    Render {
        /// Services or aliases (default: every service with `k8s:` manifests).
        services: Vec<String>,
        /// Render this service as live updated (default: the services named).
        #[arg(long = "local", value_name = "SERVICE")]
        local: Vec<String>,
        /// The workspace file (default: lks.yaml here or in the nearest parent).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        target: kube::target::Selection,
    },
    /// Create, check or delete the local kind cluster (with ingress and the registry).
    Cluster {
        #[command(subcommand)]
        command: kube::cluster::ClusterCommand,
        /// The workspace file (default: lks.yaml here or in the nearest parent, if any).
        #[arg(short = 'f', long = "file", value_name = "FILE", global = true)]
        file: Option<PathBuf>,
    },
    /// Install, remove or check the admission webhook that injects the agent, in any cluster.
    #[command(after_help = "Examples:\n  \
        lks webhook install                    # in the current context's cluster\n  \
        lks webhook install --context kind-lks\n  \
        lks webhook status\n  \
        lks webhook uninstall\n\n\
        Pods annotated lks.dev/agent: \"true\" then get the agent however they are applied (kubectl,\n\
        Helm, Argo). The webhook never blocks a pod (failurePolicy: Ignore). Install and uninstall\n\
        only change local clusters or contexts listed in lks.yaml under kube.allow_contexts.")]
    Webhook {
        #[command(subcommand)]
        command: kube::webhook_install::WebhookCommand,
        /// The workspace file, for its registry and kube settings (default: lks.yaml here or above, if any).
        #[arg(short = 'f', long = "file", value_name = "FILE", global = true)]
        file: Option<PathBuf>,
        #[command(flatten)]
        target: kube::target::Selection,
    },
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Bring the workspace up headless, exit 0 once every service is ready
    /// (non-zero at the first failure), and remove everything it started.
    #[command(
        after_help = "Examples:\n  lks ci\n  lks ci web --timeout 5m\n  lks ci --runtime kube --local bank\n\n\
        Fails at the first build failure, failing step, app exit, sync error or\n\
        readiness timeout, naming the service and showing the end of its log."
    )]
    Ci {
        #[command(flatten)]
        up: UpArgs,
        /// Give up when not every service is ready after this long.
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Show the services of the running `lks up`: status, restarts, pid, last sync.
    #[command(
        after_help = "Examples:\n  lks status\n  lks status -o json\n  lks status -f path/to/lks.yaml"
    )]
    Status {
        /// The workspace file (default: lks.yaml here or in the nearest parent).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        /// `json` for every field, as the run's API gives it.
        #[arg(short = 'o', long = "output", value_name = "FORMAT", value_parser = ["table", "json"], default_value = "table")]
        output: String,
    },
    /// Update services of the running `lks up` now: the changes that wait (manual mode), else a full sync, their build, their app.
    #[command(
        after_help = "Examples:\n  lks trigger web\n  lks trigger web api -f path/to/lks.yaml"
    )]
    Trigger(ActArgs),
    /// Restart the apps of services of the running `lks up`, without a sync or a build.
    #[command(after_help = "Examples:\n  lks restart web\n\n\
        A service that is not live updated (or not started yet) is started anew instead.")]
    Restart(ActArgs),
    /// Manual trigger mode: the services' changes wait until `lks trigger` (or `lks auto`).
    #[command(after_help = "Examples:\n  lks manual web      # edits pile up\n  \
        lks trigger web     # now they are applied, in one batch\n  \
        lks auto web        # back to applying every change as it comes")]
    Manual(ActArgs),
    /// Apply the services' changes as they come again (the default), and what waits now.
    #[command(after_help = "Examples:\n  lks auto web")]
    Auto(ActArgs),
    /// Stop services of the running `lks up` and what they started, until `lks enable`.
    #[command(after_help = "Examples:\n  lks disable worker\n  lks enable worker")]
    Disable(ActArgs),
    /// Start services disabled with `lks disable` again.
    #[command(after_help = "Examples:\n  lks enable worker")]
    Enable(ActArgs),
    /// Print the log lines of the running `lks up`'s services (lks's own, their steps', their apps').
    #[command(
        after_help = "Examples:\n  lks logs                      # every service, interleaved\n  \
        lks logs web api -f           # follow two services until the run ends\n  \
        lks logs web --since 5m --tail 20\n  \
        lks logs web --json | jq .text\n\n\
        -f is --follow here, as for kubectl and docker logs: the workspace file is --file."
    )]
    Logs {
        /// The services (default: every service).
        services: Vec<String>,
        /// Keep printing new lines until the run ends.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only lines of the last DURATION (e.g. 30s, 5m).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// At most the last N lines (the run keeps up to 2000 per service).
        #[arg(long, value_name = "N", default_value_t = 200)]
        tail: usize,
        /// One JSON object a line: service, seq, at_ms, source, text.
        #[arg(long)]
        json: bool,
        /// The workspace file (default: lks.yaml here or in the nearest parent).
        #[arg(long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate lks.yaml and every service file, without running anything.
    #[command(
        after_help = "Examples:\n  lks config check\n  lks config check -f path/to/lks.yaml\n  lks config check --runtime kube"
    )]
    Check {
        /// The workspace file (default: lks.yaml here or in the nearest parent).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        /// Also check that every service can run on this runtime [default:
        /// the one `lks up` would choose here].
        #[arg(long, value_enum)]
        runtime: Option<up::RuntimeKind>,
    },
}

#[derive(clap::Args)]
struct ActArgs {
    /// The services.
    #[arg(required = true)]
    services: Vec<String>,
    /// The workspace file (default: lks.yaml here or in the nearest parent).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct UpArgs {
    /// Services or aliases to launch (default: every service).
    targets: Vec<String>,
    /// Build this service from the working tree and live-update it (repeatable).
    #[arg(long = "local", value_name = "SERVICE")]
    local: Vec<String>,
    /// Run this service's app under its language's debugger (node --inspect,
    /// debugpy, dlv; `debug:` in its file overrides), its port on 127.0.0.1,
    /// and print how to attach (repeatable).
    #[arg(long = "debug", value_name = "SERVICE")]
    debug: Vec<String>,
    /// The workspace file (default: lks.yaml here or in the nearest parent).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Where services run [default: kube with --context or --namespace, or when
    /// the kubeconfig context is the workspace's kind cluster; else local].
    #[arg(long, value_enum)]
    runtime: Option<up::RuntimeKind>,
    #[command(flatten)]
    target: kube::target::Selection,
    /// The web UI's port on 127.0.0.1 [default: 10350, or the next free one;
    /// `lks ci`: no web UI unless given]; 0: any free port.
    #[arg(long, value_name = "PORT")]
    ui_port: Option<u16>,
    /// No web UI (`lks status`, `lks logs` and the other commands still work).
    #[arg(long, conflicts_with = "ui_port")]
    no_ui: bool,
    /// Tilt-style arguments after `--` (e.g. `-- --local bank`).
    #[arg(last = true, value_name = "ARGS")]
    rest: Vec<String>,
}

impl UpArgs {
    /// Folds the Tilt-style `-- --local NAME` form into `local`.
    fn options(self) -> anyhow::Result<up::UpOptions> {
        let mut local = self.local;
        let mut rest = self.rest.into_iter();
        while let Some(arg) = rest.next() {
            if arg == "--local" {
                local.push(
                    rest.next().ok_or_else(|| {
                        anyhow::anyhow!("`--local` after `--` needs a service name")
                    })?,
                );
            } else if let Some(name) = arg.strip_prefix("--local=") {
                local.push(name.to_string());
            } else {
                anyhow::bail!(
                    "unexpected argument after `--`: {arg:?} (only `--local SERVICE` is accepted there)"
                );
            }
        }
        Ok(up::UpOptions {
            file: self.file,
            targets: self.targets,
            local,
            debug: self.debug,
            runtime: self.runtime,
            kube: self.target,
            ci: None,
            ui: match self.no_ui {
                true => None,
                false => Some(self.ui_port.unwrap_or(api::UI_PORT)),
            },
        })
    }
}

#[derive(clap::Args)]
struct SyncArgs {
    /// The local directory to sync.
    local_dir: PathBuf,
    /// The agent's URL, e.g. http://127.0.0.1:7690.
    #[arg(long = "to", value_name = "URL")]
    to: String,
    /// Sync once and exit: 0 only when the agent's root equals LOCAL_DIR.
    #[arg(long)]
    once: bool,
    /// Also ignore paths matching this gitignore-style pattern (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// File holding the bearer token (default: the LKS_TOKEN environment variable).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Do not keep the local files' hashes between runs (kept by default in
    /// $XDG_CACHE_HOME/lks/hashes, else ~/.cache/lks/hashes).
    #[arg(long)]
    no_hash_cache: bool,
}

fn load_token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let raw = match file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", p.display()))?,
        None => std::env::var(lks_proto::launch::TOKEN_ENV).map_err(|_| {
            anyhow::anyhow!("no token: set LKS_TOKEN or pass --token-file FILE (the agent's token)")
        })?,
    };
    let token = raw.trim().to_string();
    if token.is_empty() {
        anyhow::bail!("the token is empty");
    }
    Ok(token)
}

/// The registry of the workspace (when there is one), else the default.
fn registry_address(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let ws = match file {
        Some(f) => Some(config::load(Some(f))?),
        None => config::load(None).ok(),
    };
    Ok(registry::Registry::of(ws.as_ref())?.address)
}

/// `90s`, `5m`, `1h30m`: a duration as lks.yaml writes one.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s)
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LKS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // A closed stderr (the host that read it is gone) is not worth a
        // panic: tracing would report the failed write with `eprintln!`.
        .log_internal_errors(false)
        // Escape codes only for a terminal that wants them (agent.log and
        // CI logs stay plain text).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let cli = Cli::parse();
    nofile::raise();
    panics::install();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.command {
            Command::Sync(args) => {
                let opts = sync::SyncOptions {
                    local: args.local_dir,
                    url: args.to,
                    token: load_token(args.token_file.as_deref())?,
                    excludes: args.exclude,
                    hash_cache: if args.no_hash_cache {
                        None
                    } else {
                        sync::default_hash_cache()
                    },
                };
                if args.once {
                    sync::once(opts).await
                } else {
                    sync::watch(opts).await
                }
            }
            Command::Init {
                dir,
                dry_run,
                force,
            } => init::command(&init::InitOptions {
                dir,
                dry_run,
                force,
            }),
            Command::Up(args) => up::up(args.options()?).await,
            Command::Ci { up, timeout } => {
                let headless = up.ui_port.is_none();
                let mut opts = up.options()?;
                opts.ci = Some(timeout);
                if headless {
                    opts.ui = None;
                }
                up::up(opts).await
            }
            Command::Down {
                file,
                all,
                kube,
                target,
            } => down::down(file.as_deref(), all, kube, &target).await,
            Command::Registry { command, file } => {
                let address = registry_address(file.as_deref())?;
                registry::command(&registry::Registry::parse(&address)?, command).await
            }
            Command::AgentImage { push, file } => {
                let address = registry_address(file.as_deref())?;
                agent_image::command(&registry::Registry::parse(&address)?, push).await
            }
            Command::Render {
                services,
                local,
                file,
                target,
            } => kube::render::command(file.as_deref(), &services, &local, &target).await,
            Command::Cluster { command, file } => {
                kube::cluster::command(file.as_deref(), command).await
            }
            Command::Webhook {
                command,
                file,
                target,
            } => kube::webhook_install::command(file.as_deref(), &target, command).await,
            Command::Status { file, output } => {
                status::status(file.as_deref(), output == "json").await
            }
            Command::Trigger(a) => {
                status::act(a.file.as_deref(), fleet::Action::Trigger, &a.services).await
            }
            Command::Restart(a) => {
                status::act(a.file.as_deref(), fleet::Action::Restart, &a.services).await
            }
            Command::Manual(a) => {
                status::act(a.file.as_deref(), fleet::Action::Manual, &a.services).await
            }
            Command::Auto(a) => {
                status::act(a.file.as_deref(), fleet::Action::Auto, &a.services).await
            }
            Command::Disable(a) => {
                status::act(a.file.as_deref(), fleet::Action::Disable, &a.services).await
            }
            Command::Enable(a) => {
                status::act(a.file.as_deref(), fleet::Action::Enable, &a.services).await
            }
            Command::Logs {
                services,
                follow,
                since,
                tail,
                json,
                file,
            } => {
                let opts = status::LogsOptions {
                    services,
                    follow,
                    since,
                    tail,
                    json,
                };
                status::logs(file.as_deref(), opts).await
            }
            Command::Config(ConfigCommand::Check { file, runtime }) => {
                config::check_command(file.as_deref(), runtime)
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lks: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
