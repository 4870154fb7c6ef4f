//! The life cycle around `lks up --runtime docker`, checked against the real
//! engine and a real registry: dependencies run the registry's `latest`
//! (built and pushed once, pulled afterwards), dependents wait for their
//! dependencies' readiness and reach them by name, `lks down` removes what a
//! killed `lks up` left (and nothing else), a missing engine is a clear error,
//! and `lks registry start|status|stop` on a private port.
//!
//! Service names carry a random suffix: the shared registry on 127.0.0.1:5000
//! keeps its images between runs, and other tests use it at the same time (so
//! it is never stopped here; the registry tests run their own on a free port).

use lks_e2e::*;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

const BASE: &str = "lks/debian:bookworm";
const REGISTRY_IMAGE: &str = "lks/registry:2";
/// The registry `lks up` uses when `lks.yaml` names none.
const DEFAULT_REGISTRY: &str = "127.0.0.1:5000";
const DEFAULT_REGISTRY_CONTAINER: &str = "lks-registry-5000";

/// Now, as `docker events --since/--until` take it (`SECONDS.NANOS`).
fn docker_now() -> String {
    let n = now_nanos();
    format!("{}.{:09}", n / 1_000_000_000, n % 1_000_000_000)
}

/// A temporary workspace directory, as lks labels it (canonical path).
fn workspace() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().canonicalize().unwrap();
    (tmp, ws)
}

/// The index of the first line of `service` containing `needle`.
fn line_index(up: &mut Up, service: &str, needle: &str) -> usize {
    let prefix = format!("{service} ");
    up.drain()
        .iter()
        .position(|l| l.starts_with(&prefix) && l.contains(needle))
        .unwrap_or_else(|| panic!("no line of {service} with {needle:?}"))
}

/// A service running `sleep infinity` in an image from BASE holding its
/// directory (with a file unique to it) at /app.
fn sleeper(ws: &Path, name: &str, deps: &[&str], dockerfile_extra: &str) {
    let dir = ws.join(name);
    write(&dir, "id.txt", &format!("{name}\n"));
    write(
        &dir,
        "Dockerfile",
        &format!(
            "FROM {BASE}\nWORKDIR /app\nCOPY . .\n{dockerfile_extra}CMD [\"sleep\", \"infinity\"]\n"
        ),
    );
    write(
        &dir,
        "lks.service.yaml",
        &format!("name: {name}\ndeps: [{}]\n", deps.join(", ")),
    );
}

/// The workspace file listing `services` (each in its own directory).
fn workspace_file(ws: &Path, services: &[&str], registry: Option<&str>) {
    let list: Vec<String> = services
        .iter()
        .map(|s| format!("\"{s}/lks.service.yaml\""))
        .collect();
    let registry = registry
        .map(|r| format!("registry: {r}\n"))
        .unwrap_or_default();
    write(
        ws,
        "lks.yaml",
        &format!("{registry}services: [{}]\n", list.join(", ")),
    );
}

