//! The real binary's socket directory: the default found through
//! `XDG_RUNTIME_DIR` (and found again by `chat`), made private, and a
//! directory another user could write in refused at start-up.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_llm-sidecar");

/// The binary with the process environment a test controls.
fn sidecar(runtime_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .env("LLM_SIDECAR_LOG", "warn");
    command
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(socket: &Path) {
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no socket at {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_default_socket_and_ledger_are_in_xdg_runtime_dir_and_chat_finds_them() {
    let xdg = tempfile::tempdir().unwrap();
    let served = sidecar(
        xdg.path(),
        &["serve", "--tcp", "", "--http", "", "--admin", ""],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let _served = Killed(served);
    let dir = xdg.path().join("llm-sidecar");
    wait_for(&dir.join("llm-sidecar.sock"));
    assert_eq!(mode_of(&dir), 0o700, "made private");
    assert!(dir.join("ledger.sqlite3").exists(), "the ledger beside it");

    let output = sidecar(xdg.path(), &["chat", "found by the same chain"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "found by the same chain"
    );
}

/// `serve` on a socket in `dir`, expected to refuse to start.
fn refused(dir: &Path) -> String {
    let socket = dir.join("s.sock");
    let output: Output = sidecar(
        dir,
        &[
            "serve",
            "--uds",
            socket.to_str().unwrap(),
            "--tcp",
            "",
            "--http",
            "",
            "--admin",
            "",
            "--ledger",
            "",
        ],
    )
    .output()
    .unwrap();
    assert!(!output.status.success(), "it started in {}", dir.display());
    assert!(!socket.exists());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_socket_directory_others_may_write_in_stops_the_start_saying_what_to_change() {
    let root = tempfile::tempdir().unwrap();
    let open = root.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let stderr = refused(&open);
    let real = open.canonicalize().unwrap();
    assert!(stderr.contains("refusing the socket directory"), "{stderr}");
    assert!(stderr.contains("mode 0777"), "{stderr}");
    assert!(
        stderr.contains(&format!("`chmod go-w {}`", real.display())),
        "{stderr}"
    );
}

#[test]
fn a_socket_directory_of_another_user_stops_the_start_saying_what_to_change() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: giving a directory to another uid needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let theirs = root.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
    let stderr = refused(&theirs);
    assert!(stderr.contains("owner uid 65534"), "{stderr}");
    assert!(stderr.contains("belongs to another user"), "{stderr}");
    assert!(stderr.contains("--uds"), "{stderr}");
}
