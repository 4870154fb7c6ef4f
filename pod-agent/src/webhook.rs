//! `lks-agent webhook`: a mutating admission webhook (HTTPS, HTTP/1.1) that
//! injects the agent into pods annotated `lks.dev/agent: "true"` as they are
//! created, with [`lks_k8s::inject::inject`].
//!
//! `POST /mutate` takes an `AdmissionReview` (`admission.k8s.io/v1`) and answers
//! one with the same `uid`, always `allowed: true` (a webhook of a dev tool
//! never blocks a pod), and a base64 JSONPatch when the pod changed. A pod that
//! cannot get the agent (no `command`: the webhook cannot read images) gets a
//! warning instead. `GET /healthz` answers 200.

use anyhow::Context;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use lks_k8s::inject::{self, InjectOptions, Outcome};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// The only AdmissionReview version spoken.
const ADMISSION_API: &str = "admission.k8s.io/v1";

/// Largest request body accepted (an AdmissionReview carries a pod or two).
const MAX_BODY: usize = 16 << 20;

/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client gets to send a request's headers; also how long an idle
/// keep-alive connection stays open (hyper's default).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// `lks-agent webhook`'s arguments.
#[derive(clap::Args)]
pub struct WebhookArgs {
    /// PEM file with the server certificate (followed by its chain, if any).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub tls_key: PathBuf,
    /// Address to listen on. Port 0 picks a free port.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// The agent image injected pods copy the agent from (their init container's image).
    #[arg(long, value_name = "IMAGE")]
    pub agent_image: String,
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.agent_image.trim().is_empty(),
        "--agent-image must name an image"
    );
    let tls = tls_config(&args.tls_cert, &args.tls_key)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let opts = Arc::new(InjectOptions {
        agent_image: args.agent_image,
    });
    let shutdown = super::shutdown_signal(false)?;
    tokio::pin!(shutdown);
    tracing::info!(agent_image = %opts.agent_image, "admission webhook serving POST /mutate");
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(
                        "{peer}: TLS handshake failed (this port speaks HTTPS only): {e}"
                    );
                    return;
                }
                Err(_) => {
                    tracing::warn!("{peer}: TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let opts = opts.clone();
                async move { Ok::<_, Infallible>(handle(req, &opts, peer).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("{peer}: connection ended: {e}");
            }
        });
    }
}

/// The server's TLS configuration (ring, TLS 1.2 and 1.3, HTTP/1.1 only).
fn tls_config(cert: &Path, key_file: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("cannot read the private key {}", key_file.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .with_context(|| {
        format!(
            "cannot use the certificate {} with the key {}",
            cert.display(),
            key_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One HTTP request.
async fn handle(
    req: Request<Incoming>,
    opts: &InjectOptions,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::POST, "/mutate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                    tracing::warn!("{peer}: refused a request of more than {MAX_BODY} bytes");
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("request body larger than {MAX_BODY} bytes\n"),
                    );
                }
                Err(e) => {
                    tracing::warn!("{peer}: cannot read the request: {e}");
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot read the request body: {e}\n"),
                    );
                }
            };
            match review(&body, opts) {
                Ok(Reviewed { response, log }) => {
                    tracing::info!("{log}");
                    let mut r = Response::new(Full::new(Bytes::from(response.to_string())));
                    r.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    r
                }
                Err(e) => {
                    tracing::warn!("{peer}: bad AdmissionReview: {e}");
                    text(StatusCode::BAD_REQUEST, &format!("{e}\n"))
                }
            }
        }
        (_, "/healthz" | "/mutate") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        (_, path) => text(
            StatusCode::NOT_FOUND,
            &format!("no such path {path:?}: POST /mutate or GET /healthz\n"),
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The answer to a well-formed AdmissionReview.
#[derive(Debug)]
struct Reviewed {
    /// The AdmissionReview to send back.
    response: Value,
    /// The log line: `namespace/name: outcome`.
    log: String,
}

/// Answers an AdmissionReview; `Err` says why the body is not one (HTTP 400).
fn review(body: &[u8], opts: &InjectOptions) -> Result<Reviewed, String> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let field = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    if !review.is_object() {
        return Err("the body is not an AdmissionReview (a JSON object)".into());
    }
    match (field(&review, "apiVersion"), field(&review, "kind")) {
        (Some(api), Some(kind)) if api == ADMISSION_API && kind == "AdmissionReview" => {}
        (api, kind) => {
            return Err(format!(
                "expected an AdmissionReview of {ADMISSION_API}, got kind {} of {} \
                 (the webhook configuration must say admissionReviewVersions: [v1])",
                kind.as_deref().unwrap_or("(none)"),
                api.as_deref().unwrap_or("(none)")
            ));
        }
    }
    let request = review
        .get("request")
        .filter(|r| r.is_object())
        .ok_or("the AdmissionReview has no `request` object")?;
    let uid = field(request, "uid")
        .filter(|u| !u.is_empty())
        .ok_or("the AdmissionReview has no `request.uid`")?;
    let operation = field(request, "operation").unwrap_or_else(|| "CREATE".into());
    let mut response = json!({"uid": uid, "allowed": true});
    let who = who(request);
    let answer = |response: Value, outcome: &str| Reviewed {
        response: json!({"apiVersion": ADMISSION_API, "kind": "AdmissionReview", "response": response}),
        log: format!("{who}: {outcome}"),
    };
    // A pod's spec cannot change after its creation: only CREATE is mutated.
    if operation != "CREATE" {
        return Ok(answer(response, &format!("{operation}: allowed unchanged")));
    }
    let mut original = request
        .get("object")
        .filter(|o| o.is_object())
        .cloned()
        .ok_or("the AdmissionReview has no `request.object`")?;
    // The API server always sends kind and apiVersion; fill them from the request if not.
    if original.get("kind").is_none() {
        let group_version_kind = request.get("kind").cloned().unwrap_or(Value::Null);
        if let Some(kind) = field(&group_version_kind, "kind") {
            original["kind"] = json!(kind);
            if original.get("apiVersion").is_none() {
                let group = field(&group_version_kind, "group").unwrap_or_default();
                let version = field(&group_version_kind, "version").unwrap_or_default();
                original["apiVersion"] = json!(if group.is_empty() {
                    version
                } else {
                    format!("{group}/{version}")
                });
            }
        }
    }
    let mut mutated = original.clone();
    // The webhook cannot read images: a pod without `command` gets a warning.
    let outcome = inject::inject(&mut mutated, opts, &|_| None);
    let log = match outcome {
        Ok(Outcome::Injected) => {
            let patch = json_patch::diff(&original, &mutated);
            let patch =
                serde_json::to_vec(&patch).map_err(|e| format!("cannot encode the patch: {e}"))?;
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64(&patch));
            "injected".to_string()
        }
        Ok(Outcome::AlreadyInjected) => "already injected".into(),
        Ok(Outcome::NotAnnotated) => "not annotated".into(),
        Err(e) => {
            response["warnings"] = json!([format!("lks: agent not injected: {e}")]);
            format!("not injected: {e}")
        }
    };
    Ok(answer(response, &log))
}

