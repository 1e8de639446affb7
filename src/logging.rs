//! Process-wide logging: text for people or JSON for log pipelines, to
//! stderr, with a filter that can be changed while the sidecar runs (the
//! admin port's `/admin/log-level`), because turning on debug logs should
//! not need a restart that drops every stream in flight.
//!
//! A log line is one line whatever a caller sends: JSON escapes every
//! control character in a string, and the text format writes string
//! fields quoted and escaped; [`OneLine`] escapes what is left (a caller's
//! string in a message or a Display field) before it reaches stderr.

use crate::config::{LogFormat, LoggingSettings};
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The variable whose filter wins over the config file's `logging.level`.
pub const LOG_ENV: &str = "LLM_SIDECAR_LOG";

struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    current: std::sync::Mutex<String>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// The OpenTelemetry SDK logs its own life (providers set, instruments
/// made) at info and debug: noise in the sidecar's log unless a filter
/// asks for it by name.
const QUIET_DEPENDENCIES: &str =
    "opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn";

fn parse(filter: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    if filter.contains("opentelemetry") {
        EnvFilter::builder().parse(filter)
    } else {
        EnvFilter::builder().parse(format!("{filter},{QUIET_DEPENDENCIES}"))
    }
}

/// Installs the subscriber once per process; later calls do nothing.
pub fn init(settings: &LoggingSettings) {
    if CONTROL.get().is_some() {
        return;
    }
    let wanted = std::env::var(LOG_ENV)
        .ok()
        .or_else(|| settings.level.clone())
        .unwrap_or_else(|| "info".to_owned());
    let (filter, shown) = match parse(&wanted) {
        Ok(filter) => (filter, wanted),
        Err(error) => {
            eprintln!("llm-sidecar: ignoring the log filter `{wanted}` ({error}); using info");
            (parse("info").expect("a valid filter"), "info".to_owned())
        }
    };
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(ansi)
                        .with_writer(move || OneLine {
                            inner: std::io::stderr(),
                            ansi,
                        }),
                )
                .try_init()
        }
    };
    if installed.is_ok() {
        let _ = CONTROL.set(Control {
            handle,
            current: std::sync::Mutex::new(shown),
        });
    }
}

/// The text format's writer: each event arrives whole, ending in a line
/// break, and any other line break, carriage return or control character
/// in it is written as `\xNN`, so no caller's string can start a line of
/// its own or (when stderr is not a terminal, which gets colours) send a
/// terminal escape sequence. Events without one, nearly all, pass as
/// they are.
struct OneLine<W> {
    inner: W,
    /// Colours on: ESC is the formatter's own.
    ansi: bool,
}

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (line, end) = match buf.strip_suffix(b"\n") {
            Some(line) => (line, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !line.iter().any(|&byte| self.escapes(byte)) {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut escaped = Vec::with_capacity(buf.len() + 32);
        for &byte in line {
            if self.escapes(byte) {
                write!(escaped, "\\x{byte:02x}")?;
            } else {
                escaped.push(byte);
            }
        }
        escaped.extend_from_slice(end);
        self.inner.write_all(&escaped)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> OneLine<W> {
    fn escapes(&self, byte: u8) -> bool {
        match byte {
            b'\t' => false,
            0x1b => !self.ansi,
            0x00..=0x1f | 0x7f => true,
            _ => false,
        }
    }
}

/// The filter in force, when this process installed the logging.
pub fn level() -> Option<String> {
    let control = CONTROL.get()?;
    Some(
        control
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone(),
    )
}

/// Replaces the filter, e.g. "debug" or "info,llm_sidecar::pipeline=debug".
pub fn set_level(filter: &str) -> Result<(), String> {
    let control = CONTROL
        .get()
        .ok_or_else(|| "logging is not managed by this process".to_owned())?;
    let parsed =
        parse(filter).map_err(|error| format!("`{filter}` is not a log filter: {error}"))?;
    control
        .handle
        .reload(parsed)
        .map_err(|error| format!("cannot change the log filter: {error}"))?;
    *control
        .current
        .lock()
        .unwrap_or_else(|poison| poison.into_inner()) = filter.to_owned();
    tracing::info!(filter, "log filter changed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::OneLine;
    use std::io::Write as _;

    fn written(event: &[u8], ansi: bool) -> String {
        let mut line = OneLine {
            inner: Vec::new(),
            ansi,
        };
        line.write_all(event).unwrap();
        String::from_utf8(line.inner).unwrap()
    }

    #[test]
    fn an_event_stays_one_line_without_terminal_escapes() {
        let event = b"INFO request model=x\nINFO forged\r\x1b[31m red\tok\n";
        assert_eq!(
            written(event, false),
            "INFO request model=x\\x0aINFO forged\\x0d\\x1b[31m red\tok\n"
        );
        // On a terminal the formatter colours with ESC itself.
        assert_eq!(
            written(b"\x1b[32mINFO\x1b[0m a\nb\n", true),
            "\x1b[32mINFO\x1b[0m a\\x0ab\n"
        );
        assert_eq!(written(b"plain line\n", false), "plain line\n");
    }
}
