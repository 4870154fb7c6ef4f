//! The kube client calls against kube's tower_test mock: each test plays
//! the API server, answering the requests lks makes with the responses a
//! real server gives (discovery documents, server-side apply results,
//! rollout statuses, pod lists), and checks what lks asked.

use super::apply::{self, Applied};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tonic::codegen::http::{Method, Request, Response, StatusCode};
use tower_test::mock::{self, Handle};

type ApiServer = Handle<Request<Body>, Response<Body>>;

fn client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

/// The next request: method, path with query, content type, body as JSON
/// (Null when empty); answered with `answer`.
async fn expect(
    server: &mut ApiServer,
    answer: impl FnOnce(&Method, &str, &Value) -> Response<Body>,
) -> (Method, String, String, Value) {
    let (req, send) = server.next_request().await.expect("a request");
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let ctype = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(answer(&method, &uri, &body));
    (method, uri, ctype, body)
}

/// The apps/v1 discovery document, as a 1.34 API server serves it (trimmed
/// to the resources these tests use).
fn apps_v1() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
        "resources": [
            {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment",
             "verbs": ["create","delete","deletecollection","get","list","patch","update","watch"],
             "shortNames": ["deploy"], "categories": ["all"]},
            {"name": "deployments/status", "singularName": "", "namespaced": true, "kind": "Deployment",
             "verbs": ["get","patch","update"]},
            {"name": "statefulsets", "singularName": "statefulset", "namespaced": true, "kind": "StatefulSet",
             "verbs": ["create","delete","deletecollection","get","list","patch","update","watch"]}
        ]
    })
}

fn deployment(generation: i64, status: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": generation,
                     "uid": "6b0c7a9e-3f1e-4f0e-9d1c-1f2e3d4c5b6a", "resourceVersion": "1042",
                     "labels": {"lks.dev/managed": "true"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "localhost:5000/web:dev-1"}]}}},
        "status": status
    })
}

#[tokio::test]
async fn apply_discovers_the_resource_and_server_side_applies_as_lks() {
    let (client, mut server) = client();
    let object = deployment(1, Value::Null);
    let object_in = object.clone();
    let task = tokio::spawn(async move { apply::apply(&client, "default", &object_in).await });
    let (m, uri, _, _) = expect(&mut server, |_, _, _| {
        json_response(StatusCode::OK, &apps_v1())
    })
    .await;
    assert_eq!((m, uri.as_str()), (Method::GET, "/apis/apps/v1"));
    let (m, uri, ctype, body) = expect(&mut server, |_, _, body| {
        let mut answer = body.clone();
        answer["metadata"]["generation"] = 1.into();
        answer["metadata"]["uid"] = "6b0c7a9e".into();
        json_response(StatusCode::OK, &answer)
    })
    .await;
    assert_eq!(m, Method::PATCH);
    assert!(
        uri.starts_with("/apis/apps/v1/namespaces/default/deployments/web?"),
        "{uri}"
    );
    assert!(
        uri.contains("fieldManager=lks") && uri.contains("force=true"),
        "{uri}"
    );
    assert_eq!(ctype, "application/apply-patch+yaml");
    assert_eq!(body, object, "the object is sent as rendered");
    let applied = task.await.unwrap().unwrap();
    assert_eq!(applied.describe(), "Deployment default/web");
    assert_eq!(applied.object["metadata"]["uid"], "6b0c7a9e");
}

#[tokio::test]
async fn a_kind_the_cluster_does_not_serve_is_a_clear_error() {
    let (client, mut server) = client();
    let mut object = deployment(1, Value::Null);
    object["kind"] = "Rollout".into();
    let task = tokio::spawn(async move { apply::apply(&client, "default", &object).await });
    expect(&mut server, |_, _, _| {
        json_response(StatusCode::OK, &apps_v1())
    })
    .await;
    let err = format!("{:#}", task.await.unwrap().unwrap_err());
    assert!(err.contains("does not serve Rollout in apps/v1"), "{err}");
}

fn applied_web() -> Applied {
    Applied {
        resource: kube::discovery::ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        },
        namespaced: true,
        namespace: "default".into(),
        name: "web".into(),
        object: deployment(2, json!({})),
    }
}