fn rfc3339_seconds(s: &str) -> f64 {
    humantime::parse_rfc3339(s.trim())
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------
// 1. A dependency's `latest`: built and pushed when missing, pulled afterwards
// ---------------------------------------------------------------------------

#[test]
fn a_dependency_latest_is_built_and_pushed_once_then_pulled_not_rebuilt() {
    require_image(BASE, "images/base/build.sh");
    let u = unique();
    let (front, back) = (format!("front-{u}"), format!("back-{u}"));
    let back_repo = format!("{DEFAULT_REGISTRY}/{back}");
    let (_tmp, ws) = workspace();
    let _cleanup = DockerCleanup(DockerObjects {
        workspaces: vec![ws.clone()],
        repos: vec![back_repo.clone(), format!("{DEFAULT_REGISTRY}/{front}")],
        ..Default::default()
    });
    workspace_file(&ws, &[&front, &back], None);
    sleeper(&ws, &back, &[], "");
    sleeper(&ws, &front, &[&back], "");

    // First run: nothing in the registry for back, so it is built and pushed.
    let t = Instant::now();
    let mut up = Up::start(&ws, &["--runtime", "docker", &front]);
    up.wait(&[&front, "[ready]"], Duration::from_secs(180));
    eprintln!("first run ready in {} ms", t.elapsed().as_millis());
    let lines = up.service_lines(&back);
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        has(&format!(
            "{back_repo}:latest is not in the registry; building it from the working tree"
        )),
        "{lines:#?}"
    );
    assert!(has(&format!("built {back_repo}:dev-")), "{lines:#?}");
    assert!(has("not live updated"), "back was not named: {lines:#?}");
    let first_container = up.container_of(&back);
    let first_id = docker_inspect(&first_container, "{{.Image}}");
    assert_eq!(
        docker_text(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("{back_repo}:latest")
        ]),
        first_id,
        "back's container does not run the image tagged latest"
    );
    // The registry has it now.
    let port: u16 = DEFAULT_REGISTRY
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let tags = http_status(port, &format!("/v2/{back}/tags/list"));
    assert!(
        tags.as_ref()
            .is_some_and(|(c, b)| *c == 200 && b.contains("\"latest\"")),
        "the registry has no {back}:latest: {tags:?}"
    );
    let status = up.terminate();
    assert!(status.success(), "{status:?}");

    // The engine forgets back's image: a second run can only get it from
    // the registry (or rebuild it, which it must not).
    let tags = local_tags(&back_repo);
    assert!(!tags.is_empty());
    for tag in &tags {
        // --no-prune: the parents may be another test's build cache now.
        docker(&["rmi", "--no-prune", tag]);
    }
    assert!(
        !docker_exists("image", &first_id),
        "image {first_id} still in the engine"
    );

    let since = docker_now();
    let t = Instant::now();
    let mut up = Up::start(&ws, &["--runtime", "docker", &front]);
    up.wait(&[&front, "[ready]"], Duration::from_secs(120));
    eprintln!("second run ready in {} ms", t.elapsed().as_millis());
    let until = docker_now();
    let lines = up.service_lines(&back);
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has(&format!("pulling {back_repo}:latest")), "{lines:#?}");
    assert!(
        has(&format!("Downloaded newer image for {back_repo}:latest")),
        "lks does not say it pulled back: {lines:#?}"
    );
    for not in ["not in the registry", "building", "built "] {
        assert!(!has(not), "back was built again ({not:?}): {lines:#?}");
    }
    let second_container = up.container_of(&back);
    assert_ne!(second_container, first_container);
    assert_eq!(
        docker_inspect(&second_container, "{{.Image}}"),
        first_id,
        "the second run's back is not the image the first run pushed"
    );
    // What the engine did with back's images meanwhile: one pull, no build
    // (a build tags its result) and no push.
    let events = docker_text(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=image",
        "--format",
        "{{.Action}} {{.Actor.ID}} {{index .Actor.Attributes \"name\"}}",
    ]);
    let back_events: Vec<&str> = events
        .lines()
        .filter(|l| l.contains(&format!("{back_repo}:")) || l.ends_with(&back_repo))
        .collect();
    assert!(
        back_events.iter().any(|l| l.starts_with("pull ")),
        "no pull of {back_repo} in the engine's events: {back_events:#?}"
    );
    assert!(
        back_events.iter().all(|l| l.starts_with("pull ")),
        "the engine did more than pull {back_repo}: {back_events:#?}"
    );
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

// ---------------------------------------------------------------------------
// 2. Dependencies: started after their readiness, reached by service name
// ---------------------------------------------------------------------------

