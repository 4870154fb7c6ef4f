//! The live-update rules `lks init` guesses per language, from the files a
//! service's directory holds: how the app starts, what builds it before it
//! starts and after a change, what is never synced, what only a rebuild can
//! take.

use super::detect::{Guess, Sourced, Step};
use super::dockerfile::Dockerfile;
use serde_json::Value;
use std::path::Path;

/// The languages `lks init` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Language {
    /// `package.json`.
    Node,
    /// `requirements.txt` or `pyproject.toml`.
    Python,
    /// `go.mod`.
    Go,
}

impl Language {
    /// Its name in the summary.
    pub fn label(self) -> &'static str {
        match self {
            Language::Node => "Node.js",
            Language::Python => "Python",
            Language::Go => "Go",
        }
    }

    /// The name of its official base image (`FROM node:20`).
    fn image(self) -> &'static str {
        match self {
            Language::Node => "node",
            Language::Python => "python",
            Language::Go => "golang",
        }
    }

    /// The file of `dir` that says the directory is of this language.
    fn marker(self, dir: &Path) -> Option<&'static str> {
        let candidates: &[&'static str] = match self {
            Language::Node => &["package.json"],
            Language::Python => &["requirements.txt", "pyproject.toml"],
            Language::Go => &["go.mod"],
        };
        candidates.iter().copied().find(|m| dir.join(m).is_file())
    }
}

/// The languages of `dir`, each with the file that says so, the likeliest
/// first: the one the Dockerfile builds on, then Go, Python, Node.js (a
/// `package.json` beside a `go.mod` is usually the front end's tooling).
pub(super) fn of(dir: &Path, dockerfile: Option<&Dockerfile>) -> Vec<(Language, &'static str)> {
    let mut present: Vec<(Language, &'static str)> =
        [Language::Go, Language::Python, Language::Node]
            .into_iter()
            .filter_map(|l| l.marker(dir).map(|m| (l, m)))
            .collect();
    // A stable sort: the Dockerfile's language first, the others in order.
    present.sort_by_key(|(l, _)| !dockerfile.is_some_and(|d| d.based_on(l.image())));
    present
}

/// Fills `g` with the rules of its language; Err (why) when the directory is
/// no service after all (a library, the root of npm workspaces).
pub(super) fn fill(g: &mut Guess, language: Language) -> Result<(), String> {
    match language {
        Language::Node => node(g),
        Language::Python => {
            python(g);
            Ok(())
        }
        Language::Go => go(g),
    }
}

/// The lockfiles of `dir` among `names`.
fn present(dir: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|n| dir.join(n).is_file())
        .map(|n| n.to_string())
        .collect()
}

