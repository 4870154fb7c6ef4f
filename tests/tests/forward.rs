//! `Forward` through a real `lks-agent`: bytes both ways to a port of the
//! agent's loopback, each side's close passed on, a port nobody listens on
//! and a wrong token refused in words.

use lks_e2e::*;
use lks_proto::v1::ForwardData;
use lks_proto::v1::agent_client::AgentClient;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const TOKEN: &str = "forward-token";

fn request(
    rx: mpsc::Receiver<ForwardData>,
    token: &str,
) -> tonic::Request<ReceiverStream<ForwardData>> {
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

fn data(port: u16, bytes: &[u8]) -> ForwardData {
    ForwardData {
        port: port.into(),
        data: bytes.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_and_closes_cross_in_both_directions() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(root.path(), TOKEN);
    // The app: reads until the host closes its side, answers what it got
    // upper-cased, then closes.
    let app = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = app.local_addr().unwrap().port();
    let served = std::thread::spawn(move || {
        let (mut s, _) = app.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&got.to_ascii_uppercase()).unwrap();
        got
    });
    let mut client = AgentClient::new(agent_channel(&agent.url).await);
    let (tx, rx) = mpsc::channel(4);
    tx.send(data(port, b"hello ")).await.unwrap();
    tx.send(data(0, &vec![b'x'; 200_000])).await.unwrap();
    let mut answer = client
        .forward(request(rx, TOKEN))
        .await
        .expect("forward")
        .into_inner();
    // The host closes its side: the app reads to its end.
    drop(tx);
    let mut back = Vec::new();
    while let Some(m) = answer.message().await.expect("the answer") {
        back.extend(m.data);
    }
    let got = served.join().unwrap();
    assert_eq!(got.len(), 6 + 200_000);
    assert_eq!(back, got.to_ascii_uppercase(), "the app's answer, whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_closing_first_ends_the_answer_while_the_host_still_holds_its_side() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(root.path(), TOKEN);
    let app = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = app.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut s, _) = app.accept().unwrap();
        s.write_all(b"bye").unwrap();
    });
    let mut client = AgentClient::new(agent_channel(&agent.url).await);
    let (tx, rx) = mpsc::channel(4);
    tx.send(data(port, b"")).await.unwrap();
    let mut answer = client
        .forward(request(rx, TOKEN))
        .await
        .unwrap()
        .into_inner();
    let mut back = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = answer.message().await.unwrap() {
            back.extend(m.data);
        }
    })
    .await;
    assert!(ended.is_ok(), "the answer did not end when the app closed");
    assert_eq!(back, b"bye");
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nobody_listens_on_and_a_wrong_token_are_refused_in_words() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(root.path(), TOKEN);
    let port = free_port();
    let mut client = AgentClient::new(agent_channel(&agent.url).await);
    let (tx, rx) = mpsc::channel(4);
    tx.send(data(port, b"")).await.unwrap();
    let e = client.forward(request(rx, TOKEN)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(
        e.message()
            .contains(&format!("nothing listens on port {port}")),
        "{e}"
    );
    let (tx, rx) = mpsc::channel(4);
    tx.send(data(port, b"")).await.unwrap();
    let e = client.forward(request(rx, "wrong")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
}
