//! `lks-agent install DEST`: copies the running binary to DEST. The injected init
//! container runs it from the agent image (`FROM scratch`: no shell, no `cp`) to
//! put the agent in the pod's `emptyDir`, where the app container runs it.

use anyhow::{Context, bail};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Copies the running executable to `dest` atomically: a temporary file beside
/// it is written, synced and made executable (0755), then renamed over `dest`,
/// so nothing ever runs a half-written agent. DEST's directory is created.
/// Returns the number of bytes installed.
pub fn install(dest: &Path) -> anyhow::Result<u64> {
    let name = dest
        .file_name()
        .with_context(|| format!("{} does not name a file", dest.display()))?;
    if dest.is_dir() {
        bail!(
            "{} is a directory: give the path of the file to create",
            dest.display()
        );
    }
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;

    let mut source = open_self()?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".lks-install.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| -> anyhow::Result<u64> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let bytes = std::io::copy(&mut source, &mut out)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        out.flush()?;
        // Explicit: the mode given at creation is filtered by the umask.
        out.set_permissions(std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot chmod {}", tmp.display()))?;
        out.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        drop(out);
        std::fs::rename(&tmp, dest)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()))?;
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let bytes = result?;
    // The rename is durable once the directory is synced (best effort: some
    // file systems refuse fsync on a directory).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(bytes)
}

/// The running executable. `/proc/self/exe` opens it even if its path was
/// replaced or deleted since it started; `current_exe` is the fallback.
fn open_self() -> anyhow::Result<File> {
    match File::open("/proc/self/exe") {
        Ok(f) => Ok(f),
        Err(proc_err) => {
            let exe = std::env::current_exe().with_context(|| {
                format!("cannot find the running executable (/proc/self/exe: {proc_err})")
            })?;
            File::open(&exe).with_context(|| format!("cannot read {}", exe.display()))
        }
    }
}

/// `lks-agent install DEST`, with its one line of output.
pub fn run(dest: &Path) -> anyhow::Result<()> {
    let bytes = install(dest)?;
    println!(
        "installed lks-agent {} ({bytes} bytes) at {}",
        env!("CARGO_PKG_VERSION"),
        dest.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_an_executable_copy_and_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b/lks-agent");
        let bytes = install(&dest).unwrap();
        let exe = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(bytes, exe.len() as u64);
        assert!(std::fs::read(&dest).unwrap() == exe, "identical copy");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);

        std::fs::write(&dest, b"old").unwrap();
        install(&dest).unwrap();
        assert!(std::fs::read(&dest).unwrap() == exe, "replaced");
        let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["lks-agent"], "no temporary file left");
    }

    #[test]
    fn refuses_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let e = install(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
    }
}
