//! The runtime directory: where the embedded default serves its socket and
//! keeps its ledger when no path is configured.
//!
//! The first that applies (the XDG Base Directory rules, then the FHS):
//! 1. `$XDG_RUNTIME_DIR/llm-sidecar`, when the variable holds an absolute
//!    path (a relative one is ignored, as the XDG rules say);
//! 2. `/run/llm-sidecar`, when it exists or this process may create it in
//!    `/run` (root, or an image that made `/run` writable);
//! 3. `/tmp/llm-sidecar-<uid>`, made by the sidecar with mode 0700.
//!
//! Never a fixed name in `/tmp`: another local user could create it first
//! and receive the app's prompts on a socket of their own. Whichever is
//! chosen, the sidecar checks the directory before binding in it
//! (`server::socket_dir`). Clients (`llm-sidecar chat`) resolve the same
//! chain without creating anything, and find the same socket.

use crate::config::Env;
use std::path::{Path, PathBuf};

/// The socket's file name in the runtime directory.
pub const SOCKET_FILE: &str = "llm-sidecar.sock";
/// The ledger's file name in the runtime directory.
pub const LEDGER_FILE: &str = "ledger.sqlite3";
const DIR_NAME: &str = "llm-sidecar";

/// The runtime directory for this process: `XDG_RUNTIME_DIR` read through
/// `env`, `/run` and `/tmp` as they are, the effective uid.
pub fn default_dir(env: Env<'_>) -> PathBuf {
    choose(
        env("XDG_RUNTIME_DIR").as_deref(),
        Path::new("/run"),
        Path::new("/tmp"),
        rustix::process::geteuid().as_raw(),
    )
}

/// The default socket path: [`SOCKET_FILE`] in [`default_dir`].
pub fn default_socket(env: Env<'_>) -> PathBuf {
    default_dir(env).join(SOCKET_FILE)
}

/// The chain of the module doc, with its roots given: `run` stands for
/// `/run`, `tmp` for `/tmp`.
pub fn choose(xdg_runtime_dir: Option<&str>, run: &Path, tmp: &Path, uid: u32) -> PathBuf {
    if let Some(xdg) = xdg_runtime_dir
        .map(Path::new)
        .filter(|dir| dir.is_absolute())
    {
        return xdg.join(DIR_NAME);
    }
    let in_run = run.join(DIR_NAME);
    if in_run.is_dir() || may_create_in(run) {
        return in_run;
    }
    tmp.join(format!("{DIR_NAME}-{uid}"))
}

/// Whether this process may add an entry to `dir` (write and search
/// permission for the effective ids, as `mkdir` would check them).
fn may_create_in(dir: &Path) -> bool {
    use rustix::fs::{Access, AtFlags, CWD, accessat};
    accessat(
        CWD,
        dir,
        Access::WRITE_OK | Access::EXEC_OK,
        AtFlags::EACCESS,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_runtime_dir_comes_first_when_absolute() {
        let roots = tempfile::tempdir().unwrap();
        let run = roots.path().join("run");
        std::fs::create_dir(&run).unwrap();
        assert_eq!(
            choose(Some("/run/user/1000"), &run, roots.path(), 1000),
            Path::new("/run/user/1000/llm-sidecar")
        );
        // Relative: ignored, as the XDG rules say; empty likewise.
        for ignored in [Some("run/user/1000"), Some(""), None] {
            assert_eq!(
                choose(ignored, &run, roots.path(), 1000),
                run.join("llm-sidecar")
            );
        }
    }

    #[test]
    fn run_is_used_when_the_directory_exists_or_may_be_created() {
        let roots = tempfile::tempdir().unwrap();
        let run = roots.path().join("run");
        std::fs::create_dir(&run).unwrap();
        // This process may write in its own temporary directory.
        assert_eq!(choose(None, &run, roots.path(), 7), run.join("llm-sidecar"));
        std::fs::create_dir(run.join("llm-sidecar")).unwrap();
        assert_eq!(choose(None, &run, roots.path(), 7), run.join("llm-sidecar"));
    }

    #[test]
    fn a_per_uid_directory_in_tmp_comes_last() {
        let roots = tempfile::tempdir().unwrap();
        let no_run = roots.path().join("no-run");
        assert_eq!(
            choose(None, &no_run, roots.path(), 1234),
            roots.path().join("llm-sidecar-1234")
        );
    }
}
