//! Kubernetes manifests as `lks init` reads them: which files deploy which
//! service (by image, as `lks render` puts a service's image in place), and
//! what the service's container says that a local run can use too: its ports,
//! literal environment, readiness probe.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A YAML file holding Kubernetes objects.
#[derive(Debug)]
pub(super) struct Manifest {
    /// The file (absolute).
    pub path: PathBuf,
    /// Its objects (documents with `apiVersion` and `kind`).
    pub objects: Vec<Value>,
}

/// Reads the YAML files that are Kubernetes manifests; the others (CI
/// configuration, Helm templates, files that do not parse) are left out.
pub(super) fn read(files: &[PathBuf]) -> Vec<Manifest> {
    files
        .iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            if text.contains("{{") {
                return None;
            }
            let objects: Vec<Value> = crate::yaml::documents(&text)
                .ok()?
                .into_iter()
                .filter(|d| d.get("apiVersion").is_some() && d.get("kind").is_some())
                .collect();
            (!objects.is_empty()).then(|| Manifest {
                path: path.clone(),
                objects,
            })
        })
        .collect()
}

/// The service an image is built for, as `lks render` sees it: the last
/// component of its repository (`web`, `registry:5000/team/web:1.2`).
fn image_service(image: &str) -> &str {
    let repo = crate::docker::reference::Reference::parse(image).repository;
    repo.rsplit('/').next().unwrap_or(repo)
}

/// The containers of an object's pod template (none for other kinds).
fn containers(object: &Value) -> impl Iterator<Item = &Value> {
    lks_k8s::workload::pod_template(object)
        .and_then(|t| t.pointer("/spec/containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The services (among `names`) whose images a manifest's workloads run.
fn images_of<'n>(m: &Manifest, names: &'n [String]) -> Vec<&'n str> {
    let mut out: Vec<&str> = vec![];
    for c in m.objects.iter().flat_map(containers) {
        let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
        if let Some(n) = names.iter().find(|n| *n == image_service(image))
            && !out.contains(&n.as_str())
        {
            out.push(n);
        }
    }
    out
}

/// Which manifests belong to which service (`services`: name and directory):
/// a file whose workloads run a service's image is that service's; else a
/// file in a service's `k8s/` directory, or one holding only objects named
/// after a service (its Service, Ingress). A file that runs several
/// services' images goes to none of them (a note says so): each service
/// applies its manifests whole.
/// Notes show paths relative to `root`.
pub(super) fn assign(
    root: &Path,
    manifests: &[Manifest],
    services: &[(String, PathBuf)],
) -> (BTreeMap<String, Vec<usize>>, Vec<String>) {
    let names: Vec<String> = services.iter().map(|(n, _)| n.clone()).collect();
    let mut owned: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut notes = vec![];
    for (i, m) in manifests.iter().enumerate() {
        let images = images_of(m, &names);
        let owner = match images.as_slice() {
            [one] => Some(one.to_string()),
            [] if m.objects.iter().any(|o| containers(o).next().is_some()) => {
                // Workloads of images that are no service here: only a
                // service's own k8s/ directory claims them.
                in_k8s_dir(&m.path, services)
            }
            [] => in_k8s_dir(&m.path, services).or_else(|| named_after(m, &names)),
            several => {
                notes.push(format!(
                    "{} runs the images of {}: split it into a file per service to list it in their `k8s:`",
                    m.path.strip_prefix(root).unwrap_or(&m.path).display(),
                    several.join(" and ")
                ));
                None
            }
        };
        if let Some(name) = owner {
            owned.entry(name).or_default().push(i);
        }
    }
    (owned, notes)
}

/// The service whose `k8s/` directory holds `file`.
fn in_k8s_dir(file: &Path, services: &[(String, PathBuf)]) -> Option<String> {
    let parent = file.parent()?;
    services
        .iter()
        .find(|(_, dir)| parent == dir.join("k8s"))
        .map(|(n, _)| n.clone())
}

/// The service every object of a file without workloads is named after.
fn named_after(m: &Manifest, names: &[String]) -> Option<String> {
    fn object_name(o: &Value) -> Option<&str> {
        o.pointer("/metadata/name").and_then(Value::as_str)
    }
    let first = object_name(&m.objects[0])?;
    (names.iter().any(|n| n == first) && m.objects.iter().all(|o| object_name(o) == Some(first)))
        .then(|| first.to_string())
}

/// The container that runs service `name` in its manifests: the first whose
/// image is the service's, else the first named `name`, else the only one
/// of the first workload.
pub(super) fn container_of<'m>(manifests: &[&'m Manifest], name: &str) -> Option<&'m Value> {
    let all = || manifests.iter().flat_map(|m| m.objects.iter());
    let image_is = |c: &&Value| {
        c.get("image")
            .and_then(Value::as_str)
            .is_some_and(|i| image_service(i) == name)
    };
    let named = |c: &&Value| c.get("name").and_then(Value::as_str) == Some(name);
    all()
        .flat_map(containers)
        .find(image_is)
        .or_else(|| all().flat_map(containers).find(named))
        .or_else(|| {
            let first = all().find(|o| containers(o).next().is_some())?;
            let mut cs = containers(first);
            let only = cs.next()?;
            cs.next().is_none().then_some(only)
        })
}

