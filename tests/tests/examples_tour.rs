//! The `tour` examples (notes: Node.js, quotes: Python, clock: Go) run
//! unchanged on the local, docker and kube runtimes: host-side builds
//! (notes-build, clock-build), shell steps, `entrypoint:`, restart triggers
//! and allow-lists, apps that listen on 127.0.0.1 only and are reached
//! through lks's forwarded ports. Docker and a real cluster as for the
//! other tiers (`tests/run.sh`).

use lks_e2e::kube::cluster;
use lks_e2e::*;
use std::path::Path;
use std::time::Duration;

const START: Duration = Duration::from_secs(300);

struct Ports {
    notes: u16,
    quotes: u16,
    clock: u16,
}

/// The tour examples copied into `ws`, their ports (18082-18084) replaced by
/// free ones.
fn tour_on_free_ports(ws: &Path) -> Ports {
    copy_examples(ws, &["web", "api", "worker"]);
    let p = Ports {
        notes: free_port(),
        quotes: free_port(),
        clock: free_port(),
    };
    replace_in_files(
        ws,
        &[
            ("18082", p.notes.to_string()),
            ("18083", p.quotes.to_string()),
            ("18084", p.clock.to_string()),
        ],
    );
    write(
        ws,
        "lks.yaml",
        "services: [notes/lks.service.yaml, notes-build/lks.service.yaml, \
         quotes/lks.service.yaml, clock/lks.service.yaml, clock-build/lks.service.yaml]\n\
         aliases: { tour: [notes, quotes, clock] }\n",
    );
    p
}

fn answers(port: u16, wanted: &str) -> bool {
    http11_get(port, "/").is_some_and(|b| b.contains(wanted))
}

/// How many times `lks up` said `service`'s app started (`clock`, not
/// `clock-build`).
fn starts(up: &mut Up, service: &str) -> usize {
    up.drain()
        .iter()
        .filter(|l| l.starts_with(&format!("{service} ")) && l.contains("| app started"))
        .count()
}

/// Edits each service once in the way that must not restart it and once in
/// the way that must, checking the answers.
fn edits_reach_each_service(up: &mut Up, ws: &Path, p: &Ports) {
    let until = |what: &str, f: &dyn Fn() -> bool, up: &mut Up| {
        assert!(
            wait_until(Duration::from_secs(60), f),
            "{what}\n{}",
            up.drain().join("\n")
        );
    };
    until(
        "notes never served its first note",
        &|| answers(p.notes, "Save a file, see it served"),
        up,
    );
    until(
        "quotes never answered",
        &|| answers(p.quotes, "Simple things"),
        up,
    );
    until(
        "clock never answered",
        &|| answers(p.clock, "clock v1: tick"),
        up,
    );
    let (notes0, quotes0, clock0) = (
        starts(up, "notes"),
        starts(up, "quotes"),
        starts(up, "clock"),
    );

    // Content: rendered on the host (notes-build), or served as synced.
    write(ws, "notes/src/second.md", "# Edits arrive\n");
    write(
        ws,
        "quotes/quotes/kay.txt",
        "Simple things should be simple, again.\n",
    );
    write(ws, "clock/label.txt", "tock\n");
    until(
        "notes-build's output never arrived",
        &|| answers(p.notes, "Edits arrive"),
        up,
    );
    until(
        "the new quote never arrived",
        &|| answers(p.quotes, "again"),
        up,
    );
    until(
        "the new label never arrived",
        &|| answers(p.clock, "clock v1: tock"),
        up,
    );
    for (service, before) in [("notes", notes0), ("quotes", quotes0), ("clock", clock0)] {
        assert_eq!(
            starts(up, service),
            before,
            "{service} restarted for content:\n{}",
            up.service_lines(service).join("\n")
        );
    }

    // Code: restarts (clock after clock-build built a new binary on the host).
    let code_edits = up.mark();
    let main = ws.join("clock/main.go");
    let go = std::fs::read_to_string(&main)
        .unwrap()
        .replace("clock v1", "clock v2");
    std::fs::write(&main, go).unwrap();
    let app = ws.join("quotes/app.py");
    let py = std::fs::read_to_string(&app)
        .unwrap()
        .replace("page = (", "page = \"[live] \" + (");
    std::fs::write(&app, py).unwrap();
    until(
        "clock never ran its new binary",
        &|| answers(p.clock, "clock v2: tock"),
        up,
    );
    until(
        "quotes never ran its new code",
        &|| answers(p.quotes, "[live]"),
        up,
    );
    // Said after the app answers, maybe.
    for service in ["clock ", "quotes "] {
        up.wait_since(
            code_edits,
            &[service, "| app started"],
            Duration::from_secs(10),
        );
    }
    up.wait(&["quotes", "compiled"], Duration::from_secs(10));
}

#[test]
fn the_tour_runs_and_live_updates_on_the_local_runtime() {
    assert!(
        std::process::Command::new("go")
            .arg("version")
            .output()
            .is_ok(),
        "`go` is not installed: tests/run.sh installs it (apt-get install golang-go)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let p = tour_on_free_ports(ws);
    let mut up = Up::start(ws, &["tour"]);
    for s in ["notes", "quotes", "clock"] {
        up.wait(&[&format!("{s} "), "[ready]"], START);
    }
    edits_reach_each_service(&mut up, ws, &p);
    assert!(up.terminate().success());
}

#[test]
fn the_tour_runs_and_live_updates_in_containers() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let p = tour_on_free_ports(ws);
    // The images stay (tagged by their content's digest, like a developer's):
    // the pod test may build and push the same ones meanwhile.
    let mut up = Up::start(ws, &["--runtime", "docker", "tour"]);
    for s in ["notes", "quotes", "clock"] {
        up.wait(&[&format!("{s} "), "[ready]"], START);
    }
    edits_reach_each_service(&mut up, ws, &p);
    assert!(up.terminate().success());
}

#[test]
fn the_tour_runs_and_live_updates_in_pods() {
    let Some(k) = cluster("the_tour_runs_and_live_updates_in_pods") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let p = tour_on_free_ports(ws);
    let ns = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns.name, "tour"]);
    for s in ["notes", "quotes", "clock"] {
        up.wait(&[&format!("{s} "), "[ready]"], START);
    }
    edits_reach_each_service(&mut up, ws, &p);
    up.terminate();
}
