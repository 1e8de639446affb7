//! Process-wide logging: text for people or JSON for log pipelines, to
//! stderr, with a filter that can be changed while the sidecar runs (the
//! admin port's `/admin/log-level`), because turning on debug logs should
//! not need a restart that drops every stream in flight.

use crate::config::{LogFormat, LoggingSettings};
use std::io::IsTerminal;
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
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = CONTROL.set(Control {
            handle,
            current: std::sync::Mutex::new(shown),
        });
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
