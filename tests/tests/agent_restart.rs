//! An agent that restarted is always noticed, through the real binaries:
//! `lks sync` resyncs against what the new agent has even when nothing
//! changes on the host, and a batch planned against the old agent is refused
//! whole by the new one (so the host never applies a stale plan).

use lks_e2e::raw::{Batch, Client};
use lks_e2e::*;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "agent-restart-token";

fn converged(src: &Path, dst: &Path) -> bool {
    diff(&snapshot(src), &snapshot(dst)).is_empty()
}

#[test]
fn an_idle_agent_that_restarted_without_some_files_gets_them_back_unasked() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src, "a.txt", "alpha\n");
    write(&src, "sub/b.txt", "beta\n");
    let mut agent = Agent::start(&dst, TOKEN);
    let addr = agent.addr.clone();
    let mut watch = Watch::spawn(&src, &agent.url, TOKEN, &[]);
    watch.wait_line("initial sync", Duration::from_secs(30));
    assert!(wait_until(Duration::from_secs(10), || converged(
        &src, &dst
    )));
    // The agent restarts while nothing changes here, and its root lost
    // files meanwhile (a container's fresh root).
    agent.kill();
    std::fs::remove_file(dst.join("a.txt")).unwrap();
    std::fs::remove_dir_all(dst.join("sub")).unwrap();
    let _agent = Agent::start_on(&dst, TOKEN, &addr);
    assert!(
        wait_until(Duration::from_secs(20), || converged(&src, &dst)),
        "the restarted agent's root stays without the files: {:?}",
        diff(&snapshot(&src), &snapshot(&dst))
    );
    drop(watch);
}

#[test]
fn a_batch_planned_against_another_boot_of_the_agent_is_refused_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let agent = Agent::start(&root, TOKEN);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = Client::connect(&agent.url, Some(format!("Bearer {TOKEN}"))).await;
        let boot = client.hello().await.unwrap().boot_id;
        let batch = |name: &str| {
            let mut b = Batch::default();
            b.put(name, b"content\n", 0o644);
            b.commit()
        };
        let send = |client: &mut Client, ops, boot: &str| {
            let mut req = client.req(tokio_stream::iter(ops));
            req.metadata_mut()
                .insert(lks_proto::BOOT_ID_METADATA, boot.parse().unwrap());
            let mut inner = client.inner.clone();
            async move { inner.apply(req).await }
        };
        let refused = send(&mut client, batch("stale.txt"), "0000000000000000")
            .await
            .expect_err("a batch planned against another boot is applied");
        assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
        assert!(refused.message().contains("restarted"), "{refused:?}");
        assert!(!root.join("stale.txt").exists(), "part of it was applied");
        // Planned against this boot: applied.
        send(&mut client, batch("fresh.txt"), &boot).await.unwrap();
        assert!(root.join("fresh.txt").is_file());
    });
}