#[test]
fn a_dependent_starts_after_its_dependency_is_ready_and_reaches_it_by_name() {
    require_image(BASE, "images/base/build.sh");
    let u = unique();
    let (slow, caller) = (format!("slow-{u}"), format!("caller-{u}"));
    let (slow_port, caller_port) = (free_port(), free_port());
    let (_tmp, ws) = workspace();
    let _cleanup = DockerCleanup(DockerObjects {
        workspaces: vec![ws.clone()],
        repos: vec![
            format!("{DEFAULT_REGISTRY}/{slow}"),
            format!("{DEFAULT_REGISTRY}/{caller}"),
        ],
        ..Default::default()
    });
    workspace_file(&ws, &[&caller, &slow], None);
    let node_dockerfile =
        format!("FROM {BASE}\nWORKDIR /app\nCOPY . .\nCMD [\"node\", \"server.js\"]\n");

    // slow listens only 2 s after it starts.
    let dir = ws.join(&slow);
    write(&dir, "Dockerfile", &node_dockerfile);
    write(
        &dir,
        "server.js",
        "const http = require(\"http\");\n\
         setTimeout(() => {\n\
         \x20 http.createServer((req, res) => res.end(\"slow says hi\\n\"))\n\
         \x20   .listen(Number(process.env.PORT), \"0.0.0.0\", () => console.log(\"slow listening\"));\n\
         }, 2000);\n",
    );
    write(
        &dir,
        "lks.service.yaml",
        &format!(
            "name: {slow}\nenv:\n  PORT: \"{slow_port}\"\nports: [{slow_port}]\n\
             readiness:\n  http: http://127.0.0.1:{slow_port}/\n"
        ),
    );
    // caller asks slow once when it starts (before it listens itself), and
    // on each GET /.
    let dir = ws.join(&caller);
    write(&dir, "Dockerfile", &node_dockerfile);
    write(
        &dir,
        "server.js",
        "const http = require(\"http\");\n\
         function ask(cb) {\n\
         \x20 http.get(process.env.SLOW_URL, (res) => {\n\
         \x20   let b = \"\";\n\
         \x20   res.on(\"data\", (c) => (b += c));\n\
         \x20   res.on(\"end\", () => cb(b.trim()));\n\
         \x20 }).on(\"error\", (e) => cb(\"error: \" + e.message));\n\
         }\n\
         let atStart = \"pending\";\n\
         ask((r) => { atStart = r; });\n\
         http.createServer((req, res) => {\n\
         \x20 if (req.url === \"/health\") return res.end(\"ok\\n\");\n\
         \x20 if (req.url === \"/at-start\") return res.end(atStart + \"\\n\");\n\
         \x20 ask((r) => res.end(\"caller got: \" + r + \"\\n\"));\n\
         }).listen(Number(process.env.PORT), \"0.0.0.0\");\n",
    );
    write(
        &dir,
        "lks.service.yaml",
        &format!(
            "name: {caller}\ndeps: [{slow}]\nenv:\n  PORT: \"{caller_port}\"\n  \
             SLOW_URL: \"http://${{host:{slow}}}:{slow_port}/\"\nports: [{caller_port}]\n\
             readiness:\n  http: http://127.0.0.1:{caller_port}/health\n"
        ),
    );

    let t = Instant::now();
    let mut up = Up::start(&ws, &["--runtime", "docker"]);
    up.wait(&[&caller, "[ready]"], Duration::from_secs(180));
    eprintln!("both ready in {} ms", t.elapsed().as_millis());

    // In lks's output: caller waited, and started only once slow was ready.
    let waiting = line_index(&mut up, &caller, &format!("[waiting for {slow}]"));
    let slow_ready = line_index(&mut up, &slow, "[ready]");
    let caller_starting = line_index(&mut up, &caller, "[starting]");
    assert!(
        waiting < slow_ready && slow_ready < caller_starting,
        "caller started before slow was ready:\n{}",
        up.drain().join("\n")
    );
    // In the engine: caller's container was created at least the 2 s slow
    // takes to listen after its container started.
    let (slow_c, caller_c) = (up.container_of(&slow), up.container_of(&caller));
    let slow_started = rfc3339_seconds(&docker_inspect(&slow_c, "{{.State.StartedAt}}"));
    let caller_created = rfc3339_seconds(&docker_inspect(&caller_c, "{{.Created}}"));
    eprintln!(
        "caller's container created {:.2} s after slow's started",
        caller_created - slow_started
    );
    assert!(
        caller_created - slow_started >= 2.0,
        "caller's container was created {:.2} s after slow's started, before slow could be ready",
        caller_created - slow_started
    );
    // The address caller was given is slow's service name, which resolves
    // on the run's network.
    let env = docker_inspect(&caller_c, "{{json .Config.Env}}");
    assert!(
        env.contains(&format!("SLOW_URL=http://{slow}:{slow_port}/")),
        "{env}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || http_get(
            caller_port,
            "/at-start"
        )
        .is_some_and(|b| b != "pending\n")),
        "caller's first call never finished"
    );
    assert_eq!(
        http_get(caller_port, "/at-start").as_deref(),
        Some("slow says hi\n"),
        "slow did not answer caller's first call, made as caller started"
    );
    assert_eq!(
        http_get(caller_port, "/").as_deref(),
        Some("caller got: slow says hi\n")
    );
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

