//! The real `llm-sidecar` binary as a child process: started with its
//! stderr in a file, waited for until its socket answers, killed when
//! dropped (a failing test leaves no process behind).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_llm-sidecar");

/// `serve` flags that leave the Unix socket as the only listener.
pub const SOCKET_ONLY: [&str; 6] = ["--tcp", "", "--http", "", "--admin", ""];

pub struct Sidecar {
    pub child: Child,
    log: PathBuf,
}

impl Sidecar {
    /// `llm-sidecar serve ARGS` with `LLM_SIDECAR_LOG=level` (`None`: the
    /// config's level), ready once `socket` accepts connections.
    pub fn serve(args: &[&str], level: Option<&str>, socket: &Path, log: &Path) -> Sidecar {
        Sidecar::serve_with_env(args, level, socket, log, &[])
    }

    /// [`Sidecar::serve`] with variables `env` set for the child.
    pub fn serve_env(
        args: &[&str],
        level: Option<&str>,
        env: &[(&str, &str)],
        socket: &Path,
        log: &Path,
    ) -> Sidecar {
        let env: Vec<(&str, Option<&str>)> = env
            .iter()
            .map(|&(name, value)| (name, Some(value)))
            .collect();
        Sidecar::serve_with_env(args, level, socket, log, &env)
    }

    /// [`Sidecar::serve`] with environment changes: `(name, Some(value))`
    /// sets a variable, `(name, None)` removes it.
    pub fn serve_with_env(
        args: &[&str],
        level: Option<&str>,
        socket: &Path,
        log: &Path,
        env: &[(&str, Option<&str>)],
    ) -> Sidecar {
        let mut command = Command::new(BIN);
        command.arg("serve").args(args);
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        match level {
            Some(level) => command.env("LLM_SIDECAR_LOG", level),
            None => command.env_remove("LLM_SIDECAR_LOG"),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let sidecar = Sidecar {
            child,
            log: log.to_owned(),
        };
        sidecar.wait_until(|| std::os::unix::net::UnixStream::connect(socket).is_ok());
        sidecar
    }

    /// Waits for a TCP listener of the sidecar on loopback, e.g. the
    /// health port, which is bound after the Unix socket.
    pub fn wait_for_port(&self, port: u16) {
        self.wait_until(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    fn wait_until(&self, ready: impl Fn() -> bool) {
        let started = Instant::now();
        while !ready() {
            assert!(
                !self.exited(),
                "the sidecar exited while starting: {}",
                self.log()
            );
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the sidecar did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the child has exited (a zombie not yet reaped, state `Z` in
    /// `/proc/PID/stat`), read without `&mut` to the `Child`: a sidecar
    /// that fails to start says why at once instead of after the timeout.
    fn exited(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        // The state follows the command name, which is in parentheses.
        stat.ok()
            .and_then(|stat| Some(stat[stat.rfind(')')? + 1..].trim_start().starts_with('Z')))
            // Unreadable: keep waiting, the timeout still ends it.
            .unwrap_or(false)
    }

    /// What it has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `HUP`).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free a moment ago, for a listener the child binds.
///
/// Picked at random below Linux's default ephemeral range (32768–60999,
/// `net.ipv4.ip_local_port_range`), not with a bind to port 0: the kernel
/// takes port 0's answer from that range, and so does every outgoing
/// connection's source port, so with tests connecting in parallel a port
/// freed here was now and then taken by someone's connection before the
/// child bound it ("Address already in use").
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let port = fastrand::u16(20_000..32_768);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