fn node(g: &mut Guess) -> Result<(), String> {
    let dir = g.dir.clone();
    let package: Value = match std::fs::read_to_string(dir.join("package.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            g.notes.push(format!("package.json does not parse ({e})"));
            Value::Null
        }
    };
    let script = |name: &str| {
        package
            .pointer(&format!("/scripts/{name}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if package.get("workspaces").is_some() && script("start").is_none() {
        return Err("the root of npm workspaces, with no start script".into());
    }
    let has_deps = ["dependencies", "devDependencies"].iter().any(|k| {
        package
            .get(k)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
    });
    let lockfiles = present(
        &dir,
        &[
            "package-lock.json",
            "npm-shrinkwrap.json",
            "yarn.lock",
            "pnpm-lock.yaml",
        ],
    );
    if has_deps {
        let install = match lockfiles.first().map(String::as_str) {
            Some("yarn.lock") => "yarn install --frozen-lockfile",
            Some("pnpm-lock.yaml") => "pnpm install --frozen-lockfile",
            Some(_) => "npm ci",
            None => "npm install",
        };
        g.build_local.push(install.into());
        g.ignore.push("node_modules/".into());
    }
    if script("build").is_some() {
        g.build_local.push("npm run build".into());
        g.run.push(Step {
            cmd: "npm run build".into(),
            trigger: vec![],
        });
    }
    g.command = node_command(&dir, script("start"), &package);
    g.fall_back_on.push("package.json".into());
    g.fall_back_on.extend(lockfiles);
    Ok(())
}

/// How a Node.js app starts: its start script (run directly when it is a
/// plain `node ...`, else through `npm start`, which puts
/// `node_modules/.bin` on the PATH and runs the script's shell), its `main`,
/// or a usual entry file.
fn node_command(
    dir: &Path,
    start: Option<String>,
    package: &Value,
) -> Option<Sourced<Vec<String>>> {
    if let Some(start) = start {
        let plain = !start.contains(['&', '|', ';', '<', '>', '(', ')', '$', '`', '*', '?', '=']);
        let argv = match shell_words::split(&start) {
            Ok(argv) if plain && argv.first().is_some_and(|w| w == "node") => argv,
            _ => vec!["npm".into(), "start".into()],
        };
        return Some(Sourced::new(argv, "package.json scripts.start"));
    }
    if let Some(main) = package.get("main").and_then(Value::as_str)
        && dir.join(main).is_file()
    {
        return Some(Sourced::new(
            vec!["node".into(), main.into()],
            "package.json main",
        ));
    }
    ["server.js", "index.js", "app.js", "main.js"]
        .iter()
        .find(|f| dir.join(f).is_file())
        .map(|f| Sourced::new(vec!["node".into(), f.to_string()], &format!("{f} exists")))
}

/// How `pip` installs `requirements.txt` where the local root and an image
/// both find it: into `.deps` (`PYTHONPATH=.deps`), no system site touched.
pub(super) const PIP_INSTALL: &str =
    "python3 -m pip install --quiet --disable-pip-version-check --target .deps -r requirements.txt";

fn python(g: &mut Guess) {
    let dir = g.dir.clone();
    if dir.join("requirements.txt").is_file() {
        g.env.push((
            "PYTHONPATH".into(),
            Sourced::new(".deps".into(), "pip installs into .deps"),
        ));
        g.env.push((
            "PIP_ROOT_USER_ACTION".into(),
            Sourced::new("ignore".into(), "pip installs into .deps"),
        ));
        g.build_local.push(PIP_INSTALL.into());
        g.run.push(Step {
            cmd: PIP_INSTALL.into(),
            trigger: vec!["requirements.txt".into()],
        });
        g.ignore.push(".deps/".into());
    } else {
        g.notes.push(
            "the dependencies of pyproject.toml are not installed: add a build.local step \
             (e.g. python3 -m pip install --target .deps .) if the app needs them"
                .into(),
        );
    }
    g.ignore.push("__pycache__/".into());
    g.command = [
        ("app.py", &["python3", "app.py"][..]),
        ("main.py", &["python3", "main.py"]),
        ("server.py", &["python3", "server.py"]),
        (
            "manage.py",
            &["python3", "manage.py", "runserver", "--noreload"],
        ),
    ]
    .iter()
    .find(|(f, _)| dir.join(f).is_file())
    .map(|(f, argv)| {
        Sourced::new(
            argv.iter().map(|w| w.to_string()).collect(),
            &format!("{f} exists"),
        )
    });
    g.fall_back_on.extend(present(
        &dir,
        &["poetry.lock", "Pipfile.lock", "uv.lock", "pdm.lock"],
    ));
}

fn go(g: &mut Guess) -> Result<(), String> {
    let dir = g.dir.clone();
    let (package, others) =
        main_package(&dir).ok_or("go.mod without a main package (a library)")?;
    if !others.is_empty() {
        g.notes.push(format!(
            "builds {package}; {} too: a service each needs a directory (or `dir:`) of its own",
            others.join(", ")
        ));
    }
    let build = format!("go build -o bin/{} {package}", g.name);
    g.build_local.push(build.clone());
    g.command = Some(Sourced::new(
        vec![format!("./bin/{}", g.name)],
        "built by build.local",
    ));
    g.ignore.push("bin/".into());
    let mut trigger = vec!["**/*.go".to_string(), "go.mod".into()];
    trigger.extend(present(&dir, &["go.sum"]));
    g.run.push(Step {
        cmd: build,
        trigger,
    });
    Ok(())
}

/// The package `go build` makes the app of: `.` when the module's root is
/// `package main`, else `./cmd/NAME` (the one named like the directory when
/// there are several); and the other commands of `cmd/`.
fn main_package(dir: &Path) -> Option<(String, Vec<String>)> {
    if is_main(dir) {
        return Some((".".into(), vec![]));
    }
    let mut cmds: Vec<String> = std::fs::read_dir(dir.join("cmd"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir() && is_main(&e.path()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    cmds.sort();
    let own = dir.file_name().and_then(|n| n.to_str());
    let chosen = cmds
        .iter()
        .find(|c| Some(c.as_str()) == own)
        .or(cmds.first())?
        .clone();
    let others = cmds
        .into_iter()
        .filter(|c| *c != chosen)
        .map(|c| format!("./cmd/{c}"))
        .collect();
    Some((format!("./cmd/{chosen}"), others))
}

/// Whether a Go file of `dir` (not a test) is `package main`.
fn is_main(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.ends_with(".go")
            && !name.ends_with("_test.go")
            && std::fs::read_to_string(e.path()).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.trim() == "package main" || l.starts_with("package main "))
            })
    })
}
