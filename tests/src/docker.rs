//! The Docker engine through its CLI, and removing what a test created.

use std::path::PathBuf;
use std::process::Command;

/// Runs the `docker` CLI and asserts it succeeded.
pub fn docker(args: &[&str]) -> std::process::Output {
    let out = docker_unchecked(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the `docker` CLI; the caller checks the outcome.
pub fn docker_unchecked(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker ({e}): tests/run.sh installs docker.io and starts dockerd")
        })
}

/// The trimmed stdout of a successful `docker` command.
pub fn docker_text(args: &[&str]) -> String {
    String::from_utf8_lossy(&docker(args).stdout)
        .trim()
        .to_string()
}

/// Fails with how to build `image` when the engine does not have it
/// (test images are built offline by the scripts in `images/`).
pub fn require_image(image: &str, built_by: &str) {
    let out = docker_unchecked(&["image", "inspect", "--format", "{{.Id}}", image]);
    assert!(
        out.status.success(),
        "the test image {image} is missing: build it with {built_by} (tests/run.sh does)"
    );
}

/// `docker inspect --format FORMAT OBJECT`, trimmed; panics if it fails.
pub fn docker_inspect(object: &str, format: &str) -> String {
    docker_text(&["inspect", "--format", format, object])
}

/// Whether the engine has the `kind` (`container`, `image`, `network`,
/// `volume`) named `name`.
pub fn docker_exists(kind: &str, name: &str) -> bool {
    docker_unchecked(&[kind, "inspect", name]).status.success()
}

/// The ids `docker KIND... -q --filter label=LABEL` lists (`kind` e.g.
/// `["ps", "-a"]`, `["network", "ls"]`, `["volume", "ls"]`).
pub fn docker_ids(kind: &[&str], label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let mut args = kind.to_vec();
    args.extend(["-q", "--filter", &filter]);
    docker_text(&args).lines().map(str::to_string).collect()
}

/// `REPO:TAG` of every tagged local image of `repo`.
pub fn local_tags(repo: &str) -> Vec<String> {
    let out = docker_unchecked(&["images", "--format", "{{.Repository}}:{{.Tag}}", repo]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.ends_with(":<none>"))
        .map(str::to_string)
        .collect()
}

/// What a test made in the Docker engine, for [`DockerCleanup`].
#[derive(Default)]
pub struct DockerObjects {
    /// Workspaces whose containers, networks and volumes (labelled
    /// `dev.lks.workspace=PATH`) go.
    pub workspaces: Vec<PathBuf>,
    /// Containers, removed with their anonymous volumes.
    pub containers: Vec<String>,
    /// Networks.
    pub networks: Vec<String>,
    /// Volumes.
    pub volumes: Vec<String>,
    /// Repositories whose local tags all go (a registry keeps its copy).
    pub repos: Vec<String>,
    /// Images (references or ids).
    pub images: Vec<String>,
}

/// Removes, when dropped (also when the test fails), what a test made in the
/// engine: containers first, then networks, volumes and images. Declare it
/// before the `Up`s of a test, so that it runs after them.
pub struct DockerCleanup(pub DockerObjects);

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let made = &self.0;
        let ids = |args: &[&str]| -> Vec<String> {
            String::from_utf8_lossy(&docker_unchecked(args).stdout)
                .lines()
                .map(str::to_string)
                .collect()
        };
        for ws in &made.workspaces {
            let label = format!("label=dev.lks.workspace={}", ws.display());
            for c in ids(&["ps", "-aq", "--filter", &label]) {
                let _ = docker_unchecked(&["rm", "-f", "-v", &c]);
            }
            for n in ids(&["network", "ls", "-q", "--filter", &label]) {
                let _ = docker_unchecked(&["network", "rm", &n]);
            }
            for v in ids(&["volume", "ls", "-q", "--filter", &label]) {
                let _ = docker_unchecked(&["volume", "rm", "-f", &v]);
            }
        }
        for c in &made.containers {
            let _ = docker_unchecked(&["rm", "-f", "-v", c]);
        }
        for n in &made.networks {
            let _ = docker_unchecked(&["network", "rm", n]);
        }
        for v in &made.volumes {
            let _ = docker_unchecked(&["volume", "rm", "-f", v]);
        }
        // --no-prune: untagged parents stay, since another test's build
        // running now may be using one as its cache (a CI run failed with
        // "failed to set parent sha256:...: unknown parent image ID").
        for repo in &made.repos {
            for t in local_tags(repo) {
                let _ = docker_unchecked(&["rmi", "-f", "--no-prune", &t]);
            }
        }
        for i in &made.images {
            let _ = docker_unchecked(&["rmi", "-f", "--no-prune", i]);
        }
    }
}
