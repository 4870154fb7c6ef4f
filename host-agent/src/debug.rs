//! `lks up --debug SERVICE`: the app runs under its language's debugger,
//! listening on 127.0.0.1 where the app runs (its port forwarded to this
//! machine on the docker runtime), its readiness given time to stop at a
//! breakpoint, and lks says how to attach. Live updates go on: a restart
//! starts the app under the debugger again.
//!
//! The debugger is chosen from the command: `node` -> `--inspect`, `python*`
//! -> `debugpy`, a Go module's binary -> `dlv exec --headless`; a service's
//! `debug: {command, port}` overrides the guess.

use crate::config::{Service, Workspace};
use std::path::Path;
use std::time::Duration;

/// How long a debugged service may take to become ready: it may be stopped
/// at a breakpoint.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// A language's debugger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Debugger {
    /// Node's inspector (`--inspect`).
    Node,
    /// Python's debugpy (DAP).
    Debugpy,
    /// Go's Delve, headless (DAP and its JSON-RPC API).
    Delve,
    /// What `debug.command` says.
    Custom,
}

impl Debugger {
    /// The port it listens on unless `debug.port` says otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Debugger::Node => 9229,
            Debugger::Debugpy => 5678,
            Debugger::Delve => 2345,
            Debugger::Custom => 9229,
        }
    }
}

/// The `debug:` settings of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebugConfig {
    /// The app's command under the debugger (instead of the guess).
    pub command: Vec<String>,
    /// The debugger's port.
    pub port: Option<u16>,
}

/// A service being debugged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debugging {
    /// Which debugger; None: told when the container's command is known
    /// (its image's ENTRYPOINT + CMD).
    pub debugger: Option<Debugger>,
    /// Its port, on 127.0.0.1 where the app runs (and of this machine).
    pub port: u16,
}

/// Which debugger runs `argv` (the service's command or its container's),
/// in `dir` (a Go module's binary is told by the `go.mod` beside it).
pub fn guess(argv: &[String], dir: &Path) -> Option<Debugger> {
    let program = Path::new(argv.first()?)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    if program == "node" || program == "nodejs" {
        return Some(Debugger::Node);
    }
    if program.starts_with("python") {
        return Some(Debugger::Debugpy);
    }
    if dir.join("go.mod").is_file() && argv[0].contains('/') {
        return Some(Debugger::Delve);
    }
    None
}

/// `argv` run under `debugger` listening on 127.0.0.1:`port`.
pub fn wrap(debugger: Debugger, argv: &[String], port: u16) -> Vec<String> {
    let listen = format!("127.0.0.1:{port}");
    let (program, rest) = argv.split_first().expect("a command");
    let mut out = vec![program.clone()];
    match debugger {
        Debugger::Node => out.push(format!("--inspect={listen}")),
        Debugger::Debugpy => out.extend(["-m".into(), "debugpy".into(), "--listen".into(), listen]),
        Debugger::Delve => {
            out = vec![
                "dlv".into(),
                "exec".into(),
                "--headless".into(),
                format!("--listen={listen}"),
                "--api-version=2".into(),
                "--accept-multiclient".into(),
                "--continue".into(),
                program.clone(),
            ];
            if !rest.is_empty() {
                out.push("--".into());
            }
        }
        Debugger::Custom => {}
    }
    out.extend(rest.iter().cloned());
    out
}

/// What runs instead of `argv` (the app's command as the runtime found
/// it) when the service is debugged; `argv` itself otherwise. Why not, when
/// no debugger is known for it.
pub fn app_argv(service: &Service, argv: Vec<String>) -> Result<Vec<String>, String> {
    Ok(under_debugger(service, argv)?.0)
}

/// [`app_argv`], and the debugger it chose.
pub fn under_debugger(
    service: &Service,
    argv: Vec<String>,
) -> Result<(Vec<String>, Option<Debugger>), String> {
    let Some(d) = &service.debugging else {
        return Ok((argv, None));
    };
    if let Some(c) = service.debug.as_ref().filter(|c| !c.command.is_empty()) {
        return Ok((c.command.clone(), Some(Debugger::Custom)));
    }
    if argv.is_empty() {
        return Ok((argv, None));
    }
    match d.debugger.or_else(|| guess(&argv, &service.dir)) {
        Some(debugger) => Ok((wrap(debugger, &argv, d.port), Some(debugger))),
        None => Err(cannot_tell(service, &argv)),
    }
}

fn cannot_tell(service: &Service, argv: &[String]) -> String {
    format!(
        "--debug {}: lks cannot tell which debugger runs `{}` (it knows node, python and a Go \
         module's binary); give it in {}:\n  debug:\n    command: [node, \
         --inspect=127.0.0.1:9229, server.js]\n    port: 9229",
        service.name,
        shell_words::join(argv),
        service.file.display()
    )
}

/// The ports lks forwards to where `service` runs: its own, and its
/// debugger's while it is debugged.
pub fn forwarded_ports(service: &Service) -> Vec<u16> {
    let mut ports = service.ports.clone();
    if let Some(d) = &service.debugging
        && !ports.contains(&d.port)
    {
        ports.push(d.port);
    }
    ports
}