// ---------------------------------------------------------------------------
// 3. `lks down` after a killed `lks up`
// ---------------------------------------------------------------------------

#[test]
fn down_removes_what_a_killed_up_left_and_nothing_else() {
    require_image(BASE, "images/base/build.sh");
    let u = unique();
    let name = format!("down-{u}");
    let (_tmp, ws) = workspace();
    let unrelated = format!("lks-e2e-unrelated-{u}");
    let other_ws = format!("lks-e2e-other-workspace-{u}");
    let ws_volume = format!("lks-e2e-workspace-volume-{u}");
    let _cleanup = DockerCleanup(DockerObjects {
        workspaces: vec![ws.clone()],
        containers: vec![unrelated.clone(), other_ws.clone()],
        networks: vec![unrelated.clone()],
        volumes: vec![unrelated.clone(), ws_volume.clone()],
        repos: vec![format!("{DEFAULT_REGISTRY}/{name}")],
        ..Default::default()
    });
    workspace_file(&ws, &[&name], None);
    // VOLUME: the container gets an anonymous volume, which goes with it.
    sleeper(&ws, &name, &[], "VOLUME /data\n");

    let mut up = Up::start(&ws, &["--runtime", "docker"]);
    up.wait(&[&name, "[ready]"], Duration::from_secs(180));
    let container = up.container_of(&name);
    let ws_label = docker_inspect(&container, "{{index .Config.Labels \"dev.lks.workspace\"}}");
    assert_eq!(ws_label, ws.display().to_string());
    let label = format!("dev.lks.workspace={ws_label}");
    let network = docker_inspect(
        &container,
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
    );
    let anonymous = docker_inspect(
        &container,
        "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}}{{end}}{{end}}",
    );
    assert!(!anonymous.is_empty(), "no volume for VOLUME /data");

    // SIGKILL: lks up cannot clean up.
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    assert_eq!(docker_inspect(&container, "{{.State.Running}}"), "true");
    assert_eq!(
        docker_ids(&["ps", "-a"], &label),
        vec![docker_inspect(&container, "{{.Id}}")[..12].to_string()]
    );
    assert!(docker_exists("network", &network), "{network}");

    // What lks down must leave alone: things without lks's labels, and
    // lks's things of another workspace. And a volume labelled for this
    // workspace, which it must remove.
    docker(&["run", "-d", "--name", &unrelated, BASE, "sleep", "300"]);
    docker(&["network", "create", &unrelated]);
    docker(&["volume", "create", &unrelated]);
    docker(&[
        "run",
        "-d",
        "--name",
        &other_ws,
        "--label",
        "dev.lks.managed=true",
        "--label",
        &format!("dev.lks.workspace=/nonexistent/{other_ws}"),
        BASE,
        "sleep",
        "300",
    ]);
    docker(&[
        "volume",
        "create",
        "--label",
        "dev.lks.managed=true",
        "--label",
        &label,
        &ws_volume,
    ]);

    let file = ws.join("lks.yaml");
    let file = file.to_str().unwrap();
    let (out, took) = run_lks(&["down", "-f", file], &[], Duration::from_secs(60));
    assert_success(&out);
    eprintln!("lks down took {} ms", took.as_millis());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("removed container {container} ({name})")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("removed network {network}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("removed volume {ws_volume}")),
        "{stdout}"
    );

    assert_eq!(docker_ids(&["ps", "-a"], &label), Vec::<String>::new());
    assert_eq!(docker_ids(&["network", "ls"], &label), Vec::<String>::new());
    assert_eq!(docker_ids(&["volume", "ls"], &label), Vec::<String>::new());
    assert!(!docker_exists("container", &container));
    assert!(!docker_exists("network", &network));
    assert!(
        !docker_exists("volume", &anonymous),
        "the container's anonymous volume {anonymous} outlived it"
    );
    assert_eq!(docker_inspect(&unrelated, "{{.State.Running}}"), "true");
    assert_eq!(docker_inspect(&other_ws, "{{.State.Running}}"), "true");
    assert!(docker_exists("network", &unrelated));
    assert!(docker_exists("volume", &unrelated));
    assert_eq!(
        docker_inspect(DEFAULT_REGISTRY_CONTAINER, "{{.State.Running}}"),
        "true",
        "lks down touched the registry"
    );

    // Again: nothing left to do.
    let (out, _) = run_lks(&["down", "-f", file], &[], Duration::from_secs(30));
    assert_success(&out);
    assert!(
        text(&out.stdout).contains("nothing to remove"),
        "{}",
        text(&out.stdout)
    );
}