/// What a container says that a local run can use.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Container {
    /// Its TCP `containerPort`s.
    pub ports: Vec<u16>,
    /// Its environment variables with literal values, in order.
    pub env: Vec<(String, String)>,
    /// Variables left out, and why.
    pub env_skipped: Vec<String>,
    /// Its readiness probe, as lks checks one.
    pub readiness: Option<Probe>,
}

/// A readiness probe lks can run against a local app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Probe {
    /// An HTTP(S) GET of this URL.
    Http(String),
    /// A TCP connect to this address.
    Tcp(String),
}

/// Reads a container (see [`Container`]).
pub(super) fn read_container(c: &Value) -> Container {
    let mut out = Container::default();
    let declared: Vec<&Value> = c
        .get("ports")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for p in &declared {
        let tcp = p
            .get("protocol")
            .and_then(Value::as_str)
            .is_none_or(|proto| proto.eq_ignore_ascii_case("tcp"));
        if let Some(port) = p.get("containerPort").and_then(as_port)
            && tcp
            && !out.ports.contains(&port)
        {
            out.ports.push(port);
        }
    }
    for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = e.get("name").and_then(Value::as_str) else {
            continue;
        };
        match (e.get("value"), e.get("valueFrom")) {
            (_, Some(_)) => out
                .env_skipped
                .push(format!("{name} (its value comes from the cluster)")),
            (Some(Value::String(v)), _) if v.contains("$(") => out
                .env_skipped
                .push(format!("{name} (Kubernetes expands the $(...) in it)")),
            (Some(v), _) => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.env.push((name.to_string(), text));
            }
            (None, None) => out.env.push((name.to_string(), String::new())),
        }
    }
    // A named port is the containerPort of that name.
    let port_of = |v: &Value| {
        as_port(v).or_else(|| {
            let name = v.as_str()?;
            declared
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|p| p.get("containerPort").and_then(as_port))
        })
    };
    let probe = c.get("readinessProbe");
    out.readiness = if let Some(get) = probe.and_then(|p| p.get("httpGet")) {
        get.get("port").and_then(port_of).map(|port| {
            let scheme = get
                .get("scheme")
                .and_then(Value::as_str)
                .unwrap_or("HTTP")
                .to_ascii_lowercase();
            let path = get.get("path").and_then(Value::as_str).unwrap_or("/");
            let slash = if path.starts_with('/') { "" } else { "/" };
            Probe::Http(format!("{scheme}://127.0.0.1:{port}{slash}{path}"))
        })
    } else if let Some(tcp) = probe.and_then(|p| p.get("tcpSocket")) {
        tcp.get("port")
            .and_then(port_of)
            .map(|port| Probe::Tcp(format!("127.0.0.1:{port}")))
    } else {
        None
    };
    out
}

/// A port number, written as a number or a string of digits.
fn as_port(v: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|p| *p != 0)
}

/// An environment value made to work on every runtime.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Localized {
    /// The value, each host that is a service written `${host:NAME}` (how
    /// each runtime reaches it), and those services.
    Value(String, Vec<String>),
    /// It names a host of the cluster that is no service here.
    Foreign(String),
}

