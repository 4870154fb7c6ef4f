//! The one place that finds the `lks-agent` binary a runtime starts:
//! `LKS_AGENT_BIN`, else `lks-agent` next to `lks`, else the one Cargo
//! builds for `--target x86_64-unknown-linux-gnu` beside this target dir,
//! else (for the local runtime) on PATH. Containers and pods may have no
//! libc: for them it must be statically linked.

use super::RuntimeError;
use std::path::{Path, PathBuf};

/// Which agent binary will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// Any (the local runtime runs it on this machine).
    Any,
    /// Statically linked (it runs in containers and pods).
    Static,
}

/// The agent binary for `linkage`, or where lks looked.
pub fn find(linkage: Linkage) -> Result<PathBuf, RuntimeError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("LKS_AGENT_BIN") {
        candidates.push(p.into());
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("lks-agent"));
        if linkage == Linkage::Static
            && let (Some(profile), Some(target)) = (dir.file_name(), dir.parent())
        {
            candidates.push(
                target
                    .join("x86_64-unknown-linux-gnu")
                    .join(profile)
                    .join("lks-agent"),
            );
        }
    }
    let mut looked = Vec::new();
    for c in &candidates {
        match linkage {
            Linkage::Any if c.is_file() => return Ok(c.clone()),
            Linkage::Any => looked.push(c.display().to_string()),
            Linkage::Static => match is_static(c) {
                Some(true) => return Ok(c.clone()),
                Some(false) => looked.push(format!("{} (dynamically linked)", c.display())),
                None => looked.push(c.display().to_string()),
            },
        }
    }
    match linkage {
        Linkage::Any => {
            if let Some(path) = std::env::var_os("PATH") {
                for dir in std::env::split_paths(&path) {
                    let p = dir.join("lks-agent");
                    if p.is_file() {
                        return Ok(p);
                    }
                }
                looked.push("$PATH".into());
            }
            Err(RuntimeError::AgentNotFound {
                looked: looked.join(", "),
            })
        }
        Linkage::Static => Err(RuntimeError::StaticAgentNotFound {
            looked: looked.join(", "),
        }),
    }
}

/// Whether an ELF file has no program interpreter (None: not a readable ELF).
fn is_static(path: &Path) -> Option<bool> {
    let bytes = std::fs::read(path).ok()?;
    let elf = goblin::elf::Elf::parse(&bytes).ok()?;
    Some(elf.interpreter.is_none())
}