// ---------------------------------------------------------------------------
// 4. No engine
// ---------------------------------------------------------------------------

const NO_ENGINE: (&str, &str) = ("DOCKER_HOST", "unix:///nonexistent.sock");

/// A workspace whose registry is on a free port (nothing answers there).
fn workspace_with_private_registry(ws: &Path, port: u16) {
    workspace_file(ws, &["s"], Some(&format!("127.0.0.1:{port}")));
    sleeper(ws, "s", &[], "");
}

fn assert_clear_engine_error(args: &[&str], out: &std::process::Output, took: Duration) {
    let stderr = text(&out.stderr);
    let all = format!("{}{stderr}", text(&out.stdout));
    assert!(
        !out.status.success(),
        "lks {args:?} succeeded without an engine: {all}"
    );
    assert_eq!(out.status.code(), Some(1), "lks {args:?}: {all}");
    assert!(took < Duration::from_secs(10), "lks {args:?} took {took:?}");
    for needle in [
        "cannot reach the Docker engine",
        "Start it with",
        "DOCKER_HOST",
    ] {
        assert!(
            stderr.contains(needle),
            "lks {args:?}: no {needle:?} in {all}"
        );
    }
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!all.contains(bad), "lks {args:?}: {bad:?} in {all}");
    }
}

#[test]
fn without_an_engine_up_down_and_registry_start_stop_fail_fast_and_say_how_to_start_it() {
    let (_tmp, ws) = workspace();
    workspace_with_private_registry(&ws, free_port());
    let file = ws.join("lks.yaml");
    let file = file.to_str().unwrap();
    let env = [NO_ENGINE, ("RUST_BACKTRACE", "1")];
    for args in [
        &["up", "-f", file, "--runtime", "docker"][..],
        &["up", "-f", file, "--runtime", "docker", "s"][..],
        &["down", "-f", file][..],
        &["registry", "start", "-f", file][..],
        &["registry", "stop", "-f", file][..],
        &["registry", "stop", "--purge", "-f", file][..],
    ] {
        let (out, took) = run_lks(args, &env, Duration::from_secs(30));
        eprintln!("lks {args:?} failed in {} ms", took.as_millis());
        assert_clear_engine_error(args, &out, took);
    }
}

#[test]
fn without_an_engine_registry_status_says_the_engine_is_unreachable() {
    let (_tmp, ws) = workspace();
    workspace_with_private_registry(&ws, free_port());
    let file = ws.join("lks.yaml");
    let args = ["registry", "status", "-f", file.to_str().unwrap()];
    let (out, took) = run_lks(
        &args,
        &[NO_ENGINE, ("RUST_BACKTRACE", "1")],
        Duration::from_secs(30),
    );
    assert_clear_engine_error(&args, &out, took);
}

