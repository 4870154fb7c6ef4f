//! The static `lks-agent` in a `FROM scratch` image (no shell, no tar, nothing
//! but the agent): `lks sync` fills the running container's root, and a batch
//! restarts its app. This is the foundation of the docker runtime (issue 4).
//!
//! Needs the Docker engine and the static agent; `tests/run.sh` installs and
//! starts the one and builds the other
//! (`RUSTFLAGS="-C target-feature=+crt-static" cargo build -p lks-agent --target x86_64-unknown-linux-gnu`).

use lks_e2e::*;
use lks_proto::v1::agent_client::AgentClient;
use lks_proto::v1::{ApplyRequest, Commit, HelloRequest, Step, apply_request::Op};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

const TOKEN: &str = "docker-scratch-token";
const APP_TOKEN: &str = "the-app-token";

fn static_agent() -> PathBuf {
    let debug = bin("lks-agent").parent().unwrap().to_path_buf();
    let target = debug.parent().unwrap();
    let path = target.join("x86_64-unknown-linux-gnu/debug/lks-agent");
    assert!(
        path.exists(),
        "{} is missing: build the static agent with \
         RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p lks-agent --target x86_64-unknown-linux-gnu \
         (tests/run.sh does)",
        path.display()
    );
    path
}

fn docker(args: &[&str]) -> Output {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker ({e}): tests/run.sh installs docker.io and starts dockerd")
        });
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Removes the container and the image, whatever happens.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["rmi", "-f", "--no-prune", &self.image])
            .output();
    }
}

fn host_port(container: &str, port: &str) -> String {
    let out = docker(&["port", container, port]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().unwrap_or_default().trim().to_string()
}

async fn boot_id(url: &str, token: &str) -> Option<String> {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut req = tonic::Request::new(HelloRequest {
        protocol_version: lks_proto::PROTOCOL_VERSION,
        client_version: "e2e".into(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    Some(
        AgentClient::new(channel)
            .hello(req)
            .await
            .ok()?
            .into_inner()
            .boot_id,
    )
}

/// Sends a batch that is only `commit`; the agent's result.
async fn commit_only(url: &str, commit: Commit) -> lks_proto::v1::ApplyResult {
    let channel = agent_channel(url).await;
    let op = ApplyRequest {
        op: Some(Op::Commit(commit)),
    };
    let mut req = tonic::Request::new(tokio_stream::iter(vec![op]));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    AgentClient::new(channel)
        .apply(req)
        .await
        .expect("apply")
        .into_inner()
}

async fn restart(url: &str) {
    let commit = Commit {
        batch_id: "restart".into(),
        restart: true,
        ..Default::default()
    };
    let result = commit_only(url, commit).await;
    assert!(
        result.restarted,
        "not restarted: {:?}",
        result.restart_skipped
    );
}

/// A batch whose only step is `sh:`-style (`/bin/sh -c`): in an image with
/// no shell it fails, saying so and what to write instead.
async fn shell_step_fails_clearly(url: &str) {
    let commit = Commit {
        batch_id: "shell".into(),
        steps: vec![Step {
            argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let result = commit_only(url, commit).await;
    let step = &result.steps[0];
    assert!(!step.success, "{result:?}");
    assert!(
        step.error.contains("the image has no shell") && step.error.contains("`cmd:`"),
        "{}",
        step.error
    );
}

async fn wait_boot_id(container: &str, url: &str, token: &str, not: Option<&str>) -> String {
    for _ in 0..200 {
        if let Some(id) = boot_id(url, token).await
            && Some(id.as_str()) != not
        {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = Command::new("docker")
        .args(["logs", container])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout)
        })
        .unwrap_or_default();
    panic!("the app at {url} never answered (with a new boot id); the container's log:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_from_scratch_container_is_synced_and_its_app_restarted_without_shell_or_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(static_agent(), ctx.join("lks-agent")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY lks-agent /lks-agent\nENTRYPOINT [\"/lks-agent\"]\n",
    )
    .unwrap();
    let id = format!("{:08x}", rand::random::<u32>());
    let cleanup = Cleanup {
        container: format!("lks-e2e-scratch-{id}"),
        image: format!("lks-e2e-scratch:{id}"),
    };
    docker(&["build", "-q", "-t", &cleanup.image, ctx.to_str().unwrap()]);
    // The image's only program is the agent; its app is a second agent whose
    // token file must first be synced in (so it can only start afterwards).
    docker(&[
        "run",
        "-d",
        "--name",
        &cleanup.container,
        "--label",
        "lks.e2e=1",
        "-p",
        "127.0.0.1::7690",
        "-p",
        "127.0.0.1::7691",
        "-e",
        &format!("LKS_TOKEN={TOKEN}"),
        &cleanup.image,
        "supervise",
        "--root",
        "/app",
        "--listen",
        "0.0.0.0:7690",
        "--no-start",
        "--",
        "/lks-agent",
        "serve",
        "--root",
        "/app/data",
        "--listen",
        "0.0.0.0:7691",
        "--token-file",
        "/app/app-token",
    ]);
    let agent_url = format!("http://{}", host_port(&cleanup.container, "7690"));
    let app_url = format!("http://{}", host_port(&cleanup.container, "7691"));
    // No shell and no tar in there: what Tilt-style syncs need is missing.
    let sh = Command::new("docker")
        .args(["exec", &cleanup.container, "sh", "-c", "true"])
        .output()
        .unwrap();
    assert!(!sh.status.success(), "the image has a shell");

    let src = tmp.path().join("src");
    generate_tree(&src, 200, 400_000, 11);
    std::fs::write(src.join("app-token"), APP_TOKEN).unwrap();
    let mut synced = None;
    for _ in 0..100 {
        let out = sync_once(&src, &agent_url, TOKEN, &[]);
        if out.status.success() {
            synced = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let synced = synced.expect("lks sync never succeeded against the container");
    assert!(
        String::from_utf8_lossy(&synced.stdout).contains("synced: 201 files"),
        "{synced:?}"
    );

    shell_step_fails_clearly(&agent_url).await;
    restart(&agent_url).await;
    let first = wait_boot_id(&cleanup.container, &app_url, APP_TOKEN, None).await;
    // A change, synced, then a restart: a new app process.
    std::fs::write(src.join("d0/s0/f0.dat"), b"changed in the container").unwrap();
    let out = sync_once(&src, &agent_url, TOKEN, &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("synced: 1 files"),
        "{out:?}"
    );
    restart(&agent_url).await;
    let second = wait_boot_id(&cleanup.container, &app_url, APP_TOKEN, Some(&first)).await;
    assert_ne!(first, second);
    // The file really is in the container (read by the daemon, not by a tool inside).
    let cat = docker(&[
        "cp",
        &format!("{}:/app/d0/s0/f0.dat", cleanup.container),
        "-",
    ]);
    assert!(String::from_utf8_lossy(&cat.stdout).contains("changed in the container"));
    drop(cleanup);
}
