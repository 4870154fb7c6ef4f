//! Workspaces that load: every field lands in the model with its default or
//! its value, paths absolute.

use super::Fixture;
use crate::config::{Check, Restart};
use std::path::Path;
use std::time::Duration;

fn full() -> Fixture {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "# the whole bank",
            "services:",
            "  - services/*/lks.service.yaml",
            "  - name: postgres",
            "    command: postgres -D /var/lib/postgres",
            "    ports: [5432]",
            "    readiness: {tcp: '127.0.0.1:5432'}",
            "  - name: kafka",
            "    ports: ['9092']",
            "aliases:",
            "  appliances: [postgres, kafka]",
            "  everything: [appliances, bank]",
            "registry: localhost:5000",
            "cluster:",
            "  name: lks",
            "  kubernetes_version: 1.31.0",
            "kube:",
            "  context: kind-lks",
            "  namespace: pr-42",
            "  allow_contexts: [staging, qa]",
        ],
    );
    f.file(
        "services/bank/lks.service.yaml",
        &[
            "name: bank",
            "command: [go, run, ./cmd/bank]",
            "env:",
            "  PORT: 8080",
            "  DEBUG: true",
            "  GREETING: \"hello world\"",
            "deps: [appliances]",
            "ports: [8080, \"8081\"]",
            "readiness:",
            "  http: http://127.0.0.1:8080/health",
            "  period: 100ms",
            "  timeout: 1m30s",
            "build:",
            "  context: .",
            "  dockerfile: docker/Dockerfile",
            "  args: {GO_VERSION: 1.23}",
            "  target: dev",
            "  local:",
            "    - go mod download",
            "    - [go, build, -o, bin/bank, ./cmd/bank]",
            "live_update:",
            "  root: /srv/bank/",
            "  sync:",
            "    - {local: cmd, remote: cmd}",
            "    - {local: internal, remote: /srv/bank/internal}",
            "  ignore: ['*.tmp', bin/]",
            "  run:",
            "    - cmd: go build -o /srv/bank/bin/bank ./cmd/bank",
            "      trigger: ['**/*.go']",
            "    - cmd: [echo, synced]",
            "  restart: never",
            "  fall_back_on: [go.mod, go.sum, docker/**]",
        ],
    );
    f.file("services/bank/docker/Dockerfile", &["FROM scratch"]);
    f.dir("services/bank/cmd").dir("services/bank/internal");
    f.file(
        "services/price/lks.service.yaml",
        &["name: price", "dir: ../../price-src", "deps: [bank]"],
    );
    f.dir("price-src");
    f
}

#[test]
fn a_full_workspace_loads_with_every_field() {
    let f = full();
    let ws = f.ok();
    assert_eq!(ws.file, f.path("lks.yaml"));
    assert_eq!(ws.root, f.root);
    assert_eq!(
        ws.services.keys().collect::<Vec<_>>(),
        ["bank", "kafka", "postgres", "price"]
    );
    assert_eq!(ws.aliases["appliances"], ["postgres", "kafka"]);
    assert_eq!(ws.aliases["everything"], ["appliances", "bank"]);
    assert_eq!(ws.registry.as_deref(), Some("localhost:5000"));
    let cluster = ws.cluster.as_ref().unwrap();
    assert_eq!(
        (cluster.name.as_str(), cluster.kubernetes_version.as_deref()),
        ("lks", Some("1.31.0"))
    );
    assert_eq!(ws.kube.context.as_deref(), Some("kind-lks"));
    assert_eq!(ws.kube.namespace.as_deref(), Some("pr-42"));
    assert_eq!(ws.kube.allow_contexts, ["staging", "qa"]);

    let bank = &ws.services["bank"];
    let dir = f.path("services/bank");
    assert_eq!(bank.file, dir.join("lks.service.yaml"));
    assert_eq!(bank.dir, dir);
    assert_eq!(bank.command, ["go", "run", "./cmd/bank"]);
    // Unquoted numbers and booleans are taken as written.
    assert_eq!(bank.env["PORT"], "8080");
    assert_eq!(bank.env["DEBUG"], "true");
    assert_eq!(bank.env["GREETING"], "hello world");
    // The alias is expanded: deps name services only.
    assert_eq!(bank.deps, ["postgres", "kafka"]);
    assert_eq!(bank.ports, [8080, 8081]);
    let r = bank.readiness.as_ref().unwrap();
    assert_eq!(
        r.check,
        Check::Http {
            url: "http://127.0.0.1:8080/health".into()
        }
    );
    assert_eq!(
        (r.period, r.timeout),
        (Duration::from_millis(100), Duration::from_secs(90))
    );

    let b = &bank.build;
    assert_eq!(b.context, dir);
    assert_eq!(b.dockerfile, dir.join("docker/Dockerfile"));
    assert_eq!(b.args["GO_VERSION"], "1.23");
    assert_eq!(b.target.as_deref(), Some("dev"));
    assert_eq!(
        b.local,
        [
            vec!["go", "mod", "download"],
            vec!["go", "build", "-o", "bin/bank", "./cmd/bank"]
        ]
    );

    let lu = &bank.live_update;
    assert_eq!(lu.root, "/srv/bank");
    let sync: Vec<(&Path, &str)> = lu
        .sync
        .iter()
        .map(|m| (m.local.as_path(), m.remote.as_str()))
        .collect();
    assert_eq!(
        sync,
        [
            (dir.join("cmd").as_path(), "cmd"),
            (dir.join("internal").as_path(), "internal")
        ]
    );
    assert_eq!(lu.ignore, ["*.tmp", "bin/"]);
    assert_eq!(lu.run.len(), 2);
    assert_eq!(lu.run[0].cmd, "go build -o /srv/bank/bin/bank ./cmd/bank");
    assert_eq!(
        lu.run[0].argv,
        ["go", "build", "-o", "/srv/bank/bin/bank", "./cmd/bank"]
    );
    assert_eq!(lu.run[0].triggers, ["**/*.go"]);
    assert!(lu.run[0].trigger_matcher.is_match("internal/x/y.go"));
    assert!(!lu.run[0].trigger_matcher.is_match("README.md"));
    assert_eq!(
        (lu.run[1].cmd.as_str(), lu.run[1].argv.as_slice()),
        ("echo synced", &["echo".to_string(), "synced".into()][..])
    );
    assert!(lu.run[1].triggers.is_empty());
    assert_eq!(lu.restart, Restart::Never);
    assert_eq!(lu.fall_back_on, ["go.mod", "go.sum", "docker/**"]);
    assert!(lu.fall_back_matcher.is_match("go.sum"));
    assert!(lu.fall_back_matcher.is_match("docker/Dockerfile"));
    // literal_separator: `go.mod` is the top-level one only.
    assert!(!lu.fall_back_matcher.is_match("vendor/x/go.mod"));
}