/// Marks `names` of `ws` as debugged: the debugger chosen from their command
/// (or `debug.command`), their readiness given a day. `container` says
/// whether the command that runs is the container's (`entrypoint:`, else
/// the image's, guessed from `command` when given).
pub fn apply(ws: &mut Workspace, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        let Some(service) = ws.services.get_mut(name) else {
            anyhow::bail!("--debug {name}: not a service of {}", ws.file.display());
        };
        let config = service.debug.clone().unwrap_or_default();
        let argv = if service.entrypoint.is_empty() {
            &service.command
        } else {
            &service.entrypoint
        };
        let debugger = if !config.command.is_empty() {
            Some(Debugger::Custom)
        } else if argv.is_empty() {
            // A container's image says what runs: told at its start.
            None
        } else {
            match guess(argv, &service.dir) {
                Some(d) => Some(d),
                None => anyhow::bail!(cannot_tell(service, argv)),
            }
        };
        let port = config
            .port
            .unwrap_or(debugger.map_or(9229, Debugger::default_port));
        service.debugging = Some(Debugging { debugger, port });
        if let Some(r) = &mut service.readiness {
            r.timeout = r.timeout.max(READINESS_TIMEOUT);
        }
    }
    Ok(())
}

/// Where the app's files are where it runs: `root` (the agent's) and the
/// first sync mapping's remote directory.
pub fn remote_root(service: &Service, root: &str) -> String {
    let remote = service
        .live_update
        .sync
        .first()
        .map(|m| m.remote.trim_matches('/'))
        .filter(|r| !r.is_empty() && *r != ".");
    match remote {
        Some(r) => format!("{}/{r}", root.trim_end_matches('/')),
        None => root.to_string(),
    }
}

/// How to attach to `service` in its container or pod, once `debugger`
/// was chosen from what it runs there; None when it was known at the start
/// (`lks up` said it then) or the service is not debugged.
pub fn how_to_attach_when_chosen(service: &Service, debugger: Option<Debugger>) -> Option<String> {
    let d = service.debugging.as_ref()?;
    if d.debugger.is_some() {
        return None;
    }
    let root = remote_root(service, &service.live_update.root);
    Some(how_to_attach(service, debugger, &root))
}

/// How to attach, for the developer: a line, then a VS Code `launch.json`
/// configuration. `remote_root` is where the app's files are where it runs;
/// `debugger`: the one chosen (None: the service's own, when known).
pub fn how_to_attach(service: &Service, debugger: Option<Debugger>, remote_root: &str) -> String {
    let Some(d) = &service.debugging else {
        return String::new();
    };
    let Some(debugger) = debugger.or(d.debugger) else {
        return format!(
            "debugging on 127.0.0.1:{}, with the debugger its image's command calls for (said \
             when its container starts)",
            d.port
        );
    };
    let local = service
        .live_update
        .sync
        .first()
        .map(|m| m.local.display().to_string())
        .unwrap_or_else(|| service.dir.display().to_string());
    let name = format!("lks: {}", service.name);
    let (what, config) = match debugger {
        Debugger::Node | Debugger::Custom => (
            format!(
                "Node inspector on 127.0.0.1:{} (chrome://inspect, or VS Code)",
                d.port
            ),
            serde_json::json!({
                "type": "node", "request": "attach", "name": name,
                "address": "127.0.0.1", "port": d.port,
                "localRoot": local, "remoteRoot": remote_root, "restart": true,
            }),
        ),
        Debugger::Debugpy => (
            format!("debugpy (DAP) on 127.0.0.1:{}", d.port),
            serde_json::json!({
                "type": "debugpy", "request": "attach", "name": name,
                "connect": {"host": "127.0.0.1", "port": d.port},
                "pathMappings": [{"localRoot": local, "remoteRoot": remote_root}],
            }),
        ),
        Debugger::Delve => (
            format!("Delve (headless) on 127.0.0.1:{}", d.port),
            serde_json::json!({
                "type": "go", "request": "attach", "mode": "remote", "name": name,
                "host": "127.0.0.1", "port": d.port,
                "substitutePath": [{"from": local, "to": remote_root}],
            }),
        ),
    };
    let config = serde_json::to_string_pretty(&config).unwrap_or_default();
    format!("debugging with {what}; VS Code launch.json configuration:\n{config}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_debugger_is_told_by_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(guess(&s(&["node", "server.js"]), d), Some(Debugger::Node));
        assert_eq!(
            guess(&s(&["/usr/bin/python3", "app.py"]), d),
            Some(Debugger::Debugpy)
        );
        assert_eq!(guess(&s(&["./bin/worker"]), d), None);
        std::fs::write(d.join("go.mod"), "module w\n").unwrap();
        assert_eq!(guess(&s(&["./bin/worker"]), d), Some(Debugger::Delve));
        assert_eq!(guess(&s(&["make", "run"]), d), None);
    }

    #[test]
    fn each_debugger_wraps_the_command_and_listens_on_loopback() {
        assert_eq!(
            wrap(Debugger::Node, &s(&["node", "server.js"]), 9229),
            s(&["node", "--inspect=127.0.0.1:9229", "server.js"])
        );
        assert_eq!(
            wrap(Debugger::Debugpy, &s(&["python3", "-m", "app"]), 5678),
            s(&[
                "python3",
                "-m",
                "debugpy",
                "--listen",
                "127.0.0.1:5678",
                "-m",
                "app"
            ])
        );
        assert_eq!(
            wrap(Debugger::Delve, &s(&["./bin/w", "--v"]), 2345),
            s(&[
                "dlv",
                "exec",
                "--headless",
                "--listen=127.0.0.1:2345",
                "--api-version=2",
                "--accept-multiclient",
                "--continue",
                "./bin/w",
                "--",
                "--v"
            ])
        );
    }
}
