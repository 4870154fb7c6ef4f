//! The agent's limits: a file over the size limit and a batch with too many
//! operations are refused with clear errors, and the agent keeps serving.

use lks_e2e::*;
use lks_proto::limits::{MAX_FILE_BYTES, MAX_OPS_PER_BATCH};
use lks_proto::v1::agent_client::AgentClient;
use lks_proto::v1::{ApplyRequest, ApplyResult, Commit, ErrorCode, Mkdir, Put, apply_request::Op};

const TOKEN: &str = "limits-token";

async fn apply(url: &str, ops: Vec<ApplyRequest>) -> Result<ApplyResult, tonic::Status> {
    let mut req = tonic::Request::new(tokio_stream::iter(ops));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    AgentClient::new(agent_channel(url).await)
        .apply(req)
        .await
        .map(|r| r.into_inner())
}

fn op(op: Op) -> ApplyRequest {
    ApplyRequest { op: Some(op) }
}

fn commit() -> ApplyRequest {
    op(Op::Commit(Commit {
        batch_id: "limits".into(),
        ..Default::default()
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_size_limit_is_refused_and_the_rest_of_the_batch_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let agent = Agent::start(&root, TOKEN);
    let huge = op(Op::Put(Put {
        path: "huge.bin".into(),
        size: MAX_FILE_BYTES + 1,
        mode: 0o644,
        ..Default::default()
    }));
    let after = op(Op::Mkdir(Mkdir {
        path: "after".into(),
        mode: 0o755,
    }));
    let r = apply(&agent.url, vec![huge, after, commit()])
        .await
        .expect("apply");
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    assert_eq!(r.errors[0].code, ErrorCode::TooLarge as i32);
    assert!(
        r.errors[0].message.contains("over the limit"),
        "{}",
        r.errors[0].message
    );
    assert!(!root.join("huge.bin").exists());
    assert!(root.join("after").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_too_many_operations_is_refused_and_the_agent_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let agent = Agent::start(&root, TOKEN);
    let n = MAX_OPS_PER_BATCH as usize + 1;
    let mut ops: Vec<ApplyRequest> = (0..n)
        .map(|_| {
            op(Op::Mkdir(Mkdir {
                path: "same".into(),
                mode: 0o755,
            }))
        })
        .collect();
    ops.push(commit());
    let err = apply(&agent.url, ops)
        .await
        .expect_err("the batch was accepted");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("split it into several batches"),
        "{err:?}"
    );
    // Still serving.
    let r = apply(
        &agent.url,
        vec![
            op(Op::Mkdir(Mkdir {
                path: "ok".into(),
                mode: 0o755,
            })),
            commit(),
        ],
    )
    .await
    .expect("a normal batch after the refused one");
    assert!(r.errors.is_empty());
    assert!(root.join("ok").is_dir());
}
