//! Readiness checks of `lks up` (local runtime) through the real CLI: an
//! `https://` check probes a service with a self-signed certificate (as a
//! Kubernetes `httpGet` probe with `scheme: HTTPS` does, without verifying
//! it), and a plain-HTTP answer to an https check is not ready.

use lks_e2e::*;
use std::path::Path;
use std::time::Duration;

/// A Python HTTPS server on `port` answering `ok`, with a fresh self-signed
/// certificate for 127.0.0.1 in `dir`.
fn https_service(dir: &Path, port: u16) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), signing_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("app.py"),
        format!(
            "import http.server, ssl\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       self.send_response(200)\n\
             \x20       self.send_header('Content-Length', '2')\n\
             \x20       self.end_headers()\n\
             \x20       self.wfile.write(b'ok')\n\
             server = http.server.HTTPServer(('127.0.0.1', {port}), H)\n\
             ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
             ctx.load_cert_chain('cert.pem', 'key.pem')\n\
             server.socket = ctx.wrap_socket(server.socket, server_side=True)\n\
             server.serve_forever()\n"
        ),
    )
    .unwrap();
}

fn workspace(ws: &Path, command: &str, port: u16, timeout: &str) {
    std::fs::write(
        ws.join("lks.yaml"),
        format!(
            "services:\n  - name: secure\n    dir: secure\n    command: {command}\n    ports: [{port}]\n    \
             readiness:\n      http: https://127.0.0.1:{port}/\n      timeout: {timeout}\n"
        ),
    )
    .unwrap();
}

#[test]
fn an_https_readiness_check_probes_a_self_signed_service() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    https_service(&tmp.path().join("secure"), port);
    workspace(tmp.path(), "python3 app.py", port, "30s");
    let mut up = Up::start(tmp.path(), &["--runtime", "local"]);
    let line = up.wait(&["secure", "[ready]"], Duration::from_secs(40));
    assert!(line.contains("[ready]"), "{line}");
    let said = up.drain().join("\n");
    assert!(!said.contains("only http://"), "{said}");
    up.terminate();
}

#[test]
fn a_plain_http_answer_to_an_https_check_is_not_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::create_dir_all(tmp.path().join("secure")).unwrap();
    workspace(
        tmp.path(),
        &format!("python3 -m http.server {port} --bind 127.0.0.1"),
        port,
        "3s",
    );
    let mut up = Up::start(tmp.path(), &["--runtime", "local"]);
    let line = up.wait(&["secure", "[error"], Duration::from_secs(40));
    assert!(line.contains("not ready after 3s"), "{line}");
    assert!(!up.drain().iter().any(|l| l.contains("[ready]")));
    up.terminate();
}