/// `namespace/name` of the object under review, for the log.
fn who(request: &Value) -> String {
    fn s(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|s| !s.is_empty())
    }
    let meta = request.pointer("/object/metadata");
    let namespace = s(request.get("namespace"))
        .or_else(|| s(meta.and_then(|m| m.get("namespace"))))
        .unwrap_or("-");
    let name = match (
        s(meta.and_then(|m| m.get("name"))).or_else(|| s(request.get("name"))),
        s(meta.and_then(|m| m.get("generateName"))),
    ) {
        (Some(name), _) => name.to_string(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => "(unnamed)".into(),
    };
    format!("{namespace}/{name}")
}

/// Standard base64 with padding (RFC 4648), as AdmissionReview's `patch` wants.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> InjectOptions {
        InjectOptions {
            agent_image: "lks-agent:test".into(),
        }
    }

    fn admission(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "dev",
                "operation": "CREATE",
                "object": object,
            },
        }))
        .unwrap()
    }

    fn pod(annotations: Value, container: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "annotations": annotations},
            "spec": {"containers": [container]},
        })
    }

    #[test]
    fn injected_pod_gets_a_patch() {
        let p = pod(
            json!({"lks.dev/agent": "true"}),
            json!({"name": "web", "image": "web:1", "command": ["web"]}),
        );
        let r = review(&admission(p), &opts()).unwrap();
        let resp = &r.response["response"];
        assert_eq!(r.response["apiVersion"], ADMISSION_API);
        assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["patchType"], "JSONPatch");
        assert!(resp["patch"].as_str().unwrap().len() > 100);
        assert_eq!(r.log, "dev/web: injected");
    }

    #[test]
    fn no_patch_when_not_annotated_or_on_update() {
        let p = pod(
            json!({}),
            json!({"name": "web", "image": "web:1", "command": ["web"]}),
        );
        let r = review(&admission(p), &opts()).unwrap();
        assert_eq!(
            r.response["response"],
            json!({"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true})
        );
        assert_eq!(r.log, "dev/web: not annotated");

        let p = pod(
            json!({"lks.dev/agent": "true"}),
            json!({"name": "web", "image": "web:1", "command": ["web"]}),
        );
        let mut body: Value = serde_json::from_slice(&admission(p)).unwrap();
        body["request"]["operation"] = json!("UPDATE");
        let r = review(&serde_json::to_vec(&body).unwrap(), &opts()).unwrap();
        assert!(r.response["response"].get("patch").is_none());
    }

    #[test]
    fn pod_without_command_gets_a_warning() {
        let p = pod(
            json!({"lks.dev/agent": "true"}),
            json!({"name": "web", "image": "web:1"}),
        );
        let r = review(&admission(p), &opts()).unwrap();
        let resp = &r.response["response"];
        assert_eq!(resp["allowed"], true);
        assert!(resp.get("patch").is_none());
        let warning = resp["warnings"][0].as_str().unwrap();
        assert!(warning.contains("set `command`"), "{warning}");
    }

    #[test]
    fn malformed_reviews_are_errors() {
        for (body, expected) in [
            (&b"not json"[..], "not JSON"),
            (b"[]", "not an AdmissionReview"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\"}", "admissionReviewVersions"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", "no `request`"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"object\":{}}}", "request.uid"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"1\"}}", "request.object"),
        ] {
            let e = review(body, &opts()).unwrap_err();
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }
}
