//! `lks config check` through the real CLI: a summary on stdout for a good
//! workspace, every mistake on stderr (one a line, FILE:LINE:COL first) and a
//! failing exit status for a bad one.

use lks_e2e::*;
use std::path::Path;
use std::process::{Command, Output};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// `lks config check ARGS` run in `dir`, with no kubeconfig (so the runtime
/// `lks up` would choose is the local one).
fn check(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("lks"))
        .args(["config", "check"])
        .args(args)
        .current_dir(dir)
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .output()
        .expect("run lks")
}

/// A workspace with a file-based service, an inline one and an alias.
fn good(root: &Path) {
    write(
        root,
        "lks.yaml",
        "services:\n  - services/*/lks.service.yaml\n  - name: db\n    command: postgres\n    ports: [5432]\naliases:\n  appliances: [db]\n",
    );
    write(
        root,
        "services/web/lks.service.yaml",
        "name: web\ncommand: node server.js\ndeps: [appliances]\nlive_update:\n  sync: [{local: ., remote: /app}]\n",
    );
}

#[test]
fn a_good_workspace_prints_a_summary_and_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    good(tmp.path());
    let out = check(tmp.path(), &["-f", "lks.yaml"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stdout,
        "ok: 2 services (db, web), 1 alias, for the local runtime\n"
    );
}

#[test]
fn without_f_the_nearest_lks_yaml_above_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    good(tmp.path());
    let out = check(&tmp.path().join("services/web"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 2 services (db, web), 1 alias, for the local runtime\n"
    );
}

#[test]
fn every_mistake_is_printed_with_its_position_and_the_check_fails() {
    let tmp = tempfile::tempdir().unwrap();
    good(tmp.path());
    write(
        tmp.path(),
        "services/web/lks.service.yaml",
        "name: web\ndep: [db]\nports: \"8080\"\nlive_update:\n  restart: yes\n  sync: [{local: ., remote: /etc}]\n",
    );
    write(
        tmp.path(),
        "services/api/lks.service.yaml",
        "name: api\ndeps: [pricee]\n",
    );
    write(
        tmp.path(),
        "services/price/lks.service.yaml",
        "name: price\ndeps: [price]\n",
    );
    let out = check(tmp.path(), &["-f", "lks.yaml"]);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        r#"services/api/lks.service.yaml:2:8: deps of service "api": "pricee" is not a service or alias; did you mean "price"?"#,
        "services/price/lks.service.yaml:2:8: dependency cycle: price -> price",
        r#"services/web/lks.service.yaml:2:1: unknown key "dep" in service "web"; did you mean "deps"?"#,
        r#"services/web/lks.service.yaml:3:8: ports of service "web": expected a list of ports, found "8080""#,
        r#"services/web/lks.service.yaml:5:12: live_update.restart of service "web": expected "on-change", "never" or {on-change: [globs]}, found "yes""#,
        r#"services/web/lks.service.yaml:6:29: live_update.sync[0].remote of service "web": "/etc" is outside the root "/app""#,
    ];
    assert_eq!(lines[..expected.len()], expected, "{stderr}");
    // Then the one-line reason the command failed.
    assert_eq!(lines.len(), expected.len() + 1, "{stderr}");
    assert!(lines[expected.len()].contains("6 errors"), "{stderr}");
}

#[test]
fn a_missing_workspace_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = check(tmp.path(), &["-f", "nope.yaml"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("nope.yaml: cannot read: "), "{stderr}");
}

/// An inline workspace of `n` services, each depending on the next, and
/// the last on `last_deps`.
fn chain(root: &Path, n: usize, last_deps: &str) {
    let mut yaml = String::from("services:\n");
    for i in 0..n {
        let deps = if i + 1 < n {
            format!("[s{}]", i + 1)
        } else {
            last_deps.to_string()
        };
        yaml.push_str(&format!(
            "  - name: s{i}\n    deps: {deps}\n    command: run\n"
        ));
    }
    write(root, "lks.yaml", &yaml);
}

#[test]
fn a_dependency_chain_thousands_long_is_checked_without_recursion() {
    let tmp = tempfile::tempdir().unwrap();
    chain(tmp.path(), 20_000, "[]");
    let out = check(tmp.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("20000 services"),
        "{}",
        text(&out.stdout)
    );
    // Closed into a cycle: found and reported, once, at its first edge.
    chain(tmp.path(), 20_000, "[s0]");
    let out = check(tmp.path(), &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("lks.yaml:3:"),
        "{}",
        &err[..err.len().min(500)]
    );
    assert!(err.contains("cycle"), "{}", &err[..err.len().min(500)]);
}

#[test]
fn two_services_on_one_port_are_refused_with_both_positions() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lks.yaml",
        "services:\n  - name: web\n    ports: [8080]\n  - name: api\n    ports: [9090, 8080]\n",
    );
    let out = check(tmp.path(), &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("lks.yaml:5:"), "{err}");
    assert!(
        err.contains("port 8080 is declared by service \"web\" too (at lks.yaml:3:"),
        "{err}"
    );
}

#[test]
fn a_k8s_manifest_that_does_not_parse_is_reported_at_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lks.yaml",
        "services:\n  - name: web\n    k8s: [k8s/web.yaml]\n",
    );
    write(
        tmp.path(),
        "k8s/web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: [unclosed\n",
    );
    let out = check(tmp.path(), &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("k8s/web.yaml:"), "{err}");
    assert!(err.contains("not YAML"), "{err}");
    // Where the parser stopped: line 5 or the end of the file.
    assert!(
        err.contains("k8s/web.yaml:5:") || err.contains("k8s/web.yaml:6:"),
        "{err}"
    );
}

#[test]
fn a_service_the_runtime_cannot_start_is_reported_at_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lks.yaml",
        "services:\n  - name: web\n    command: node server.js\n  - name: db\n    ports: [5432]\n",
    );
    // The local runtime (what `lks up` chooses here) runs `command`.
    let out = check(tmp.path(), &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "lks.yaml:4:11: service \"db\" cannot run on the local runtime: it has no `command`"
        ),
        "{err}"
    );
    assert!(!err.contains("\"web\""), "{err}");
    // The kube runtime needs manifests instead, for both.
    let out = check(tmp.path(), &["--runtime", "kube"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("service \"web\" cannot run on the kube runtime: it has no `k8s:` manifests"),
        "{err}"
    );
    assert!(
        err.contains("service \"db\" cannot run on the kube runtime"),
        "{err}"
    );
    assert!(err.contains("2 errors"), "{err}");
    // The docker runtime builds from a Dockerfile.
    write(tmp.path(), "Dockerfile", "FROM scratch\n");
    let out = check(tmp.path(), &["--runtime", "docker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "ok: 2 services (db, web), 0 aliases, for the docker runtime\n"
    );
}
