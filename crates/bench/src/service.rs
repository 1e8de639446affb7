//! The processes the suite starts: spawned with their output in a log file,
//! watched through /proc, and always stopped (on drop too), by their own
//! ids: SIGTERM to the whole tree, SIGKILL to what is left after a grace.

use crate::procfs::Tree;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub tree: Tree,
    pub log: PathBuf,
    child: Child,
}

impl Service {
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Service> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        Ok(Service {
            name: name.to_owned(),
            tree: Tree { root: child.id() },
            log: log.to_owned(),
            child,
        })
    }

    /// Fails with the end of the log when the process has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!("{} exited ({status}):\n{}", self.name, tail.join("\n"));
        }
        Ok(())
    }

    /// Stops the service while the runtime keeps running, so the caller's
    /// dropped connections get closed and the service can drain and exit
    /// in time (a blocking wait would hold them open until the SIGKILL).
    pub async fn shutdown(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal("-TERM", &self.tree.pids());
        for _ in 0..250 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Drop finishes the job.
    }

    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pids = self.tree.pids();
        signal("-TERM", &pids);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Children the root did not take down with it.
        let left: Vec<u32> = pids
            .into_iter()
            .filter(|&pid| Tree { root: pid }.alive())
            .collect();
        signal("-KILL", &left);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `kill` the command: the lint config forbids the `unsafe` libc call.
fn signal(which: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(which)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// A loopback port free now (the kernel picks it; the bind is released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `ready` until it holds; returns how long that took.
pub async fn wait_until<F, Fut>(
    service: &mut Service,
    timeout: Duration,
    poll: Duration,
    mut ready: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if ready().await {
            return Ok(started.elapsed());
        }
        service.check_running()?;
        if started.elapsed() > timeout {
            anyhow::bail!(
                "{} not ready after {timeout:?} (log: {})",
                service.name,
                service.log.display()
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// Waits (10 s at most) until `service` accepts TCP connections on `port`.
pub async fn wait_for_port(service: &mut Service, port: u16) -> anyhow::Result<Duration> {
    wait_until(
        service,
        Duration::from_secs(10),
        Duration::from_millis(5),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await
}
