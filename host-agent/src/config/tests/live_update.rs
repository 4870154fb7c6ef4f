//! What Tilt users' live updates say: shell steps with a working directory,
//! restart triggers, allow-lists, and sync folders a build makes later.

use super::Fixture;
use crate::config::Restart;

fn svc(lines: &[&str]) -> Fixture {
    let f = Fixture::new();
    f.file("lks.yaml", &["services: [svc/lks.service.yaml]"]);
    f.file("svc/lks.service.yaml", lines);
    f
}

#[test]
fn a_step_may_be_a_shell_script_with_a_working_directory() {
    let f = svc(&[
        "name: svc",
        "command: {sh: 'cd web && exec node server.js'}",
        "live_update:",
        "  root: /srv",
        "  run:",
        "    - sh: cd web && yarn install",
        "      workdir: tools/bin",
        "      trigger: [package.json]",
        "    - cmd: [make, all]",
        "      workdir: /srv/c",
    ]);
    let ws = f.ok();
    let s = &ws.services["svc"];
    assert_eq!(
        s.command,
        ["/bin/sh", "-c", "cd web && exec node server.js"]
    );
    let run = &s.live_update.run;
    assert_eq!(run[0].cmd, "cd web && yarn install");
    assert_eq!(run[0].argv, ["/bin/sh", "-c", "cd web && yarn install"]);
    assert_eq!(run[0].workdir, "tools/bin");
    assert_eq!(run[1].argv, ["make", "all"]);
    assert_eq!(run[1].workdir, "c");
}

#[test]
fn a_step_with_both_forms_or_a_workdir_outside_the_root_is_refused() {
    let f = svc(&[
        "name: svc",
        "live_update:",
        "  run:",
        "    - cmd: make",
        "      sh: make",
        "    - sh: make",
        "      workdir: /etc",
        "    - workdir: src",
    ]);
    assert_eq!(
        f.errors(),
        [
            "svc/lks.service.yaml:5:11: live_update.run[0].sh of service \"svc\": a step has `cmd` \
             (argv, no shell) or `sh` (a script for the image's /bin/sh), not both",
            "svc/lks.service.yaml:7:16: live_update.run[1].workdir of service \"svc\": \"/etc\" is \
             outside the root \"/app\"",
            "svc/lks.service.yaml:8:7: live_update.run[2] of service \"svc\": a step needs `cmd` \
             (argv, no shell) or `sh` (a script for the image's /bin/sh)",
        ]
    );
}

#[test]
fn restart_may_name_the_changes_that_restart() {
    let f = svc(&[
        "name: svc",
        "live_update:",
        "  restart: {on-change: ['**/*.py', requirements.txt]}",
    ]);
    let ws = f.ok();
    let lu = &ws.services["svc"].live_update;
    assert_eq!(lu.restart, Restart::OnChange);
    assert_eq!(lu.restart_on, ["**/*.py", "requirements.txt"]);
    assert!(lu.restart_matcher.is_match("app/main.py"));
    assert!(!lu.restart_matcher.is_match("static/a.css"));

    let f = svc(&[
        "name: svc",
        "live_update:",
        "  restart: {on-chnge: ['*.py']}",
    ]);
    let errors = f.errors();
    assert!(
        errors[0].contains("unknown key \"on-chnge\"") && errors[0].contains("\"on-change\""),
        "{errors:?}"
    );
    let f = svc(&["name: svc", "live_update:", "  restart: always"]);
    assert_eq!(
        f.errors(),
        [
            "svc/lks.service.yaml:3:12: live_update.restart of service \"svc\": expected \
          \"on-change\", \"never\" or {on-change: [globs]}, found \"always\""
        ]
    );
}

#[test]
fn a_mapping_may_have_an_allow_list_and_a_folder_not_made_yet() {
    let f = svc(&[
        "name: svc",
        "live_update:",
        "  sync:",
        "    - {local: web, remote: web, only: [src/, index.html, '**/*.css']}",
        "    - {local: dist, remote: dist}",
    ]);
    f.dir("svc/web");
    let ws = f.ok();
    let sync = &ws.services["svc"].live_update.sync;
    assert_eq!(sync[0].only, ["src/", "index.html", "**/*.css"]);
    assert_eq!(sync[1].local, f.path("svc/dist"));
    assert!(sync[1].only.is_empty());

    // A file where a folder should be is still a mistake, as is a bad entry.
    let f = svc(&[
        "name: svc",
        "live_update:",
        "  sync: [{local: dist, remote: dist, only: ['../up', 'a/[b']}]",
    ]);
    std::fs::write(f.path("svc/dist"), "not a folder").unwrap();
    let errors = f.errors();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("is not a directory"), "{errors:?}");
    assert!(
        errors[1].contains("\"../up\"") && errors[1].contains("no `..`"),
        "{errors:?}"
    );
    assert!(errors[2].contains("\"a/[b\""), "{errors:?}");
}

#[test]
fn an_entrypoint_takes_every_command_form() {
    for (written, argv) in [
        (
            "entrypoint: node --inspect server.js",
            vec!["node", "--inspect", "server.js"],
        ),
        (
            "entrypoint: [/app/bin/api, serve]",
            vec!["/app/bin/api", "serve"],
        ),
        (
            "entrypoint: {sh: 'exec ./api'}",
            vec!["/bin/sh", "-c", "exec ./api"],
        ),
    ] {
        let f = svc(&["name: svc", written]);
        assert_eq!(f.ok().services["svc"].entrypoint, argv, "{written}");
    }
    let f = svc(&["name: svc", "entrypoint: {shell: 'exec ./api'}"]);
    let errors = f.errors();
    assert!(
        errors[0].contains("unknown key \"shell\"") && errors[0].contains("\"sh\""),
        "{errors:?}"
    );
}

#[test]
fn the_local_root_may_be_named_outside_the_sources() {
    let f = svc(&["name: svc", "live_update:", "  local_root: /srv/svc-app"]);
    assert_eq!(
        f.ok().services["svc"].live_update.local_root.as_deref(),
        Some(std::path::Path::new("/srv/svc-app"))
    );
    // Relative to the service's directory.
    let f = svc(&[
        "name: svc",
        "live_update:",
        "  sync: [{local: src, remote: .}]",
        "  local_root: run/app",
    ]);
    let ws = f.ok();
    let root = ws.services["svc"].live_update.local_root.clone().unwrap();
    assert_eq!(root, ws.services["svc"].dir.join("run/app"));
}

#[test]
fn a_local_root_holding_the_sources_is_refused() {
    // The service's directory is synced whole by default.
    for (root, problem) in [
        ("..", "holds the service's own directory"),
        ("/", "holds the service's own directory"),
        ("cache", "overlaps the synced directory"),
    ] {
        let f = svc(&[
            "name: svc",
            "live_update:",
            &format!("  local_root: {root}"),
        ]);
        let errors = f.errors();
        assert_eq!(errors.len(), 1, "{root}: {errors:#?}");
        assert!(
            errors[0].starts_with("svc/lks.service.yaml:3:15: live_update.local_root of service")
                && errors[0].contains(problem),
            "{root}: {errors:#?}"
        );
    }
    let f = svc(&[
        "name: svc",
        "live_update:",
        "  sync: [{local: src/web, remote: .}]",
        "  local_root: src",
    ]);
    assert!(
        f.errors()[0].contains("overlaps the synced directory"),
        "{:#?}",
        f.errors()
    );
}
