//! Images: build a service's image from its context (skipped when an image
//! with the same content digest exists), tag, push to the registry, pull.
//! Long work reports progress through a callback, one line at a time.

use super::context::{self, BuildContext};
use super::{EngineError, is_not_found};
use crate::config::Build;
use crate::config::Service;
use crate::events::Progress;
use crate::registry::Registry;
use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptions, CreateImageOptions, PushImageOptions, TagImageOptions,
};
use futures::StreamExt;

/// Where a service's images live: `REGISTRY/NAME`.
pub fn repository(registry: &str, service: &str) -> String {
    format!("{registry}/{service}")
}

/// The tag of an image built from a context with this digest.
pub fn digest_tag(digest: &str) -> String {
    format!("dev-{}", &digest[..16])
}

/// The image id of `reference`, if the engine has it.
pub async fn local_id(docker: &Docker, reference: &str) -> Result<Option<String>, EngineError> {
    match docker.inspect_image(reference).await {
        Ok(i) => Ok(i.id),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(EngineError::Api {
            doing: format!("inspecting image {reference}"),
            cause: e,
        }),
    }
}

/// What a build produced.
pub struct Built {
    /// `REPOSITORY:dev-DIGEST`.
    pub reference: String,
    /// False when an image with the same digest existed and nothing was built.
    pub built: bool,
}

/// Why an image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Its build context could not be packed.
    #[error(transparent)]
    Context(#[from] context::ContextError),
    /// The engine failed or refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The thread packing the context stopped.
    #[error("packing the build context stopped: {0}")]
    Packing(#[from] tokio::task::JoinError),
}

/// Builds the context of `build` as `repository:dev-DIGEST`, unless that
/// image exists already. Build output goes to `progress`, one line at a time.
pub async fn build(
    docker: &Docker,
    repository: &str,
    build: &Build,
    progress: &dyn Progress,
) -> Result<Built, ImageError> {
    let b = build.clone();
    let ctx: BuildContext = tokio::task::spawn_blocking(move || context::pack(&b)).await??;
    for w in &ctx.warnings {
        progress.say(&format!("warning: {w}"));
    }
    let reference = format!("{repository}:{}", digest_tag(&ctx.digest));
    if local_id(docker, &reference).await?.is_some() {
        return Ok(Built {
            reference,
            built: false,
        });
    }
    progress.building(&format!(
        "building {reference} ({} files, {} KiB context)",
        ctx.files,
        ctx.tar.len() / 1024
    ));
    let options = BuildImageOptions {
        dockerfile: ctx.dockerfile.clone(),
        t: Some(reference.clone()),
        rm: true,
        forcerm: true,
        buildargs: Some(build.args.clone().into_iter().collect()),
        target: build.target.clone().unwrap_or_default(),
        ..Default::default()
    };
    let doing = format!("building {reference}");
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(ctx.tar.into())));
    let mut last_lines: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(EngineError::api(doing.clone()))?;
        if let Some(text) = &info.stream {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                // The legacy builder's bookkeeping is noise to a developer.
                let t = line.trim();
                if !(t.starts_with("--->")
                    || t.starts_with("Removing intermediate container")
                    || t.starts_with("Running in "))
                {
                    progress.say(line.trim_end());
                }
                last_lines.push(line.to_string());
                if last_lines.len() > 20 {
                    last_lines.remove(0);
                }
            }
        }
        if let Some(err) = info.error_detail.and_then(|d| d.message).or(info.error) {
            return Err(EngineError::Failed {
                doing,
                message: err,
            }
            .into());
        }
    }
    local_id(docker, &reference)
        .await?
        .ok_or_else(|| EngineError::Failed {
            doing: doing.clone(),
            message: format!(
                "the engine reported no error but has no image {reference}; its last output:\n{}",
                last_lines.join("\n")
            ),
        })?;
    Ok(Built {
        reference,
        built: true,
    })
}

/// Tags `source` as `repository:tag`.
pub async fn tag(
    docker: &Docker,
    source: &str,
    repository: &str,
    tag: &str,
) -> Result<(), EngineError> {
    docker
        .tag_image(
            source,
            Some(TagImageOptions {
                repo: Some(repository.to_string()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .map_err(EngineError::api(format!(
            "tagging {source} as {repository}:{tag}"
        )))
}

/// Pushes `repository:tag` to its registry.
pub async fn push(
    docker: &Docker,
    repository: &str,
    tag: &str,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let doing = format!("pushing {repository}:{tag}");
    let mut stream = docker.push_image(
        repository,
        Some(PushImageOptions {
            tag: Some(tag.to_string()),
            platform: None,
        }),
        None,
    );
    let mut last = String::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(EngineError::api(doing.clone()))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message).or(info.error) {
            return Err(EngineError::Failed {
                doing,
                message: format!("{err} (is the registry running? `lks registry status` tells)"),
            });
        }
        if let Some(s) = info.status
            && s != last
            && !s.starts_with("Pushing")
        {
            progress.say(&s);
            last = s;
        }
    }
    Ok(())
}

/// Pulls `repository:tag`. `Ok(false)` when the registry does not have it.
pub async fn pull(
    docker: &Docker,
    repository: &str,
    tag: &str,
    progress: &dyn Progress,
) -> Result<bool, EngineError> {
    let doing = format!("pulling {repository}:{tag}");
    let mut stream = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(repository.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        }),
        None,
        None,
    );
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(i) => i,
            Err(e) if is_not_found(&e) || missing(&e.to_string()) => return Ok(false),
            Err(e) => return Err(EngineError::Api { doing, cause: e }),
        };
        if let Some(err) = info.error_detail.and_then(|d| d.message).or(info.error) {
            if missing(&err) {
                return Ok(false);
            }
            return Err(EngineError::Failed {
                doing,
                message: err,
            });
        }
        if let Some(s) = info.status
            && (s.starts_with("Status") || s.starts_with("Digest"))
        {
            progress.say(&s);
        }
    }
    Ok(true)
}

/// Whether a registry error means "no such image" (rather than "no registry").
fn missing(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("manifest unknown") || m.contains("not found") || m.contains("name unknown")
}

/// The image a service runs: built from the working tree when it is
/// live (or must be rebuilt), else the registry's `latest`.
pub async fn for_service(
    docker: &Docker,
    registry: &Registry,
    service: &Service,
    live: bool,
    fresh: bool,
    progress: &dyn Progress,
) -> Result<String, ImageError> {
    let repo = repository(&registry.address, &service.name);
    if !live && !fresh {
        progress.say(&format!("pulling {repo}:latest"));
        if pull(docker, &repo, "latest", progress).await? {
            return Ok(format!("{repo}:latest"));
        }
        progress.say(&format!(
            "{repo}:latest is not in the registry; building it from the working tree"
        ));
    }
    let spec = crate::config::Build {
        exclude: service.own_files(),
        ..service.build.clone()
    };
    let built = build(docker, &repo, &spec, progress).await?;
    if built.built {
        progress.say(&format!("built {}", built.reference));
    } else {
        progress.say(&format!("{} is built already", built.reference));
    }
    // Publish it: the digest tag, and `latest` for the next runs that do
    // not name this service --local.
    let digest_tag = super::reference::Reference::parse(&built.reference).tag_or_latest();
    tag(docker, &built.reference, &repo, "latest").await?;
    for tag in [digest_tag, "latest"] {
        if let Err(e) = push(docker, &repo, tag, &|_: &str| {}).await {
            progress.say(&format!("warning: not pushed: {e}"));
            break;
        }
    }
    Ok(built.reference)
}
