//! Live-update rules: what a batch of changes means for a running service.
//!
//! - a file the runtime rebuilds from (a Dockerfile, a manifest applied to a
//!   cluster) -> rebuild, ignored or not;
//! - a path matching `fall_back_on` -> rebuild (each runtime decides what that
//!   means);
//! - a path covered by no sync mapping (and not ignored) -> rebuild, reported
//!   with the path;
//! - otherwise sync, then every `run` step whose triggers match (a step without
//!   triggers runs on every batch), then restart if the policy says so (with
//!   `restart: {on-change: [globs]}`, only when a changed path matches one).

use crate::config::{Restart, Service};
use std::path::{Path, PathBuf};

/// What to do with one batch of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing that matters changed.
    Nothing,
    /// The change cannot be synced: rebuild the service.
    Rebuild {
        /// Why, naming the path and the rule.
        reason: String,
    },
    /// Sync the files, then run these steps (indexes into `live_update.run`)
    /// and restart if asked.
    Sync {
        /// Steps whose triggers match, in order.
        steps: Vec<usize>,
        /// Restart the app after the steps.
        restart: bool,
    },
}

/// Whether `path` (absolute) is covered by one of the service's sync mappings.
pub fn mapped(service: &Service, path: &Path) -> bool {
    service
        .live_update
        .sync
        .iter()
        .any(|m| path.starts_with(&m.local))
}

/// One batch of changes, as the rules see it.
pub struct Batch<'a> {
    /// Every absolute path the watcher reported, ignored ones too.
    pub reported: &'a [PathBuf],
    /// The absolute paths that matter (ignored ones removed).
    pub touched: &'a [&'a Path],
    /// The paths, relative to the service directory, whose content really
    /// differs from what the agent has (from the plan).
    pub changed: &'a [String],
}

/// Decides what a batch means. `rebuild_on` are the files whose change needs
/// a rebuild whatever the rules say (the runtime's: a Dockerfile, manifests).
pub fn decide(service: &Service, rebuild_on: &[PathBuf], batch: &Batch) -> Decision {
    if let Some(p) = batch.reported.iter().find(|p| rebuild_on.contains(p)) {
        let why = if service.k8s.contains(p) {
            "it is applied to the cluster"
        } else {
            "the image is built from it"
        };
        return Decision::Rebuild {
            reason: format!("{} changed ({why})", p.display()),
        };
    }
    by_rules(service, batch.touched, batch.changed)
}

