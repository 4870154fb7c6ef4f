//! `lks agent-image`: the agent image (`images/agent/Dockerfile`: `FROM
//! scratch` plus the static agent), built from the static `lks-agent` lks
//! finds, tagged `REGISTRY/lks-agent:VERSION` and `:latest` (and by content
//! digest), and pushed with `--push`. Kubernetes pods get the agent from it
//! (an init container copies it into a shared volume).

use crate::config::Build;
use crate::docker::{self, image};
use crate::events::Progress;
use crate::registry::Registry;
use crate::runtime::RuntimeError;
use crate::runtime::agent_binary::{self, Linkage};

/// Why the agent image could not be made or published.
#[derive(Debug, thiserror::Error)]
pub enum AgentImageError {
    /// No static agent to put in it.
    #[error(transparent)]
    NoAgent(#[from] RuntimeError),
    /// Its build context could not be written.
    #[error("writing the agent image's build context: {0}")]
    Context(#[from] std::io::Error),
    /// Its digest could not be computed.
    #[error(transparent)]
    Pack(#[from] crate::docker::context::ContextError),
    /// Building, tagging or pushing it failed.
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// The registry to push to is not there.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

impl From<docker::EngineError> for AgentImageError {
    fn from(e: docker::EngineError) -> AgentImageError {
        AgentImageError::Image(e.into())
    }
}

/// The Dockerfile, as in the repository.
const DOCKERFILE: &str = include_str!("../../images/agent/Dockerfile");
/// The repository name under the registry.
pub const REPOSITORY: &str = "lks-agent";

/// The agent image as a kind cluster pulls it from `registry`, at `tag`
/// (the release `VERSION`, or a digest tag).
pub fn in_cluster(registry: &Registry, tag: &str) -> String {
    format!("{}/{REPOSITORY}:{tag}", registry.in_cluster())
}

/// The agent image's build context in a temporary directory: its
/// Dockerfile and the static agent lks finds (also returned).
fn context() -> Result<(tempfile::TempDir, Build, std::path::PathBuf), AgentImageError> {
    let agent = agent_binary::find(Linkage::Static)?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE)?;
    std::fs::copy(&agent, dir.path().join("lks-agent"))?;
    let build = Build {
        context: dir.path().to_path_buf(),
        dockerfile: dir.path().join("Dockerfile"),
        args: Default::default(),
        target: None,
        local: vec![],
        exclude: vec![],
    };
    Ok((dir, build, agent))
}

/// The agent image's content tag (`dev-DIGEST`), without building it: what
/// `build` tags it. Pods name it so, never a tag that a later push moves.
pub fn content_tag() -> Result<String, AgentImageError> {
    let (_dir, build, _) = context()?;
    let ctx = crate::docker::context::pack(&build)?;
    Ok(image::digest_tag(&ctx.digest))
}

/// Builds the agent image (unless built already), pushes it, and returns
/// it as the cluster pulls it, named by its content: a node never runs an
/// agent older than this lks's.
pub async fn publish(
    docker: &bollard::Docker,
    registry: &crate::kube::target::ClusterRegistry,
    progress: &dyn Progress,
) -> Result<String, AgentImageError> {
    let tags = build(docker, &registry.push, true, progress).await?;
    let pushed = format!(
        "{}:{}",
        image::repository(&registry.push.address, REPOSITORY),
        tags[0]
    );
    Ok(registry.pulled_as(&pushed))
}

/// Builds (and with `push`, pushes) the agent image; prints its references.
pub async fn command(registry: &Registry, push: bool) -> anyhow::Result<()> {
    let docker = docker::connect().await?;
    let progress = |l: &str| eprintln!("  {l}");
    let tags = build(&docker, registry, push, &progress).await?;
    let repo = image::repository(&registry.address, REPOSITORY);
    for tag in &tags {
        println!("{repo}:{tag}");
    }
    if push {
        eprintln!("pushed to {}", registry.address);
    }
    Ok(())
}

/// Builds the agent image (unless its digest is built already), tags it
/// `VERSION` and `latest`, and with `push` pushes all three tags. Returns the
/// tags, the digest tag first.
pub async fn build(
    docker: &bollard::Docker,
    registry: &Registry,
    push: bool,
    progress: &dyn Progress,
) -> Result<Vec<String>, AgentImageError> {
    let (dir, build, agent) = context()?;
    let repo = image::repository(&registry.address, REPOSITORY);
    progress.say(&format!("the agent image, from {}", agent.display()));
    let built = image::build(docker, &repo, &build, progress).await?;
    let version = env!("CARGO_PKG_VERSION");
    for tag in [version, "latest"] {
        image::tag(docker, &built.reference, &repo, tag).await?;
    }
    let digest_tag = crate::docker::reference::Reference::parse(&built.reference)
        .tag
        .unwrap_or_default()
        .to_string();
    let tags = vec![digest_tag, version.to_string(), "latest".to_string()];
    drop(dir);
    if push {
        crate::registry::ensure_running(docker, registry, None, progress).await?;
        for tag in &tags {
            image::push(docker, &repo, tag, progress).await?;
        }
    }
    Ok(tags)
}