// ---------------------------------------------------------------------------
// 5. `lks registry start|status|stop` on a private port
// ---------------------------------------------------------------------------

/// A workspace whose registry is 127.0.0.1:PORT, and the guard that removes
/// that registry's container and volume.
fn private_registry() -> (tempfile::TempDir, String, u16, DockerCleanup) {
    require_image(REGISTRY_IMAGE, "images/registry/build.sh");
    let (tmp, ws) = workspace();
    let port = free_port();
    workspace_with_private_registry(&ws, port);
    let cleanup = DockerCleanup(DockerObjects {
        containers: vec![format!("lks-registry-{port}")],
        volumes: vec![format!("lks-registry-{port}-data")],
        ..Default::default()
    });
    let file = ws.join("lks.yaml").to_str().unwrap().to_string();
    (tmp, file, port, cleanup)
}

fn registry_cmd(file: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["registry"];
    all.extend(args);
    all.extend(["-f", file]);
    run_lks(&all, &[], Duration::from_secs(60)).0
}

fn catalog(port: u16) -> Option<(u16, String)> {
    http_status(port, "/v2/_catalog")
}

#[test]
fn registry_start_status_stop_and_purge_on_a_private_port() {
    let (_tmp, file, port, mut cleanup) = private_registry();
    let (container, volume) = (
        format!("lks-registry-{port}"),
        format!("lks-registry-{port}-data"),
    );
    let address = format!("127.0.0.1:{port}");

    let t = Instant::now();
    let out = registry_cmd(&file, &["start"]);
    assert_success(&out);
    eprintln!("registry start: {} ms", t.elapsed().as_millis());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("creating the registry container {container}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("registry ready at {address}")),
        "{stdout}"
    );
    assert_eq!(docker_inspect(&container, "{{.State.Running}}"), "true");
    assert_eq!(
        docker_inspect(&container, "{{index .Config.Labels \"dev.lks.registry\"}}"),
        address
    );
    assert_eq!(
        docker_inspect(
            &container,
            "{{range (index .HostConfig.PortBindings \"5000/tcp\")}}{{.HostIp}}:{{.HostPort}}{{end}}"
        ),
        address,
        "published elsewhere than 127.0.0.1:{port}"
    );
    assert!(docker_exists("volume", &volume));
    assert_eq!(
        http_status(port, "/v2/").map(|(c, _)| c),
        Some(200),
        "GET /v2/"
    );
    let out = registry_cmd(&file, &["status"]);
    assert_success(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("running") && stdout.contains(&address),
        "{stdout}"
    );

    // A second start changes nothing.
    let before = (
        docker_inspect(&container, "{{.Id}}"),
        docker_inspect(&container, "{{.State.StartedAt}}"),
    );
    let out = registry_cmd(&file, &["start"]);
    assert_success(&out);
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("creating") && !stdout.contains("starting"),
        "{stdout}"
    );
    assert_eq!(
        (
            docker_inspect(&container, "{{.Id}}"),
            docker_inspect(&container, "{{.State.StartedAt}}")
        ),
        before,
        "the second start replaced or restarted the container"
    );

    // An image in it, to see whether it survives a stop.
    let probe = format!("{address}/probe-{}:1", unique());
    cleanup.0.images.push(probe.clone());
    docker(&["tag", REGISTRY_IMAGE, &probe]);
    docker(&["push", "-q", &probe]);
    let repo = probe.split('/').nth(1).unwrap().split(':').next().unwrap();
    assert!(
        catalog(port).is_some_and(|(_, b)| b.contains(repo)),
        "{:?}",
        catalog(port)
    );

    // stop: the container goes, the volume (with the image) stays.
    let out = registry_cmd(&file, &["stop"]);
    assert_success(&out);
    assert!(
        !docker_exists("container", &container),
        "{}",
        text(&out.stdout)
    );
    assert!(
        docker_exists("volume", &volume),
        "stop without --purge removed the volume"
    );
    assert_eq!(http_status(port, "/v2/"), None, "something still answers");
    let out = registry_cmd(&file, &["status"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not running") && stderr.contains("lks registry start"),
        "{stderr}"
    );

    // start again: the image is still there.
    let out = registry_cmd(&file, &["start"]);
    assert_success(&out);
    assert!(
        catalog(port).is_some_and(|(_, b)| b.contains(repo)),
        "the image did not survive stop + start: {:?}",
        catalog(port)
    );

    // stop --purge: container and volume go.
    let out = registry_cmd(&file, &["stop", "--purge"]);
    assert_success(&out);
    assert!(!docker_exists("container", &container));
    assert!(
        !docker_exists("volume", &volume),
        "stop --purge kept the volume: {}",
        text(&out.stdout)
    );
    let out = registry_cmd(&file, &["status"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not running") && stderr.contains("lks registry start"),
        "{stderr}"
    );
    for bad in ["panicked", "backtrace"] {
        assert!(!stderr.contains(bad), "{stderr}");
    }
}

#[test]
fn registry_stop_purge_after_stop_deletes_the_volume() {
    let (_tmp, file, port, _cleanup) = private_registry();
    let volume = format!("lks-registry-{port}-data");
    assert_success(&registry_cmd(&file, &["start"]));
    assert_success(&registry_cmd(&file, &["stop"]));
    assert!(docker_exists("volume", &volume));
    let out = registry_cmd(&file, &["stop", "--purge"]);
    assert_success(&out);
    assert!(
        !docker_exists("volume", &volume),
        "stop --purge kept {volume}: {}",
        text(&out.stdout)
    );
}

#[test]
fn down_that_removes_only_a_volume_does_not_say_nothing_was_removed() {
    let (_tmp, ws) = workspace();
    workspace_file(&ws, &["s"], None);
    sleeper(&ws, "s", &[], "");
    let volume = format!("lks-e2e-workspace-volume-{}", unique());
    let _cleanup = DockerCleanup(DockerObjects {
        volumes: vec![volume.clone()],
        ..Default::default()
    });
    docker(&[
        "volume",
        "create",
        "--label",
        "dev.lks.managed=true",
        "--label",
        &format!("dev.lks.workspace={}", ws.display()),
        &volume,
    ]);
    let file = ws.join("lks.yaml");
    let (out, _) = run_lks(
        &["down", "-f", file.to_str().unwrap()],
        &[],
        Duration::from_secs(30),
    );
    assert_success(&out);
    assert!(!docker_exists("volume", &volume));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("removed volume {volume}")),
        "{stdout}"
    );
    assert!(!stdout.contains("nothing to remove"), "{stdout}");
}