/// What the service's own rules say of a batch: `touched` are the absolute
/// paths the watcher reported (ignored ones already removed); `changed` are
/// the paths, relative to the service directory, whose content really
/// differs from what the agent has.
fn by_rules(service: &Service, touched: &[&Path], changed: &[String]) -> Decision {
    let lu = &service.live_update;
    for p in touched {
        let rel = p.strip_prefix(&service.dir).unwrap_or(p);
        if !lu.fall_back_on.is_empty() && lu.fall_back_matcher.is_match(rel) {
            let rule = lu
                .fall_back_matcher
                .matches(rel)
                .first()
                .map(|i| lu.fall_back_on[*i].clone())
                .unwrap_or_default();
            return Decision::Rebuild {
                reason: format!("{} matches fall_back_on `{rule}`", rel.display()),
            };
        }
        if !mapped(service, p) {
            return Decision::Rebuild {
                reason: format!("{} is not covered by any sync mapping", rel.display()),
            };
        }
    }
    if changed.is_empty() {
        return Decision::Nothing;
    }
    let steps = lu
        .run
        .iter()
        .enumerate()
        .filter(|(_, step)| {
            step.triggers.is_empty() || changed.iter().any(|c| step.trigger_matcher.is_match(c))
        })
        .map(|(i, _)| i)
        .collect();
    // `restart: {on-change: [globs]}`: only some changes restart the app.
    let restart = lu.restart == Restart::OnChange
        && (lu.restart_on.is_empty() || changed.iter().any(|c| lu.restart_matcher.is_match(c)));
    Decision::Sync { steps, restart }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(service: &Service, touched: &[&Path], changed: &[String]) -> Decision {
        let batch = Batch {
            reported: &[],
            touched,
            changed,
        };
        super::decide(service, &[], &batch)
    }

    #[test]
    fn a_file_the_runtime_rebuilds_from_rebuilds_even_when_ignored() {
        let s = service(Restart::OnChange);
        let dockerfile = PathBuf::from("/ws/api/Dockerfile");
        let batch = Batch {
            reported: std::slice::from_ref(&dockerfile),
            touched: &[],
            changed: &[],
        };
        assert_eq!(
            super::decide(&s, std::slice::from_ref(&dockerfile), &batch),
            Decision::Rebuild {
                reason: "/ws/api/Dockerfile changed (the image is built from it)".into()
            }
        );
        assert_eq!(super::decide(&s, &[], &batch), Decision::Nothing);
    }
    use crate::config::{Build, LiveUpdate, RunStep, SyncMapping};
    use globset::{Glob, GlobSet, GlobSetBuilder};
    use std::path::PathBuf;

    fn set(globs: &[&str]) -> GlobSet {
        let mut b = GlobSetBuilder::new();
        for g in globs {
            b.add(Glob::new(g).unwrap());
        }
        b.build().unwrap()
    }

    fn step(cmd: &str, triggers: &[&str]) -> RunStep {
        RunStep {
            cmd: cmd.into(),
            argv: cmd.split(' ').map(String::from).collect(),
            workdir: String::new(),
            triggers: triggers.iter().map(|s| s.to_string()).collect(),
            trigger_matcher: set(triggers),
        }
    }

    fn service(restart: Restart) -> Service {
        let dir = PathBuf::from("/ws/api");
        Service {
            name: "api".into(),
            file: dir.join("lks.service.yaml"),
            dir: dir.clone(),
            build: Build {
                context: dir.clone(),
                dockerfile: dir.join("Dockerfile"),
                args: Default::default(),
                target: None,
                local: vec![],
                exclude: vec![],
            },
            command: vec!["python3".into(), "app.py".into()],
            entrypoint: vec![],
            debug: None,
            debugging: None,
            env: Default::default(),
            deps: vec![],
            ports: vec![],
            readiness: None,
            live_update: LiveUpdate {
                root: "/app".into(),
                local_root: None,
                sync: vec![SyncMapping {
                    local: dir.join("src"),
                    remote: "src".into(),
                    only: vec![],
                }],
                ignore: vec![],
                run: vec![
                    step("pip install -r requirements.txt", &["src/requirements.txt"]),
                    step("echo always", &[]),
                ],
                restart,
                restart_on: vec![],
                restart_matcher: GlobSet::empty(),
                fall_back_on: vec!["Dockerfile".into(), "**/*.lock".into()],
                fall_back_matcher: set(&["Dockerfile", "**/*.lock"]),
            },
            k8s: vec![],
            workspace_files: vec![],
            host: None,
        }
    }

    #[test]
    fn a_fall_back_on_path_rebuilds_and_says_which_rule() {
        let s = service(Restart::OnChange);
        let d = decide(&s, &[Path::new("/ws/api/Dockerfile")], &[]);
        assert_eq!(
            d,
            Decision::Rebuild {
                reason: "Dockerfile matches fall_back_on `Dockerfile`".into()
            }
        );
        let d = decide(
            &s,
            &[Path::new("/ws/api/src/deep/poetry.lock")],
            &["src/deep/poetry.lock".into()],
        );
        assert!(matches!(d, Decision::Rebuild { reason } if reason.contains("`**/*.lock`")));
    }

    #[test]
    fn a_path_outside_every_mapping_rebuilds() {
        let s = service(Restart::OnChange);
        let d = decide(&s, &[Path::new("/ws/api/README.md")], &[]);
        assert_eq!(
            d,
            Decision::Rebuild {
                reason: "README.md is not covered by any sync mapping".into()
            }
        );
    }

    #[test]
    fn steps_run_only_when_their_triggers_match() {
        let s = service(Restart::OnChange);
        let d = decide(
            &s,
            &[Path::new("/ws/api/src/app.py")],
            &["src/app.py".into()],
        );
        assert_eq!(
            d,
            Decision::Sync {
                steps: vec![1],
                restart: true
            }
        );
        let d = decide(
            &s,
            &[Path::new("/ws/api/src/requirements.txt")],
            &["src/requirements.txt".into()],
        );
        assert_eq!(
            d,
            Decision::Sync {
                steps: vec![0, 1],
                restart: true
            }
        );
    }

    #[test]
    fn restart_never_syncs_without_restarting() {
        let s = service(Restart::Never);
        let d = decide(
            &s,
            &[Path::new("/ws/api/src/app.py")],
            &["src/app.py".into()],
        );
        assert_eq!(
            d,
            Decision::Sync {
                steps: vec![1],
                restart: false
            }
        );
    }

    #[test]
    fn a_touch_that_changes_no_content_does_nothing() {
        let s = service(Restart::OnChange);
        assert_eq!(
            decide(&s, &[Path::new("/ws/api/src/app.py")], &[]),
            Decision::Nothing
        );
    }

    #[test]
    fn restart_triggers_restart_only_for_the_paths_they_name() {
        let mut s = service(Restart::OnChange);
        s.live_update.restart_on = vec!["src/**/*.py".into()];
        s.live_update.restart_matcher = set(&["src/**/*.py"]);
        let d = decide(
            &s,
            &[Path::new("/ws/api/src/static/a.css")],
            &["src/static/a.css".into()],
        );
        assert_eq!(
            d,
            Decision::Sync {
                steps: vec![1],
                restart: false
            }
        );
        let d = decide(
            &s,
            &[
                Path::new("/ws/api/src/static/a.css"),
                Path::new("/ws/api/src/app.py"),
            ],
            &["src/static/a.css".into(), "src/app.py".into()],
        );
        assert_eq!(
            d,
            Decision::Sync {
                steps: vec![1],
                restart: true
            }
        );
    }
}
