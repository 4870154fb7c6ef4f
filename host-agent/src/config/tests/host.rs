//! Host-side resources (`host:`): what they read as, the mistakes they can
//! have (each at its position), and that every runtime accepts them.

use super::Fixture;
use crate::runtime::Kind;

/// A workspace whose only service is `codegen`, written inline with `lines`
/// (indented beneath `- `).
fn codegen(lines: &[&str]) -> Fixture {
    let f = Fixture::new();
    let mut all = vec!["services:".to_string()];
    for (i, l) in lines.iter().enumerate() {
        all.push(format!("{}{l}", if i == 0 { "  - " } else { "    " }));
    }
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    f.file("lks.yaml", &all);
    f.dir("gen");
    f
}

#[test]
fn a_host_resource_reads_its_commands_globs_mode_and_serve() {
    let f = codegen(&[
        "name: codegen",
        "dir: gen",
        "host:",
        "  run: [\"protoc --go_out=. api.proto\", [sh, -c, \"gofmt -w *.go\"]]",
        "  watch: [\"*.proto\", \"templates/**\"]",
        "  manual: true",
        "  serve: python3 -m http.server 8000",
        "env: {A: b}",
    ]);
    let ws = f.ok();
    let s = &ws.services["codegen"];
    let host = s.host.as_ref().expect("a host resource");
    assert_eq!(
        host.run,
        [
            vec!["protoc", "--go_out=.", "api.proto"],
            vec!["sh", "-c", "gofmt -w *.go"]
        ]
    );
    assert_eq!(host.watch, ["*.proto", "templates/**"]);
    assert!(host.watch_matcher.is_match("api.proto"));
    assert!(host.watch_matcher.is_match("templates/a/b.tmpl"));
    assert!(!host.watch_matcher.is_match("sub/api.proto"));
    assert!(host.manual);
    assert_eq!(host.serve, ["python3", "-m", "http.server", "8000"]);
    assert_eq!(s.dir, f.path("gen"));
    // One string is one command.
    let f = codegen(&["name: codegen", "host: {run: make gen}"]);
    let ws = f.ok();
    let host = ws.services["codegen"].host.clone().unwrap();
    assert_eq!(host.run, [["make", "gen"]]);
    assert!(!host.manual && host.serve.is_empty() && host.watch.is_empty());
}

#[test]
fn a_host_resource_with_a_runtimes_keys_is_refused_at_each() {
    let f = codegen(&[
        "name: codegen",
        "command: node server.js",
        "host: {run: make}",
        "k8s: []",
        "live_update: {restart: never}",
    ]);
    let why = "does not go with `host:` (a host resource runs its commands on the host; \
               no runtime builds, deploys or starts it)";
    assert_eq!(
        f.errors(),
        [
            format!(r#"lks.yaml:3:5: command of service "codegen": {why}"#),
            format!(r#"lks.yaml:5:5: k8s of service "codegen": {why}"#),
            format!(r#"lks.yaml:6:5: live_update of service "codegen": {why}"#),
        ]
    );
}

#[test]
fn a_host_resources_mistakes_are_pointed_at() {
    let f = codegen(&[
        "name: codegen",
        "host:",
        "  run: []",
        "  watch: [\"*.proto\", \"src/[a-\"]",
        "  manual: yes",
        "  serve: \"\"",
        "  ports: [80]",
    ]);
    assert_eq!(
        f.errors(),
        [
            r#"lks.yaml:4:12: host.run of service "codegen": is empty: list the commands to run"#,
            r#"lks.yaml:5:26: host.watch of service "codegen": bad glob "src/[a-": unclosed character class; missing ']'"#,
            r#"lks.yaml:6:15: host.manual of service "codegen": expected true or false, found "yes""#,
            r#"lks.yaml:7:14: host.serve of service "codegen": empty command"#,
            r#"lks.yaml:8:7: unknown key "ports" in host of service "codegen"; expected one of: run, watch, manual, serve"#,
        ]
    );
    let f = codegen(&["name: codegen", "host: {manual: true}"]);
    assert_eq!(
        f.errors(),
        [
            r#"lks.yaml:3:12: host of service "codegen": needs `run` (commands run on the host), `serve` (a long-running process), or both"#
        ]
    );
}

#[test]
fn every_runtime_accepts_a_host_resource_and_none_builds_it() {
    let f = codegen(&["name: codegen", "host: {run: make}"]);
    let ws = f.ok();
    for kind in [Kind::Local, Kind::Docker, Kind::Kube] {
        let unmet = crate::runtime::needs::unmet(&ws, kind);
        assert!(unmet.is_empty(), "{}: {unmet:?}", kind.name());
    }
    assert!(ws.live(&[], &[]).is_empty());
    assert!(ws.live(&["codegen".into()], &[]).is_empty());
}
