//! The real-cluster tier: a Kubernetes cluster named by
//! `LKS_TEST_KUBECONFIG` (`tests/run.sh` starts the single-node v1.36
//! cluster of `../shared/k8s/up.sh` and sets it; elsewhere, point it at any
//! cluster lks may change, such as a kind cluster). Without one a test says
//! loudly that it did not run and passes, except in CI (`CI=true`), where a
//! missing cluster is a failure.
//!
//! Each test works in a namespace of its own ([`Cluster::namespace`], deleted
//! when dropped), so tests run side by side on one cluster; the host ports
//! lks forwards are free ones ([`examples_on_free_ports`]).

use crate::{Up, copy_examples, free_port, unique, up_command};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The test cluster.
#[derive(Clone)]
pub struct Cluster {
    /// Its kubeconfig (cluster-admin).
    pub kubeconfig: PathBuf,
}

/// The cluster of `LKS_TEST_KUBECONFIG`; None (said loudly) when there is
/// none outside CI; a panic in CI.
pub fn cluster(test: &str) -> Option<Cluster> {
    match std::env::var_os("LKS_TEST_KUBECONFIG") {
        Some(p) if !p.is_empty() => {
            let kubeconfig = PathBuf::from(p);
            assert!(
                kubeconfig.is_file(),
                "LKS_TEST_KUBECONFIG={} is not a file",
                kubeconfig.display()
            );
            Some(Cluster { kubeconfig })
        }
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "{test}: CI=true but LKS_TEST_KUBECONFIG is not set: tests/run.sh starts ../shared/k8s/up.sh \
             and sets it; a real-cluster test is never skipped in CI"
        ),
        _ => {
            eprintln!(
                "\n*** NOT RUN: {test} needs a Kubernetes cluster. Run tests/run.sh on a machine with \
                 ../shared/k8s, or set LKS_TEST_KUBECONFIG=/path/to/kubeconfig (a local cluster: kind, k3d, \
                 minikube, ...). ***\n"
            );
            None
        }
    }
}

