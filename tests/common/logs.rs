//! The process's log lines, captured from the first call on (each test
//! runs in its own process under nextest, so a test sees its own lines).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn buffer() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    })
}

/// Starts capturing the `info` lines and above (call before the sidecar
/// starts).
pub fn capture() {
    let _ = buffer();
}

/// Everything logged since [`capture`].
pub fn text() -> String {
    String::from_utf8_lossy(&buffer().0.lock().unwrap()).into_owned()
}
