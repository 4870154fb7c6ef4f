//! The kind CLI (found, listed, run) and the Docker containers of a
//! cluster's nodes.

use super::*;

/// How to get kind.
pub(super) fn install_kind_hint() -> String {
    format!(
        "kind is not installed (no `kind` on PATH); lks creates the cluster with kind (https://kind.sigs.k8s.io).\n  \
         Install it with Go: `go install sigs.k8s.io/kind@{KIND_VERSION}` (into $(go env GOPATH)/bin, which must be on PATH),\n  \
         or download the release binary: `curl -Lo ./kind https://kind.sigs.k8s.io/dl/{KIND_VERSION}/kind-linux-amd64 \
         && chmod +x ./kind && sudo mv ./kind /usr/local/bin/kind` (kind-linux-arm64 on ARM)."
    )
}

/// The kind binary, or the install hint as the error.
pub(super) fn kind() -> anyhow::Result<PathBuf> {
    ::which::which("kind").map_err(|_| anyhow::anyhow!("{}", install_kind_hint()))
}

/// The clusters kind knows (`kind get clusters`).
pub(super) async fn kind_clusters(kind: &Path) -> anyhow::Result<Vec<String>> {
    let out = tokio::process::Command::new(kind)
        .args(["get", "clusters"])
        .output()
        .await
        .with_context(|| format!("running {} get clusters", kind.display()))?;
    if !out.status.success() {
        bail!(
            "`kind get clusters` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Runs kind with its output going straight to ours; `stdin` is written to
/// its standard input.
pub(super) async fn run_kind(
    kind: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let shown = format!("kind {}", args.join(" "));
    let mut child = tokio::process::Command::new(kind)
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .with_context(|| format!("starting `{shown}`"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .with_context(|| format!("writing the configuration to `{shown}`"))?;
        drop(pipe);
    }
    let status = child
        .wait()
        .await
        .with_context(|| format!("waiting for `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status}); its output is above");
    }
    Ok(())
}

/// One node container of a kind cluster.
#[derive(Debug, Clone)]
pub(super) struct NodeContainer {
    pub(super) name: String,
    pub(super) running: bool,
    pub(super) image: String,
}

/// The node containers of cluster `name` (by kind's label), sorted by name.
pub(super) async fn node_containers(
    docker: &Docker,
    name: &str,
) -> anyhow::Result<Vec<NodeContainer>> {
    use bollard::query_parameters::ListContainersOptions;
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{KIND_CLUSTER_LABEL}={name}")],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(EngineError::api("listing the cluster's node containers"))?;
    let mut nodes: Vec<NodeContainer> = containers
        .into_iter()
        .filter_map(|c| {
            let name = c.names?.first()?.trim_start_matches('/').to_string();
            Some(NodeContainer {
                name,
                running: c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
                image: c.image.unwrap_or_default(),
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}
