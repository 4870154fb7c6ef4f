//! The kube runtime against a real kind cluster. No cluster can run on the
//! machines lks is developed on, so these are `#[ignore = "needs cluster"]`;
//! with Docker, `kind` and `kubectl` on PATH (and internet for kind's node
//! image and ingress-nginx), run them with:
//!
//! ```sh
//! cargo build --workspace --bins
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build -p lks-agent --target x86_64-unknown-linux-gnu
//! cargo test -p lks-e2e --test kube_cluster -- --ignored --test-threads=1
//! ```
//!
//! They create the cluster `lks-e2e` (and delete it at the end).

use lks_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CLUSTER: &str = "lks-e2e";

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// The examples (web, api) with a workspace naming the e2e cluster.
fn examples(dst: &Path) {
    copy_examples(dst, &["worker"]);
    write(
        dst,
        "lks.yaml",
        &format!(
            "services: [\"web/lks.service.yaml\", \"api/lks.service.yaml\"]\n\
             aliases: {{ frontend: [web] }}\n\
             cluster: {{ name: {CLUSTER}, kubernetes_version: {K8S_VERSION} }}\n"
        ),
    );
}

#[test]
#[ignore = "needs cluster"]
fn live_update_in_a_kind_cluster_follows_a_replaced_pod() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    examples(ws);
    let file = ws.join("lks.yaml");
    let file = file.to_str().unwrap();
    assert_success(&run(
        bin("lks").to_str().unwrap(),
        &["cluster", "create", "-f", file],
    ));
    struct DeleteCluster(String);
    impl Drop for DeleteCluster {
        fn drop(&mut self) {
            let _ = Command::new(bin("lks"))
                .args(["cluster", "delete", "-f", &self.0])
                .status();
        }
    }
    let _cluster = DeleteCluster(file.to_string());
    assert_success(&run(
        bin("lks").to_str().unwrap(),
        &["cluster", "status", "-f", file],
    ));

    let mut up = Up::start(ws, &["--runtime", "kube", "frontend", "--local", "web"]);
    up.wait(&["web", "[ready]"], Duration::from_secs(600));
    // 127.0.0.1:18080 is a port-forward to the web pod.
    assert_eq!(
        http_get(18080, "/").as_deref(),
        Some("hello from web; api says: hello from api\n")
    );
    let edit = |text: &str| {
        let server = ws.join("web/server.js");
        let js = std::fs::read_to_string(&server).unwrap();
        let start = js.find("const greeting = ").unwrap();
        let end = start + js[start..].find('\n').unwrap();
        let js = format!("{}const greeting = {text:?};{}", &js[..start], &js[end..]);
        std::fs::write(&server, js).unwrap();
    };
    edit("hello from a pod");
    let t = Instant::now();
    assert!(wait_until(Duration::from_secs(30), || {
        http_get(18080, "/").is_some_and(|b| b.starts_with("hello from a pod"))
    }));
    eprintln!(
        "edit -> new response in a pod: {} ms",
        t.elapsed().as_millis()
    );

    // Replace the pod: lks follows the new one, resyncs, and edits flow again.
    assert_success(&run(
        "kubectl",
        &["delete", "pod", "-l", "app=web", "--wait=false"],
    ));
    up.wait(&["web", "reconnecting"], Duration::from_secs(60));
    up.wait(&["web", "synced"], Duration::from_secs(300));
    edit("hello from the new pod");
    assert!(wait_until(Duration::from_secs(60), || {
        http_get(18080, "/").is_some_and(|b| b.starts_with("hello from the new pod"))
    }));

    assert!(up.terminate().success());
    let gone = run(
        "kubectl",
        &[
            "get",
            "deployment",
            "web",
            "--ignore-not-found",
            "-o",
            "name",
        ],
    );
    assert!(
        String::from_utf8_lossy(&gone.stdout).trim().is_empty(),
        "lks up left web applied"
    );
}