#[tokio::test]
async fn the_rollout_is_waited_for_until_the_new_generation_is_ready() {
    let (client, mut server) = client();
    let task = tokio::spawn(async move {
        apply::wait_rollout(&client, &applied_web(), None, &|_: &str| {}).await
    });
    // Not observed yet; then observed but the new pod not ready; then done.
    let statuses = [
        json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 0, "readyReplicas": 1}),
        json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1}),
        json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
               "availableReplicas": 1}),
    ];
    for s in statuses {
        let (m, uri, _, _) = expect(&mut server, |_, _, _| {
            json_response(StatusCode::OK, &deployment(2, s.clone()))
        })
        .await;
        assert_eq!(
            (m, uri.as_str()),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/default/deployments/web"
            )
        );
    }
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_stalled_rollout_says_why() {
    let (client, mut server) = client();
    let task = tokio::spawn(async move {
        apply::wait_rollout(&client, &applied_web(), None, &|_: &str| {}).await
    });
    let status = json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                        "message": "ReplicaSet \"web-7d9\" has timed out progressing."}]});
    expect(&mut server, |_, _, _| {
        json_response(StatusCode::OK, &deployment(2, status))
    })
    .await;
    let err = format!("{:#}", task.await.unwrap().unwrap_err());
    assert!(
        err.contains("stalled") && err.contains("timed out progressing"),
        "{err}"
    );
}

#[tokio::test]
async fn deleting_something_already_gone_is_fine() {
    let (client, mut server) = client();
    let task = tokio::spawn(async move { apply::delete(&client, &applied_web()).await });
    let (m, uri, _, body) = expect(&mut server, |_, _, _| {
        json_response(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "deployments.apps \"web\" not found", "reason": "NotFound",
                    "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 404}),
        )
    })
    .await;
    assert_eq!(m, Method::DELETE);
    assert_eq!(uri, "/apis/apps/v1/namespaces/default/deployments/web?");
    assert_eq!(body["propagationPolicy"], "Background");
    task.await.unwrap().unwrap();
}

#[test]
fn pod_selectors_come_from_the_workload() {
    assert_eq!(
        lks_k8s::labels::pod_selector(&deployment(1, Value::Null)).as_deref(),
        Some("app=web")
    );
    let p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"app": "web"}}});
    assert_eq!(
        lks_k8s::labels::pod_selector(&p).as_deref(),
        Some("app=web")
    );
    assert_eq!(
        lks_k8s::labels::pod_selector(&json!({"kind": "Service"})),
        None
    );
}

/// The real `lks-agent` next to this test binary (target/debug).
fn agent_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(|d| d.parent()).unwrap();
    let agent = debug.join("lks-agent");
    assert!(
        agent.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (tests/run.sh does)",
        agent.display()
    );
    agent
}

#[tokio::test]
async fn grpc_to_the_agent_runs_over_a_stream_that_is_not_tcp() {
    use crate::tunnel::{DialFuture, Dialer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncBufReadExt;
    let root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(local.path().join("src")).unwrap();
    std::fs::write(
        local.path().join("src/app.js"),
        "console.log('over a pipe')\n",
    )
    .unwrap();
    std::fs::write(local.path().join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    let mut agent = tokio::process::Command::new(agent_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(root.path())
        .env("LKS_TOKEN", "pipe-token")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(agent.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let addr = line.strip_prefix("listening on ").unwrap().to_string();
    // Like a port-forward: the client end is an in-memory pipe, and the far
    // end is carried to the agent's loopback port in small pieces.
    let dials = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = dials.clone();
    let dialer = Dialer::Custom {
        name: "an in-memory pipe".into(),
        dial: std::sync::Arc::new(move || -> DialFuture {
            let addr = addr.clone();
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let (ours, theirs) = tokio::io::duplex(1024);
                let tcp = tokio::net::TcpStream::connect(addr.as_str()).await?;
                tokio::spawn(async move {
                    let (mut theirs, mut tcp) = (theirs, tcp);
                    let _ = tokio::io::copy_bidirectional(&mut theirs, &mut tcp).await;
                });
                Ok(Box::new(ours) as Box<dyn crate::tunnel::Stream>)
            })
        }),
    };
    let mut session = crate::session::Session::open_with(&dialer, "pipe-token")
        .await
        .unwrap();
    let mut source = crate::source::Source::new(local.path(), &[]);
    source.rescan();
    session
        .fetch_manifest(&source.ignores, &source.tree.nodes)
        .await
        .unwrap();
    let (ops, problems) = crate::plan::plan(&mut source.tree, session.remote());
    assert!(problems.is_empty(), "{problems:?}");
    let report = session.apply(&source.tree, ops).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        std::fs::read_to_string(root.path().join("src/app.js")).unwrap(),
        "console.log('over a pipe')\n"
    );
    assert_eq!(
        std::fs::read(root.path().join("big.bin")).unwrap(),
        vec![7u8; 3 << 20]
    );
    assert_eq!(dials.load(Ordering::SeqCst), 1);
    // A wrong token is refused through the pipe too.
    let refused = crate::session::Session::open_with(&dialer, "wrong").await;
    match refused {
        Err(crate::session::SessionError::Unauthenticated { .. }) => {}
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a wrong token was accepted"),
    }
}