impl Cluster {
    /// `kubectl ARGS` against the cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .unwrap_or_else(|e| panic!("cannot run kubectl ({e}); tests/run.sh checks for it"))
    }

    /// `kubectl ARGS`, which must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `yaml` (server-side, as a user might).
    pub fn apply(&self, namespace: &str, yaml: &str) {
        let mut child = Command::new("kubectl")
            .args(["apply", "-n", namespace, "-f", "-"])
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed: {}{}\n{yaml}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fresh namespace name (not created: `lks up --namespace` creates it),
    /// deleted with everything in it when the guard drops.
    pub fn namespace(&self) -> Namespace {
        Namespace {
            name: format!("lks-e2e-{}", unique()),
            cluster: self.clone(),
        }
    }

    /// `lks up ARGS` in `ws` with this cluster's kubeconfig.
    pub fn up(&self, ws: &Path, args: &[&str]) -> Up {
        self.up_with(ws, args, &self.kubeconfig)
    }

    /// `lks up ARGS` in `ws` with `kubeconfig`.
    pub fn up_with(&self, ws: &Path, args: &[&str], kubeconfig: &Path) -> Up {
        let mut cmd = up_command(ws, args);
        cmd.env("KUBECONFIG", kubeconfig);
        Up::spawn(cmd)
    }

    /// `lks ARGS` with this cluster's kubeconfig; its output.
    pub fn lks(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(crate::bin("lks"))
            .args(args)
            .current_dir(dir)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    /// The names of the objects of `kinds` (`deploy,svc`) in `namespace`.
    pub fn names(&self, namespace: &str, kinds: &str) -> Vec<String> {
        self.kubectl_ok(&["get", kinds, "-n", namespace, "-o", "name"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `jsonpath` of `object` in `namespace` (empty if it does not exist).
    pub fn jsonpath(&self, namespace: &str, object: &str, jsonpath: &str) -> String {
        let out = self.kubectl(&[
            "get",
            object,
            "-n",
            namespace,
            "--ignore-not-found",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pods of `selector` in `namespace` that are not being deleted.
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<String> {
        self.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .lines()
        .filter(|l| l.split_whitespace().count() == 1)
        .map(|l| l.trim().to_string())
        .collect()
    }

    /// Waits until `f` holds, polling every 200 ms.
    pub fn eventually(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A namespace a test works in; deleted (with what it holds) when dropped.
pub struct Namespace {
    /// Its name.
    pub name: String,
    cluster: Cluster,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

/// The examples' web and api in `dst`, their ports (18080, 18081) replaced
/// by free ones everywhere (service files, manifests, sources, Dockerfiles),
/// so that tests forward them side by side; returns (web, api).
pub fn examples_on_free_ports(dst: &Path) -> (u16, u16) {
    copy_examples(dst, &["worker"]);
    let (web, api) = (free_port(), free_port());
    crate::replace_in_files(
        dst,
        &[("18080", web.to_string()), ("18081", api.to_string())],
    );
    crate::write(
        dst,
        "lks.yaml",
        "services: [\"web/lks.service.yaml\", \"api/lks.service.yaml\"]\naliases: { frontend: [web] }\n",
    );
    (web, api)
}

/// Sets web's greeting in `ws/web/server.js`.
pub fn set_greeting(ws: &Path, text: &str) {
    let server = ws.join("web/server.js");
    let js = std::fs::read_to_string(&server).unwrap();
    let start = js.find("const greeting = ").unwrap();
    let end = start + js[start..].find('\n').unwrap();
    let js = format!("{}const greeting = {text:?};{}", &js[..start], &js[end..]);
    std::fs::write(&server, js).unwrap();
}

/// A kubeconfig for the same cluster as `admin` (a file) with a token
/// user, written to `path`: a ServiceAccount's rights instead of admin's.
pub fn token_kubeconfig(admin: &Path, token: &str, path: &Path) {
    let text = std::fs::read_to_string(admin).unwrap();
    let ca = text
        .lines()
        .find_map(|l| {
            let i = l.find("certificate-authority-data:")?;
            Some(
                l[i + "certificate-authority-data:".len()..]
                    .trim()
                    .trim_end_matches('}')
                    .trim()
                    .to_string(),
            )
        })
        .expect("certificate-authority-data in the kubeconfig");
    let server = text
        .lines()
        .find_map(|l| {
            let i = l.find("server:")?;
            let rest = l[i + 7..].trim();
            let rest = rest.trim_start_matches('"');
            Some(
                rest.split(['"', ',', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .expect("server in the kubeconfig");
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: e2e-limited\n\
             clusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
             users:\n- name: e2e-limited\n  user:\n    token: {token}\n\
             contexts:\n- name: e2e-limited\n  context:\n    cluster: e2e\n    user: e2e-limited\n"
        ),
    )
    .unwrap();
}

/// A TCP proxy on a free loopback port in front of `target` (the API
/// server): [`Proxy::cut`] makes the API server go away for whoever talks
/// through it (open connections reset, new ones refused), [`Proxy::resume`]
/// brings it back; the cluster itself is untouched.
pub struct Proxy {
    /// Where it listens (127.0.0.1).
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding 127.0.0.1:PORT to `target`.
    pub fn start(target: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let port = free_port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::net::TcpStream>::new()));
        let (u, st, c) = (up.clone(), stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            let mut listener: Option<std::net::TcpListener> = None;
            while !st.load(Ordering::SeqCst) {
                if !u.load(Ordering::SeqCst) {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                if listener.is_none() {
                    match std::net::TcpListener::bind(("127.0.0.1", port)) {
                        Ok(l) => {
                            l.set_nonblocking(true).unwrap();
                            listener = Some(l);
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    }
                }
                match listener.as_ref().unwrap().accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = std::net::TcpStream::connect(target) else {
                            continue;
                        };
                        let mut list = c.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy {
            port,
            up,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    /// The API server goes away: open connections are reset, new ones refused.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        // The listener closes within the loop's next turn.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// The API server is back.
    pub fn resume(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A copy of `kubeconfig` whose server is `https://127.0.0.1:PORT` (a
/// [`Proxy`]), written to `path`.
pub fn kubeconfig_via(kubeconfig: &Path, port: u16, path: &Path) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let re_server = |l: &str| -> String {
        match l.find("https://127.0.0.1:") {
            Some(i) => {
                let rest = &l[i + "https://127.0.0.1:".len()..];
                let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
                format!("{}https://127.0.0.1:{port}{}", &l[..i], &rest[digits..])
            }
            None => l.to_string(),
        }
    };
    let out: Vec<String> = text.lines().map(re_server).collect();
    assert_ne!(
        out.join("\n"),
        text.trim_end(),
        "no loopback server in {}",
        kubeconfig.display()
    );
    std::fs::write(path, out.join("\n") + "\n").unwrap();
}

/// The API server's address when the kubeconfig names one on 127.0.0.1.
pub fn loopback_server(kubeconfig: &Path) -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string(kubeconfig).ok()?;
    let i = text.find("https://127.0.0.1:")?;
    let rest = &text[i + "https://127.0.0.1:".len()..];
    let port: u16 = rest
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()?;
    Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// `lks up --namespace NS frontend` on a copy of the examples (web live,
/// api from `latest`), once web is ready. Fields drop in order: `lks up`
/// stops (deleting what it applied) before the namespace goes.
pub struct Frontend {
    /// The running `lks up`.
    pub up: Up,
    /// Its namespace.
    pub ns: Namespace,
    /// The cluster.
    pub cluster: Cluster,
    /// web's and api's forwarded ports.
    pub web: u16,
    /// api's forwarded port.
    pub api: u16,
    /// The workspace (a temporary copy of the examples).
    pub dir: tempfile::TempDir,
}

impl Frontend {
    /// Starts it; None (said loudly) without a cluster outside CI.
    pub fn start(test: &str) -> Option<Frontend> {
        let cluster = cluster(test)?;
        let dir = tempfile::tempdir().unwrap();
        let (web, api) = examples_on_free_ports(dir.path());
        let ns = cluster.namespace();
        let mut up = cluster.up(dir.path(), &["--namespace", &ns.name, "frontend"]);
        up.wait(&["web", "[ready]"], Duration::from_secs(300));
        Some(Frontend {
            up,
            ns,
            cluster,
            web,
            api,
            dir,
        })
    }

    /// The workspace directory.
    pub fn ws(&self) -> &Path {
        self.dir.path()
    }
}