#[test]
fn a_service_whose_image_does_not_build_says_why_and_starts_once_its_dockerfile_is_fixed() {
    require_image(BASE, "images/base/build.sh");
    let u = unique();
    let name = format!("broken-{u}");
    let (_tmp, ws) = workspace();
    let _cleanup = DockerCleanup(DockerObjects {
        workspaces: vec![ws.clone()],
        repos: vec![format!("{DEFAULT_REGISTRY}/{name}")],
        ..Default::default()
    });
    workspace_file(&ws, &[&name], None);
    sleeper(&ws, &name, &[], "RUN echo cannot build >&2; exit 3\n");

    let mut up = Up::start(&ws, &["--runtime", "docker", &name]);
    // The build's own words, under the service, and a retry (a build error
    // is worth retrying: the next start reads the Dockerfile again).
    let failed = up.wait(&[&name, "did not start"], Duration::from_secs(120));
    assert!(
        failed.contains("exit 3") || failed.contains("code: 3"),
        "{failed}"
    );
    up.wait(&[&name, "starting again in"], Duration::from_secs(10));
    sleeper(&ws, &name, &[], "");
    up.wait(&[&name, "[ready]"], Duration::from_secs(120));
    let lines = up.service_lines(&name);
    assert!(
        !lines.iter().any(|l| l.contains("not starting it again")),
        "{lines:#?}"
    );
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}
