//! The local registry wired into a kind cluster: the registry container on
//! kind's network, and each node's containerd told where `localhost:PORT`
//! is.

use super::*;

/// Connects the registry container to kind's network (unless it is already).
pub(super) async fn connect_to_kind_network(
    docker: &Docker,
    container: &str,
) -> anyhow::Result<()> {
    let inspected = docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(EngineError::api(format!("inspecting {container}")))?;
    let connected = inspected
        .network_settings
        .and_then(|n| n.networks)
        .is_some_and(|n| n.contains_key(KIND_NETWORK));
    if connected {
        return Ok(());
    }
    detail(&format!(
        "docker network connect {KIND_NETWORK} {container}"
    ));
    match docker
        .connect_network(
            KIND_NETWORK,
            bollard::models::NetworkConnectRequest {
                container: Some(container.to_string()),
                endpoint_config: None,
            },
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().contains("already exists") => Ok(()),
        Err(e) => Err(EngineError::api(format!(
            "connecting {container} to the network {KIND_NETWORK}"
        ))(e)
        .into()),
    }
}

/// Writes `content` to the node's `certs.d/localhost:PORT/hosts.toml` (node
/// images have a shell; the content travels as an argument, not through it).
pub(super) async fn write_hosts_toml(
    docker: &Docker,
    node: &str,
    port: u16,
    content: &str,
) -> anyhow::Result<()> {
    let dir = hosts_toml_dir(port);
    detail(&format!("{node}: {dir}/hosts.toml"));
    let cmd = vec![
        "sh".to_string(),
        "-c".to_string(),
        r#"mkdir -p "$1" && printf '%s' "$2" > "$1/hosts.toml""#.to_string(),
        "sh".to_string(),
        dir.clone(),
        content.to_string(),
    ];
    let output = exec(docker, node, cmd).await?;
    if output.0 != 0 {
        bail!(
            "writing {dir}/hosts.toml in the node {node} failed (exit {}): {}",
            output.0,
            output.1.trim()
        );
    }
    Ok(())
}

/// Runs `cmd` in a container: (exit code, output).
pub(super) async fn exec(
    docker: &Docker,
    container: &str,
    cmd: Vec<String>,
) -> anyhow::Result<(i64, String)> {
    use futures::StreamExt;
    let doing = format!("running {:?} in {container}", cmd.join(" "));
    let created = docker
        .create_exec(
            container,
            bollard::models::ExecConfig {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(EngineError::api(doing.clone()))?;
    let mut text = String::new();
    if let bollard::exec::StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&created.id, None::<bollard::exec::StartExecOptions>)
        .await
        .map_err(EngineError::api(doing.clone()))?
    {
        while let Some(chunk) = output.next().await {
            text.push_str(&chunk.map_err(EngineError::api(doing.clone()))?.to_string());
        }
    }
    let inspected = docker
        .inspect_exec(&created.id)
        .await
        .map_err(EngineError::api(doing))?;
    Ok((inspected.exit_code.unwrap_or(-1), text))
}
