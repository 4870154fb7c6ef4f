//! How an agent is launched to supervise an app, written once: the
//! `lks-agent supervise` arguments, the variable that carries its token, the
//! line it prints once it listens, and how a container's ENTRYPOINT and CMD
//! make the app's argv. The local, docker and kube runtimes and the injection
//! use it; the agent's own argument parser reads it back (a test in
//! `lks-agent`).

/// Environment variable the agent reads its token from.
pub const TOKEN_ENV: &str = "LKS_TOKEN";

/// The start of the first line `lks-agent serve|supervise` prints on stdout,
/// followed by the address it listens on.
pub const LISTENING: &str = "listening on ";

/// The address in the agent's first line (`listening on IP:PORT`).
pub fn listening_address(line: &str) -> Option<&str> {
    line.strip_prefix(LISTENING).map(str::trim)
}

/// The agent's flag: shut down when standard input closes.
pub const EXIT_WITH_STDIN: &str = "--exit-with-stdin";

/// The agent's flag: do not watch the root for changes made by others
/// (every `Manifest` after the first looks at the whole root again).
pub const NO_WATCH_ROOT: &str = "--no-watch-root";

/// When the supervised app first starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At once.
    Now,
    /// With the first batch that asks for a restart (`--no-start`: the first
    /// batch's steps may build the app).
    OnRestart,
    /// With the first batch of any kind, waiting at most this many seconds
    /// when no lks connects (`--wait-for-sync`).
    AfterSync(u32),
}

/// `lks-agent supervise`, as a runtime launches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervise {
    /// The agent's root.
    pub root: String,
    /// Where it listens (`IP:PORT`).
    pub listen: String,
    /// Seconds the app gets between SIGTERM and SIGKILL (None: the agent's
    /// default).
    pub grace_period: Option<u32>,
    /// The app's working directory; `.` keeps the container's WORKDIR
    /// (None: the root).
    pub workdir: Option<String>,
    /// When the app first starts.
    pub start: Start,
    /// The agent (and its app) stops when its standard input closes: the
    /// launching process holds the other end of a pipe, so the agent ends
    /// with it however it dies (`--exit-with-stdin`; the local runtime).
    pub exit_with_stdin: bool,
    /// The agent watches its root (inotify) so that answering `Manifest`
    /// again rescans nothing. The local runtime's agents, which never
    /// outlive their lks and so are never asked twice after a reconnect, do
    /// not: the kernel allows a user 128 inotify instances in all.
    pub watch_root: bool,
    /// The app's argv.
    pub app: Vec<String>,
}

impl Supervise {
    /// The arguments after the agent binary.
    pub fn args(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![
            "supervise".into(),
            "--root".into(),
            self.root.clone(),
            "--listen".into(),
            self.listen.clone(),
        ];
        if let Some(g) = self.grace_period {
            out.extend(["--grace-period".into(), g.to_string()]);
        }
        if let Some(w) = &self.workdir {
            out.extend(["--workdir".into(), w.clone()]);
        }
        if self.exit_with_stdin {
            out.push(EXIT_WITH_STDIN.into());
        }
        if !self.watch_root {
            out.push(NO_WATCH_ROOT.into());
        }
        match self.start {
            Start::Now => {}
            Start::OnRestart => out.push("--no-start".into()),
            Start::AfterSync(secs) => out.extend(["--wait-for-sync".into(), secs.to_string()]),
        }
        out.push("--".into());
        out.extend(self.app.iter().cloned());
        out
    }
}

/// What a container runs, by the rules of the container runtimes: its
/// ENTRYPOINT (`[""]` is Docker's way of saying none), followed by `args`
/// when given (Kubernetes' `args`), else by its CMD.
pub fn image_argv(entrypoint: &[String], cmd: &[String], args: Option<&[String]>) -> Vec<String> {
    let mut argv: Vec<String> = if entrypoint == [""] {
        Vec::new()
    } else {
        entrypoint.to_vec()
    };
    match args {
        Some(a) if !a.is_empty() => argv.extend(a.iter().cloned()),
        _ => argv.extend(cmd.iter().cloned()),
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn entrypoint_cmd_and_args_compose_as_the_runtimes_do() {
        assert_eq!(image_argv(&s(&["/e"]), &s(&["c"]), None), s(&["/e", "c"]));
        assert_eq!(
            image_argv(&s(&["/e"]), &s(&["c"]), Some(&s(&["a"]))),
            s(&["/e", "a"])
        );
        assert_eq!(image_argv(&s(&[""]), &s(&["c", "d"]), None), s(&["c", "d"]));
        assert_eq!(image_argv(&[], &s(&["c"]), Some(&[])), s(&["c"]));
        assert!(image_argv(&[], &[], None).is_empty());
    }

    #[test]
    fn the_listening_line_gives_the_address() {
        assert_eq!(
            listening_address("listening on 127.0.0.1:7690"),
            Some("127.0.0.1:7690")
        );
        assert_eq!(listening_address("app output"), None);
    }
}
