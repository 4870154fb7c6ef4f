//! `lks up --runtime docker`, `lks down` and `lks registry` against the real
//! Docker engine and a real registry (images built offline, nothing pulled
//! from Docker Hub). `tests/run.sh` installs and starts dockerd, builds the
//! static agent and the test images (`images/base/build.sh`,
//! `images/registry/build.sh`).

use lks_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BASE: &str = "lks/debian:bookworm";

/// Builds a static Go HTTP server into `dir/server`: it reads
/// `/app/message.txt` once at start and answers it on `port` of the
/// container's loopback only (reached from the host through the agent, as
/// `kubectl port-forward` reaches a pod's).
fn go_server(dir: &Path, port: u16) {
    write(
        dir,
        "src/main.go",
        &format!(
            "package main\n\
             import (\"net/http\"; \"os\")\n\
             func main() {{\n\
             \tmsg, err := os.ReadFile(\"/app/message.txt\")\n\
             \tif err != nil {{ panic(err) }}\n\
             \thttp.HandleFunc(\"/\", func(w http.ResponseWriter, r *http.Request) {{ w.Write(msg) }})\n\
             \tpanic(http.ListenAndServe(\"127.0.0.1:{port}\", nil))\n\
             }}\n"
        ),
    );
    write(dir, "src/go.mod", "module server\n\ngo 1.19\n");
    let out = Command::new("go")
        .args(["build", "-o", "../server", "."])
        .current_dir(dir.join("src"))
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", std::env::temp_dir().join("lks-e2e-gocache"))
        .output()
        .expect("go is needed for this test (tests/run.sh installs golang-go)");
    assert_success(&out);
}

#[test]
fn a_from_scratch_service_without_shell_or_tar_runs_its_entrypoint_and_is_live_updated() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    let name = format!("scratch-{}", unique());
    // The registry keeps its copy; names are unique per run.
    let _images = DockerCleanup(DockerObjects {
        repos: vec![format!("127.0.0.1:5000/{name}")],
        ..Default::default()
    });
    write(
        ws,
        "lks.yaml",
        &format!("services: [\"{name}/lks.service.yaml\"]\n"),
    );
    let dir = ws.join(&name);
    go_server(&dir, port);
    write(&dir, "content/message.txt", "one\n");
    write(&dir, "content/old.txt", "deleted later\n");
    // What the image's build made in /app and the host never had.
    write(&dir, "built/generated.txt", "made by the build\n");
    write(
        &dir,
        "Dockerfile",
        // Its CMD is not what runs: the service's `entrypoint:` is.
        "FROM scratch\nCOPY server /server\nCOPY built/ /app/\nCOPY content/ /app/\nCMD [\"/not-here\"]\n",
    );
    write(&dir, ".dockerignore", "src\n");
    write(
        &dir,
        "lks.service.yaml",
        &format!(
            "name: {name}\nentrypoint: [/server]\nports: [{port}]\nreadiness:\n  http: http://127.0.0.1:{port}/\n\
             live_update:\n  sync:\n    - {{ local: content, remote: . }}\n  restart: on-change\n"
        ),
    );
    let mut up = Up::start(ws, &["--runtime", "docker"]);
    up.wait(&[&name, "[ready]"], Duration::from_secs(120));
    assert_eq!(http_get(port, "/").as_deref(), Some("one\n"));
    // The image has no shell and no tar: the agent writes the file itself.
    let container = up.container_of(&name);
    let sh = docker_unchecked(&["exec", &container, "sh", "-c", "true"]);
    assert!(!sh.status.success(), "the image was meant to have no shell");
    // The first sync left the image's own files alone...
    let in_container = |p: &str| {
        docker_unchecked(&["cp", &format!("{container}:/app/{p}"), "-"])
            .status
            .success()
    };
    assert!(
        in_container("generated.txt"),
        "the first sync deleted a file only the image had"
    );
    // ...while a deletion on the host is mirrored.
    assert!(in_container("old.txt"));
    std::fs::remove_file(dir.join("content/old.txt")).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || !in_container("old.txt")),
        "a file deleted on the host stayed in the container"
    );
    assert!(in_container("generated.txt"));
    let t = Instant::now();
    write(&dir, "content/message.txt", "two\n");
    assert!(
        wait_until(Duration::from_secs(20), || http_get(port, "/").as_deref()
            == Some("two\n")),
        "the response never changed: {:?}\n{}",
        http_get(port, "/"),
        up.drain().join("\n")
    );
    eprintln!(
        "edit -> new response in a FROM scratch container: {} ms",
        t.elapsed().as_millis()
    );
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        !docker_exists("container", &container),
        "the container {container} outlived lks up"
    );
}