#[test]
fn services_get_defaults_for_everything_left_out() {
    let f = full();
    let ws = f.ok();
    let pg = &ws.services["postgres"];
    // Inline: its file is lks.yaml, its dir the workspace's.
    assert_eq!(
        (pg.file.as_path(), pg.dir.as_path()),
        (f.path("lks.yaml").as_path(), f.root.as_path())
    );
    assert_eq!(pg.command, ["postgres", "-D", "/var/lib/postgres"]);
    let r = pg.readiness.as_ref().unwrap();
    assert_eq!(
        r.check,
        Check::Tcp {
            address: "127.0.0.1:5432".into()
        }
    );
    assert_eq!(
        (r.period, r.timeout),
        (Duration::from_millis(250), Duration::from_secs(60))
    );
    assert_eq!(pg.build.context, f.root);
    assert_eq!(pg.build.dockerfile, f.path("Dockerfile"));
    assert!(pg.build.args.is_empty() && pg.build.target.is_none() && pg.build.local.is_empty());
    let lu = &pg.live_update;
    assert_eq!(lu.root, "/app");
    assert_eq!(lu.sync.len(), 1);
    assert_eq!(
        (lu.sync[0].local.as_path(), lu.sync[0].remote.as_str()),
        (f.root.as_path(), "")
    );
    assert!(lu.ignore.is_empty() && lu.run.is_empty() && lu.fall_back_on.is_empty());
    assert_eq!(lu.restart, Restart::OnChange);
    assert!(!lu.fall_back_matcher.is_match("anything"));

    let kafka = &ws.services["kafka"];
    assert!(kafka.command.is_empty() && kafka.readiness.is_none() && kafka.deps.is_empty());
    assert_eq!(kafka.ports, [9092]);

    // `dir` is relative to the file that sets it; everything else to `dir`.
    let price = &ws.services["price"];
    assert_eq!(price.dir, f.path("price-src"));
    assert_eq!(price.live_update.sync[0].local, f.path("price-src"));
    assert_eq!(price.file, f.path("services/price/lks.service.yaml"));
}

#[test]
fn the_workspace_file_is_found_in_the_nearest_parent() {
    let f = full();
    let found = crate::config::workspace::find(&f.path("services/bank/cmd")).unwrap();
    assert_eq!(found, f.path("lks.yaml"));
    let other = tempfile::tempdir().unwrap();
    let err = crate::config::workspace::find(other.path())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "no lks.yaml in {} or any parent directory (pass -f FILE, or write one with \
             `lks init`, which guesses the services of a repository)",
            other.path().display()
        )
    );
}

#[test]
fn a_service_file_matched_by_two_entries_is_read_once() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &["services:", "  - svc/*.yaml", "  - svc/a.yaml"],
    );
    f.file("svc/a.yaml", &["name: a"]);
    assert_eq!(f.ok().services.len(), 1);
}

#[test]
fn readiness_exec_takes_a_string_or_a_list() {
    let f = Fixture::new();
    f.file(
        "lks.yaml",
        &[
            "services:",
            "  - {name: a, readiness: {exec: \"pg_isready -h 'local host'\"}}",
            "  - {name: b, readiness: {exec: [test, -f, ready]}}",
        ],
    );
    let ws = f.ok();
    let check = |s: &str| ws.services[s].readiness.as_ref().unwrap().check.clone();
    assert_eq!(
        check("a"),
        Check::Exec {
            argv: vec!["pg_isready".into(), "-h".into(), "local host".into()]
        }
    );
    assert_eq!(
        check("b"),
        Check::Exec {
            argv: vec!["test".into(), "-f".into(), "ready".into()]
        }
    );
}

#[test]
fn the_check_summary_names_services_and_counts_aliases() {
    let ws = full().ok();
    assert_eq!(
        crate::config::summary(&ws),
        "ok: 4 services (bank, kafka, postgres, price), 2 aliases"
    );
}

#[test]
fn the_live_services_are_the_local_ones_else_the_targets_else_all() {
    let ws = full().load().unwrap();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let live = |targets: &[&str], local: &[&str]| {
        ws.live(&names(targets), &names(local))
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(live(&["everything"], &["bank"]), ["bank"]);
    assert_eq!(live(&["appliances"], &[]), ["kafka", "postgres"]);
    assert_eq!(live(&[], &[]), ["bank", "kafka", "postgres", "price"]);
}
