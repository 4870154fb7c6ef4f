//! `lks up --debug`: the app runs under its debugger, a real client attaches
//! (Node's inspector protocol over its WebSocket), and live updates go on:
//! after an edit the new process is under the debugger again.

use futures::{SinkExt, StreamExt};
use lks_e2e::*;
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn server(dir: &Path, port: u16, version: &str, counter: u32) {
    write(
        dir,
        "server.js",
        &format!(
            "globalThis.counter = {counter};\n\
             require('http').createServer((q, r) => r.end('{version}'))\n\
               .listen({port}, '127.0.0.1');\n"
        ),
    );
}

/// Attaches to the inspector on `port` and evaluates `expression` in the
/// app; its value.
fn evaluate(port: u16, expression: &str) -> serde_json::Value {
    let list = http11_get(port, "/json/list").expect("the inspector answers /json/list");
    let targets: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    // Its webSocketDebuggerUrl takes the host from our Host header (no port).
    let id = targets[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no target in {list}"));
    let url = format!("ws://127.0.0.1:{port}/{id}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("WebSocket to the inspector");
        let call = serde_json::json!({
            "id": 1,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true},
        });
        ws.send(Message::text(call.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("an answer within 10 s")
                .expect("the socket is open")
                .unwrap();
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == 1 {
                    return v["result"]["result"]["value"].clone();
                }
            }
        }
    })
}

#[test]
fn a_node_app_under_debug_is_attached_to_and_stays_debuggable_across_live_updates() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().canonicalize().unwrap();
    let (port, inspect) = (free_port(), free_port());
    write(&ws, "lks.yaml", "services: [svc/lks.service.yaml]\n");
    write(
        &ws,
        "svc/lks.service.yaml",
        &format!(
            "name: svc\ncommand: node server.js\ndebug: {{port: {inspect}}}\n\
             readiness:\n  tcp: 127.0.0.1:{port}\n"
        ),
    );
    let svc = ws.join("svc");
    server(&svc, port, "v1", 41);
    let mut up = Up::start(&ws, &["--debug", "svc"]);
    let said = up.wait(
        &[
            "svc",
            &format!("debugging with Node inspector on 127.0.0.1:{inspect}"),
        ],
        Duration::from_secs(30),
    );
    up.wait(&["\"request\": \"attach\""], Duration::from_secs(5));
    up.wait(&["svc", "[ready]"], Duration::from_secs(60));
    assert_eq!(http_get(port, "/").as_deref(), Some("v1"), "{said}");
    assert_eq!(evaluate(inspect, "counter + 1"), serde_json::json!(42));

    // An edit restarts the app, under the debugger again.
    server(&svc, port, "v2", 99);
    assert!(
        wait_until(Duration::from_secs(20), || http_get(port, "/").as_deref()
            == Some("v2")),
        "the edit never arrived\n{}",
        up.drain().join("\n")
    );
    assert!(
        wait_until(Duration::from_secs(10), || http11_get(
            inspect,
            "/json/list"
        )
        .is_some()),
        "the new process is not under the debugger"
    );
    assert_eq!(evaluate(inspect, "counter + 1"), serde_json::json!(100));
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_command_lks_cannot_debug_says_what_to_write() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    write(ws, "lks.yaml", "services: [svc/lks.service.yaml]\n");
    write(ws, "svc/lks.service.yaml", "name: svc\ncommand: ./run.sh\n");
    let out = std::process::Command::new(bin("lks"))
        .args(["up", "--debug", "svc", "-f"])
        .arg(ws.join("lks.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot tell which debugger runs `./run.sh`") && err.contains("debug:"),
        "{err}"
    );
}

