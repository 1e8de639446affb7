//! The signals `serve` answers: SIGTERM and SIGINT stop it, SIGHUP reloads.
//! They are listened for before the first listener is bound: a signal that
//! arrived in between would meet its default action, which kills the
//! process at once and leaves the socket file behind.

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
    /// Taken by the reload watcher.
    pub hangup: Option<Signal>,
}

impl Signals {
    /// Must run inside the runtime. A signal that cannot be listened for
    /// is reported and left to its default action.
    pub fn install() -> Signals {
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for {name}");
                None
            }
        };
        Signals {
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            hangup: listen(SignalKind::hangup(), "SIGHUP"),
        }
    }

    /// Resolves at the first SIGTERM or SIGINT.
    pub async fn stop(&mut self) {
        tokio::select! {
            Some(()) = next(&mut self.terminate) => {}
            Some(()) = next(&mut self.interrupt) => {}
        }
    }
}

async fn next(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
