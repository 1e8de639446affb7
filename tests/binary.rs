//! The real `llm-sidecar` binary: the embedded default offline, the `chat`
//! client, socket hygiene, configuration errors.

mod common;

use common::process::{BIN, SOCKET_ONLY, Sidecar};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What a developer's shell may set that would change what these tests
/// see: the sidecar's own variables and the providers' keys.
const CLEAN_ENV: [(&str, Option<&str>); 9] = [
    ("LLM_SIDECAR_CONFIG", None),
    ("LLM_SIDECAR_UDS", None),
    ("LLM_SIDECAR_TCP", None),
    ("LLM_SIDECAR_HTTP", None),
    ("LLM_SIDECAR_ADMIN", None),
    ("LLM_SIDECAR_LEDGER", None),
    ("OPENAI_API_KEY", None),
    ("OPENROUTER_API_KEY", None),
    ("DEEPSEEK_API_KEY", None),
];

fn sidecar(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).env("LLM_SIDECAR_LOG", "warn");
    for (name, _) in CLEAN_ENV {
        command.env_remove(name);
    }
    command
}

/// Starts `serve` on `socket` (no other listener, no ledger) with `extra`
/// flags and waits until it answers.
fn serve(socket: &Path, extra: &[&str]) -> Sidecar {
    let socket_arg = socket.to_str().unwrap();
    let args = [
        &["--uds", socket_arg, "--ledger", ""][..],
        &SOCKET_ONLY,
        extra,
    ]
    .concat();
    Sidecar::serve_with_env(
        &args,
        Some("warn"),
        socket,
        &socket.with_extension("log"),
        &CLEAN_ENV,
    )
}

fn run(args: &[&str]) -> Output {
    sidecar(args).output().unwrap()
}

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("llm-sidecar.sock")
}

#[test]
fn more_workers_serve_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let _served = serve(&socket, &["--workers", "2"]);
    let output = run(&["chat", "--uds", socket.to_str().unwrap(), "two threads"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "two threads\n");
}

#[test]
fn the_embedded_default_echoes_offline_through_the_chat_command() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let _served = serve(&socket, &[]);
    let output = run(&[
        "chat",
        "--uds",
        socket.to_str().unwrap(),
        "hello from the pod",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from the pod\n"
    );

    let output = run(&[
        "chat",
        "--no-stream",
        "--usage",
        "--uds",
        socket.to_str().unwrap(),
        "two words",
    ]);
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "two words\n");
    assert!(String::from_utf8_lossy(&output.stderr).contains("2 completion"));

    let output = run(&["models", "--uds", socket.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("mock/*"));
}

#[test]
fn the_chat_command_reports_errors_with_their_code() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let _served = serve(&socket, &[]);
    // The default routes gpt-* to OpenAI, whose key is not set here.
    let output = run(&[
        "chat",
        "--uds",
        socket.to_str().unwrap(),
        "--model",
        "gpt-4o-mini",
        "hi",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FailedPrecondition") && stderr.contains("OPENAI_API_KEY"),
        "{stderr}"
    );
    let output = run(&[
        "chat",
        "--uds",
        socket.to_str().unwrap(),
        "--model",
        "nothing-routes-this",
        "hi",
    ]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("NotFound"));
}

#[test]
fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let mut first = serve(&socket, &[]);

    let second = run(&[
        "serve",
        "--uds",
        socket.to_str().unwrap(),
        "--tcp",
        "",
        "--http",
        "",
        "--admin",
        "",
    ]);
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another process is serving on this socket"),
        "{stderr}"
    );

    // A crash leaves the socket file behind.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(socket.exists());
    let _third = serve(&socket, &[]);
    let output = run(&["chat", "--uds", socket.to_str().unwrap(), "still here"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "still here\n");
}

#[test]
fn sigterm_stops_the_sidecar_and_removes_its_socket() {
    // Sent the moment the socket answers, while the other listeners may
    // still be starting: several times, since a signal that beat the
    // handlers once killed the process and left the socket behind.
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let socket = socket_in(&dir);
        let mut served = serve(&socket, &[]);
        let pid = served.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = served.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(!socket.exists());
    }
}

#[test]
fn a_socket_mode_from_the_config_is_applied() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nuds = \"{}\"\nuds_mode = \"0600\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let _served = Sidecar::serve_with_env(
        &[&["--config", config.to_str().unwrap()][..], &SOCKET_ONLY].concat(),
        Some("warn"),
        &socket,
        &dir.path().join("sidecar.log"),
        &CLEAN_ENV,
    );
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn configuration_errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[server]\ntcp = \"0.0.0.0:50051\"\n").unwrap();
    let output = run(&["check-config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("server.tcp"),
        "{stderr}"
    );

    std::fs::write(&config, "[servre]\nuds = \"/tmp/x\"\n").unwrap();
    let stderr =
        String::from_utf8_lossy(&run(&["serve", "--config", config.to_str().unwrap()]).stderr)
            .to_string();
    assert!(
        stderr.contains("bad.toml") && stderr.contains("servre"),
        "{stderr}"
    );

    let output = run(&["serve", "--uds", "", "--tcp", "10.1.2.3:50051"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a loopback address"));
}

#[test]
fn check_config_lists_routes_and_warns_about_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ok.toml");
    std::fs::write(
        &config,
        "[server]\nuds = \"/tmp/x.sock\"\n[providers.or]\nbase_url = \"https://openrouter.ai/api/v1\"\napi_key_env = \"OR_KEY_NOT_SET\"\n[[routes]]\nmodel = \"*/*\"\nprovider = \"or\"\n\
         [[budgets]]\ncaller = \"search\"\nwindow = \"month\"\ntokens = 1000\nusd = 5.0\n",
    )
    .unwrap();
    let output = run(&["check-config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("*/*") && stdout.contains("OR_KEY_NOT_SET"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("budget   caller:search/month (caller:search): 1000 tokens and $5 per month"),
        "{stdout}"
    );
}

#[test]
fn the_readme_configuration_example_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("readme.toml");
    std::fs::write(&config, &readme[start..end]).unwrap();
    let output = run(&["check-config", config.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