#[test]
fn in_a_container_the_debugger_is_chosen_from_the_images_cmd_and_its_port_forwarded() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().canonicalize().unwrap();
    let (port, inspect) = (free_port(), free_port());
    let name = format!("debug-{}", unique());
    let _images = DockerCleanup(DockerObjects {
        repos: vec![format!("127.0.0.1:5000/{name}")],
        ..Default::default()
    });
    write(
        &ws,
        "lks.yaml",
        &format!("services: [\"{name}/lks.service.yaml\"]\n"),
    );
    let dir = ws.join(&name);
    server(&dir, port, "v1", 41);
    write(
        &dir,
        "Dockerfile",
        "FROM lks/debian:bookworm\nWORKDIR /app\nCOPY server.js .\nCMD [\"node\", \"server.js\"]\n",
    );
    // No `command`: the image's CMD says node.
    write(
        &dir,
        "lks.service.yaml",
        &format!(
            "name: {name}\nports: [{port}]\ndebug: {{port: {inspect}}}\n\
             readiness:\n  tcp: 127.0.0.1:{port}\n"
        ),
    );
    let mut up = Up::start(&ws, &["--runtime", "docker", "--debug", &name]);
    up.wait(
        &[&name, "debugging with Node inspector on 127.0.0.1"],
        Duration::from_secs(120),
    );
    up.wait(&["\"remoteRoot\": \"/app\""], Duration::from_secs(5));
    up.wait(&[&name, "[ready]"], Duration::from_secs(180));
    // The app and its inspector listen on the container's 127.0.0.1: both
    // reached through the agent. Ready means the app accepted a connection
    // there (the agent made it), not that lks's own listener did.
    assert_eq!(
        http_get(port, "/").as_deref(),
        Some("v1"),
        "no answer through the forwarded port once ready\n{}",
        up.drain().join("\n")
    );
    assert_eq!(evaluate(inspect, "counter + 1"), serde_json::json!(42));
    server(&dir, port, "v2", 99);
    assert!(
        wait_until(Duration::from_secs(30), || http_get(port, "/").as_deref()
            == Some("v2")),
        "the edit never arrived\n{}",
        up.drain().join("\n")
    );
    assert!(wait_until(Duration::from_secs(10), || http11_get(
        inspect,
        "/json/list"
    )
    .is_some()));
    assert_eq!(evaluate(inspect, "counter + 1"), serde_json::json!(100));
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn in_a_pod_the_app_runs_under_its_debugger_without_its_liveness_probe() {
    let Some(k) = lks_e2e::kube::cluster("in_a_pod_the_app_runs_under_its_debugger") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let (web, _) = lks_e2e::kube::examples_on_free_ports(ws);
    let inspect = free_port();
    // A liveness probe would kill an app stopped at a breakpoint.
    replace_in_files(
        ws,
        &[
            (
                "          readinessProbe:\n",
                "          livenessProbe:\n            tcpSocket: {port: 1}\n          \
                 readinessProbe:\n"
                    .into(),
            ),
            (
                "k8s: [k8s/*.yaml]\n",
                format!("k8s: [k8s/*.yaml]\ndebug: {{port: {inspect}}}\n"),
            ),
        ],
    );
    let ns = k.namespace();
    let n = &ns.name;
    let mut up = k.up(ws, &["--namespace", n, "--debug", "web", "frontend"]);
    up.wait(
        &[
            "web",
            &format!("debugging with Node inspector on 127.0.0.1:{inspect}"),
        ],
        Duration::from_secs(60),
    );
    up.wait(&["\"remoteRoot\": \"/app\""], Duration::from_secs(5));
    up.wait(&["web ", "[ready]"], Duration::from_secs(300));
    let container = |field: &str| {
        k.jsonpath(
            n,
            "deploy/web",
            &format!("{{.spec.template.spec.containers[0].{field}}}"),
        )
    };
    let command = container("command");
    assert!(
        command.contains("supervise")
            && command.contains(&format!("--inspect=127.0.0.1:{inspect}")),
        "{command}"
    );
    assert_eq!(container("livenessProbe"), "", "the liveness probe stayed");
    // The inspector listens on the pod's 127.0.0.1, reached through the
    // forwarded port.
    assert!(
        wait_until(Duration::from_secs(30), || http11_get(
            inspect,
            "/json/list"
        )
        .is_some()),
        "the inspector does not answer through the forwarded port\n{}",
        up.drain().join("\n")
    );
    assert_eq!(evaluate(inspect, "6 * 7"), serde_json::json!(42));
    let pid = evaluate(inspect, "process.pid");
    // An edit restarts the app in the pod, under the debugger again.
    lks_e2e::kube::set_greeting(ws, "hello under the debugger");
    assert!(
        wait_until(Duration::from_secs(60), || http11_get(web, "/")
            .is_some_and(|b| b.contains("hello under the debugger"))),
        "the edit never arrived\n{}",
        up.drain().join("\n")
    );
    assert!(
        wait_until(Duration::from_secs(20), || http11_get(
            inspect,
            "/json/list"
        )
        .is_some()),
        "the new process is not under the debugger"
    );
    assert_ne!(
        evaluate(inspect, "process.pid"),
        pid,
        "the same process answers"
    );
    assert!(up.terminate().success());
}

/// One DAP message (Content-Length framing), written.
fn dap_send(s: &mut std::net::TcpStream, v: &serde_json::Value) {
    use std::io::Write;
    let body = v.to_string();
    write!(s, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
}

/// The next DAP message read.
fn dap_read(r: &mut std::io::BufReader<std::net::TcpStream>) -> serde_json::Value {
    use std::io::{BufRead, Read};
    let mut len = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("a DAP header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(n) = line.strip_prefix("Content-Length: ") {
            len = n.parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn a_python_app_under_debug_answers_a_dap_client() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().canonicalize().unwrap();
    let (port, dap) = (free_port(), free_port());
    write(&ws, "lks.yaml", "services: [api/lks.service.yaml]\n");
    write(
        &ws,
        "api/lks.service.yaml",
        &format!(
            "name: api\ncommand: python3 app.py\ndebug: {{port: {dap}}}\n\
             readiness:\n  tcp: 127.0.0.1:{port}\n"
        ),
    );
    write(
        &ws,
        "api/app.py",
        &format!(
            "import http.server\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       self.send_response(200); self.end_headers(); self.wfile.write(b'py')\n\
             http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
        ),
    );
    let mut up = Up::start(&ws, &["--debug", "api"]);
    up.wait(
        &[
            "api",
            &format!("debugging with debugpy (DAP) on 127.0.0.1:{dap}"),
        ],
        Duration::from_secs(30),
    );
    up.wait(&["api", "[ready]"], Duration::from_secs(60));
    assert_eq!(http_get(port, "/").as_deref(), Some("py"));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", dap)).expect("debugpy listens");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    dap_send(
        &mut s,
        &serde_json::json!({"seq": 1, "type": "request", "command": "initialize",
            "arguments": {"adapterID": "debugpy", "clientID": "lks-e2e"}}),
    );
    let answer = loop {
        let m = dap_read(&mut r);
        if m["type"] == "response" && m["request_seq"] == 1 {
            break m;
        }
    };
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["command"], "initialize");
    drop(s);
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}
