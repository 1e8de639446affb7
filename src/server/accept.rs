//! Accepting connections without spinning when the process is out of file
//! descriptors (or memory, or any other reason `accept` keeps failing).
//!
//! An `accept` that fails with EMFILE or ENFILE leaves the connection in
//! the kernel's queue, so the listener is ready again at once: a loop that
//! retries straight away (tonic's does) burns a core and logs nothing. Every
//! listener's connections come through [`resilient`] instead, which waits
//! 10 ms after such an error, doubling to 1 s while the errors go on, and
//! writes one warning per [`LOG_EVERY`] with the count of those it held
//! back. Errors that concern one connection only (the client reset it
//! before it was accepted) are skipped without a wait.

use futures::{Stream, StreamExt as _};
use std::io;
use std::time::Duration;
use tokio::time::Instant;

/// The first wait after a failed `accept`.
pub const FIRST_WAIT: Duration = Duration::from_millis(10);
/// The longest wait between two tries.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// At most one warning per listener this often; the rest are counted.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// `incoming`'s connections, with its errors waited out rather than
/// passed on: the stream yields only accepted connections and ends when
/// `incoming` ends. `listener` names it in the warning (`"gRPC TCP"`).
pub fn resilient<S, T>(incoming: S, listener: &'static str) -> impl Stream<Item = io::Result<T>>
where
    S: Stream<Item = io::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let state = (incoming.boxed(), Backoff::new(listener));
    futures::stream::unfold(state, |(mut incoming, mut backoff)| async move {
        loop {
            match incoming.next().await? {
                Ok(connection) => {
                    backoff.succeeded();
                    return Some((Ok(connection), (incoming, backoff)));
                }
                Err(error) if concerns_one_connection(&error) => {}
                Err(error) => backoff.failed(&error).await,
            }
        }
    })
}

/// Errors after which the listener itself is fine: the next connection
/// may be accepted at once.
fn concerns_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// The wait after each failure in a row, and the warnings about them.
#[derive(Debug)]
struct Backoff {
    listener: &'static str,
    wait: Duration,
    log: LogLimiter,
}

impl Backoff {
    fn new(listener: &'static str) -> Self {
        Backoff {
            listener,
            wait: FIRST_WAIT,
            log: LogLimiter::new(LOG_EVERY),
        }
    }

    fn succeeded(&mut self) {
        self.wait = FIRST_WAIT;
    }

    async fn failed(&mut self, error: &io::Error) {
        if let Some(suppressed) = self.log.admit(Instant::now()) {
            tracing::warn!(
                listener = self.listener,
                %error,
                suppressed,
                retry_in_ms = self.wait.as_millis() as u64,
                "cannot accept connections: {error}; waiting before the next try"
            );
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(MAX_WAIT);
    }
}

/// One line per `every`: [`admit`](Self::admit) says whether to write
/// this one, and how many were held back since the last.
#[derive(Debug)]
struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(held back since the last line)` when a line is due at `now`.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error())
    }

    #[test]
    fn one_line_per_period_with_the_count_held_back() {
        let start = Instant::now();
        let mut log = LogLimiter::new(Duration::from_secs(5));
        assert_eq!(log.admit(start), Some(0));
        assert_eq!(log.admit(start + Duration::from_secs(1)), None);
        assert_eq!(log.admit(start + Duration::from_secs(4)), None);
        assert_eq!(log.admit(start + Duration::from_secs(5)), Some(2));
        assert_eq!(log.admit(start + Duration::from_secs(6)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_wait_longer_and_longer_up_to_a_second() {
        // Twelve EMFILEs, then a connection: 10+20+...+640 ms, then 1 s × 5.
        let items = (0..12).map(|_| Err(emfile())).chain([Ok(7)]);
        let began = Instant::now();
        let mut accepted = std::pin::pin!(resilient(futures::stream::iter(items), "test"));
        assert_eq!(accepted.next().await.unwrap().unwrap(), 7);
        let waited = began.elapsed();
        assert_eq!(waited, Duration::from_millis(1270 + 5000));
        assert!(accepted.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_starts_the_wait_again_and_reset_clients_cost_nothing() {
        let items = vec![
            Err(emfile()),
            Err(emfile()),
            Ok(1),
            Err(io::Error::from(io::ErrorKind::ConnectionAborted)),
            Err(emfile()),
            Ok(2),
        ];
        let began = Instant::now();
        let accepted: Vec<i32> = resilient(futures::stream::iter(items), "test")
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(accepted, [1, 2]);
        assert_eq!(began.elapsed(), Duration::from_millis(10 + 20 + 10));
    }
}