/// A tcp check of a port lks forwards is not fooled by lks's own listener
/// on the host, which accepts at once: the service is ready only once the
/// app in its container listens. (The check connects through the agent; a
/// check from the host, kept open 100 ms, also passes this test, since the
/// agent's connect is refused at once here: what tells them apart is an
/// agent whose connect takes longer than that.)
#[test]
fn a_tcp_readiness_check_of_a_forwarded_port_waits_for_the_app_in_its_container() {
    require_image(BASE, "images/base/build.sh");
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let port = free_port();
    let name = format!("late-{}", unique());
    let _images = DockerCleanup(DockerObjects {
        repos: vec![format!("127.0.0.1:5000/{name}")],
        ..Default::default()
    });
    write(
        ws,
        "lks.yaml",
        &format!("services: [\"{name}/lks.service.yaml\"]\n"),
    );
    let dir = ws.join(&name);
    write(
        &dir,
        "Dockerfile",
        &format!("FROM {BASE}\nWORKDIR /app\nCOPY . .\nCMD [\"python3\", \"late.py\"]\n"),
    );
    // Listens on the container's loopback, four seconds after it starts.
    write(
        &dir,
        "late.py",
        &format!(
            "import http.server, time\n\
             time.sleep(4)\n\
             http.server.HTTPServer(('127.0.0.1', {port}), \
             http.server.SimpleHTTPRequestHandler).serve_forever()\n"
        ),
    );
    write(&dir, "index.html", "late\n");
    write(
        &dir,
        "lks.service.yaml",
        &format!(
            "name: {name}\nports: [{port}]\nreadiness:\n  tcp: 127.0.0.1:{port}\n\
             live_update:\n  sync:\n    - {{ local: ., remote: . }}\n"
        ),
    );
    let mut up = Up::start(ws, &["--runtime", "docker"]);
    let said = up.wait(&[&name, "[ready]"], Duration::from_secs(120));
    assert_eq!(
        http_get(port, "/index.html").as_deref(),
        Some("late\n"),
        "ready before the app listened: {said}\n{}",
        up.drain().join("\n")
    );
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_node_and_python_examples_run_in_containers_and_are_live_updated() {
    require_image(BASE, "images/base/build.sh");
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    copy_web_and_api_examples(ws);
    let mut up = Up::start(
        ws,
        &[
            "--runtime",
            "docker",
            "frontend",
            "--local",
            "web",
            "--local",
            "api",
        ],
    );
    up.wait(&["web", "[ready]"], Duration::from_secs(300));
    // web reaches api by its service name on the run's network.
    assert_eq!(
        http_get(18080, "/").as_deref(),
        Some("hello from web; api says: hello from api\n")
    );

    // Edit the Node handler: the new response.
    let server = ws.join("web/server.js");
    let text = std::fs::read_to_string(&server).unwrap();
    std::fs::write(
        &server,
        text.replace("hello from web", "hello again from web"),
    )
    .unwrap();
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || http_get(18080, "/")
            .is_some_and(|b| b.starts_with("hello again from web"))),
        "the response never changed: {:?}\n{}",
        http_get(18080, "/"),
        up.drain().join("\n")
    );
    eprintln!(
        "edit -> new response in a Node container: {} ms",
        t.elapsed().as_millis()
    );

    // A requirements change runs the pip step inside the api container.
    let req = ws.join("api/requirements.txt");
    let mut text = std::fs::read_to_string(&req).unwrap();
    text.push_str("# touched by the test\n");
    std::fs::write(&req, text).unwrap();
    let line = up.wait(&["api", "synced", "step 1 ok"], Duration::from_secs(60));
    assert!(line.contains("restarted"), "{line}");

    // A Dockerfile change rebuilds the image and replaces the container.
    let before = (up.container_of("web"), up.image_of("web"));
    let dockerfile = ws.join("web/Dockerfile");
    let mut text = std::fs::read_to_string(&dockerfile).unwrap();
    text.push_str("LABEL touched=by-the-test\n");
    std::fs::write(&dockerfile, text).unwrap();
    up.wait(
        &["web", "rebuilding", "Dockerfile changed"],
        Duration::from_secs(30),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let now = (up.container_of("web"), up.image_of("web"));
        if now.1 != before.1 || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(
        after.1, before.1,
        "no new image after the Dockerfile changed"
    );
    let label = docker_inspect(&after.0, "{{index .Config.Labels \"touched\"}}");
    assert_eq!(label, "by-the-test", "the new container runs the new image");
    up.wait(&["web", "[ready]"], Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(20), || http_get(18080, "/")
            .is_some_and(|b| b.starts_with("hello again from web"))),
        "the rebuilt web does not serve the edited handler"
    );

    let run_label = docker_inspect(&after.0, "{{index .Config.Labels \"dev.lks.run\"}}");
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
    let label = format!("dev.lks.run={run_label}");
    assert_eq!(
        docker_ids(&["ps", "-a"], &label),
        Vec::<String>::new(),
        "containers left behind"
    );
    assert_eq!(
        docker_ids(&["network", "ls"], &label),
        Vec::<String>::new(),
        "network left behind"
    );
}

#[test]
fn lks_builds_and_pushes_the_agent_image() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin("lks"))
        .args(["agent-image", "--push"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let version = env!("CARGO_PKG_VERSION");
    let reference = format!("127.0.0.1:5000/lks-agent:{version}");
    assert!(stdout.lines().any(|l| l == reference), "{stdout}");
    // In the registry...
    let tags = http_get(5000, "/v2/lks-agent/tags/list").unwrap_or_default();
    assert!(tags.contains(version) && tags.contains("latest"), "{tags}");
    // ...and it is nothing but the static agent, which runs.
    let run = docker_text(&["run", "--rm", &reference, "--version"]);
    assert_eq!(run, format!("lks-agent {version}"));
    let layers = docker_text(&["history", "-q", &reference]);
    assert!(!layers.is_empty());
}