/// `value` (of variable `var`) with the in-cluster names of services
/// (`names`) made `${host:NAME}`: the host of a URL (`http://api:8080`,
/// `api.default.svc.cluster.local`), of `HOST:PORT`, or a `*HOST*`
/// variable's whole value. A cluster-internal host that is no service here
/// (no dot, or `.svc`) makes it [`Localized::Foreign`]; hosts on the
/// internet, IPs and `localhost` are kept.
pub(super) fn localize(var: &str, value: &str, names: &[String]) -> Localized {
    let mut hosts: Vec<(usize, usize)> = vec![];
    let mut from = 0;
    while let Some(i) = value[from..].find("://") {
        let start = from + i + 3;
        let rest = &value[start..];
        let end_of_authority = rest.find(['/', '?', '#', ' ', ',']).unwrap_or(rest.len());
        let host_start = rest[..end_of_authority].rfind('@').map_or(0, |a| a + 1);
        let host_len = rest[host_start..end_of_authority]
            .find(':')
            .unwrap_or(end_of_authority - host_start);
        hosts.push((start + host_start, start + host_start + host_len));
        from = start + end_of_authority;
    }
    let looks_like_host = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if hosts.is_empty() {
        if let Some((host, port)) = value.rsplit_once(':')
            && looks_like_host(host)
            && !port.is_empty()
            && port.chars().all(|c| c.is_ascii_digit())
        {
            hosts.push((0, host.len()));
        } else if var.to_ascii_uppercase().contains("HOST") && looks_like_host(value) {
            hosts.push((0, value.len()));
        }
    }
    let mut out = String::new();
    let mut services = vec![];
    let mut last = 0;
    for (a, b) in hosts {
        let host = &value[a..b];
        let label = host.split('.').next().unwrap_or(host);
        let in_cluster = !host.contains('.')
            || host.ends_with(".svc")
            || host.contains(".svc.")
            || host.split('.').count() == 2 && names.iter().any(|n| n == label);
        if !in_cluster || host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        match names.iter().find(|n| *n == label) {
            Some(n) => {
                out.push_str(&value[last..a]);
                out.push_str(&format!("${{host:{n}}}"));
                last = b;
                if !services.contains(n) {
                    services.push(n.clone());
                }
            }
            None => return Localized::Foreign(host.to_string()),
        }
    }
    out.push_str(&value[last..]);
    Localized::Value(out, services)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["api".into(), "web".into()]
    }

    #[test]
    fn in_cluster_hosts_of_services_become_host_references() {
        let l = |var: &str, v: &str| localize(var, v, &names());
        let value = |s: &str, deps: &[&str]| {
            Localized::Value(s.into(), deps.iter().map(|d| d.to_string()).collect())
        };
        assert_eq!(
            l("API_URL", "http://api:18081"),
            value("http://${host:api}:18081", &["api"])
        );
        assert_eq!(
            l("API", "https://u:p@api.default.svc.cluster.local/v1"),
            value("https://u:p@${host:api}/v1", &["api"])
        );
        assert_eq!(l("ADDR", "api:9000"), value("${host:api}:9000", &["api"]));
        assert_eq!(l("API_HOST", "api"), value("${host:api}", &["api"]));
        assert_eq!(l("MODE", "api"), value("api", &[]));
        assert_eq!(l("PORT", "18080"), value("18080", &[]));
        assert_eq!(
            l("UPSTREAM", "http://localhost:9000,https://api.stripe.com"),
            value("http://localhost:9000,https://api.stripe.com", &[])
        );
        assert_eq!(
            l("DB", "postgres://user@db:5432/app"),
            Localized::Foreign("db".into())
        );
    }

    #[test]
    fn a_container_gives_its_tcp_ports_literal_env_and_readiness_probe() {
        let c: Value = serde_json::json!({
            "name": "web", "image": "web",
            "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 53, "protocol": "UDP"}],
            "env": [
                {"name": "PORT", "value": "8080"},
                {"name": "DEBUG", "value": true},
                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "URL", "value": "http://$(HOST)/"},
                {"name": "EMPTY"}
            ],
            "readinessProbe": {"httpGet": {"path": "health", "port": "http"}}
        });
        let got = read_container(&c);
        assert_eq!(got.ports, [8080]);
        assert_eq!(
            got.env,
            [
                ("PORT".to_string(), "8080".to_string()),
                ("DEBUG".into(), "true".into()),
                ("EMPTY".into(), String::new())
            ]
        );
        assert_eq!(got.env_skipped.len(), 2);
        assert_eq!(
            got.readiness,
            Some(Probe::Http("http://127.0.0.1:8080/health".into()))
        );
        let tcp = serde_json::json!({"readinessProbe": {"tcpSocket": {"port": 5432}}});
        assert_eq!(
            read_container(&tcp).readiness,
            Some(Probe::Tcp("127.0.0.1:5432".into()))
        );
    }

    #[test]
    fn a_file_goes_to_the_service_whose_image_it_runs_or_whose_k8s_dir_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let deployment = |image: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\nspec:\n  template:\n    spec:\n      containers:\n        - {{name: c, image: \"{image}\"}}\n"
            )
        };
        let files = [
            (
                "deploy/web.yaml",
                deployment("registry.example.com/team/web:1.2"),
            ),
            (
                "deploy/both.yaml",
                format!("{}---\n{}", deployment("web"), deployment("api")),
            ),
            ("api/k8s/db.yaml", deployment("postgres:16")),
            (
                "deploy/api-svc.yaml",
                "apiVersion: v1\nkind: Service\nmetadata: {name: api}\n".into(),
            ),
            ("deploy/redis.yaml", deployment("redis")),
            (".github/ci.yaml", "on: push\n".into()),
        ];
        let mut paths = vec![];
        for (rel, text) in &files {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            paths.push(p);
        }
        let manifests = read(&paths);
        assert_eq!(manifests.len(), 5, "the CI file is no manifest");
        let services = vec![
            ("api".to_string(), root.join("api")),
            ("web".to_string(), root.join("web")),
        ];
        let (owned, notes) = assign(root, &manifests, &services);
        let files_of = |n: &str| -> Vec<String> {
            owned[n]
                .iter()
                .map(|&i| {
                    manifests[i]
                        .path
                        .strip_prefix(root)
                        .unwrap()
                        .display()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(files_of("web"), ["deploy/web.yaml"]);
        assert_eq!(files_of("api"), ["api/k8s/db.yaml", "deploy/api-svc.yaml"]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("api and web") || notes[0].contains("web and api"));
        let web: Vec<&Manifest> = owned["web"].iter().map(|&i| &manifests[i]).collect();
        let c = container_of(&web, "web").unwrap();
        assert_eq!(c["image"], "registry.example.com/team/web:1.2");
    }
}
