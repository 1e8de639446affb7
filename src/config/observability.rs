//! Typed settings for what watches the calls rather than serves them: the
//! usage ledger, prices, telemetry export and logging.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The metadata key (gRPC) or header (HTTP) a caller names itself with.
pub const DEFAULT_CALLER_HEADER: &str = "x-llm-caller";

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerSettings {
    pub enabled: bool,
    pub path: PathBuf,
    pub retention_max_age: Option<Duration>,
    pub retention_max_rows: Option<u64>,
    pub queue_capacity: usize,
    pub caller_header: String,
    /// `[ledger] url`, `url_env` or `url_file`: the fleet ledger.
    pub fleet: Option<FleetSettings>,
}

/// Where the fleet ledger's PostgreSQL URL comes from, and its spool.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    pub url: FleetUrl,
    /// Rows kept in the local file while PostgreSQL is away.
    pub spool_max_rows: u64,
}

/// The URL itself (already checked, shown without its password), or where
/// to read it at start.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetUrl {
    Inline(Box<crate::ledger::FleetTarget>),
    Env(String),
    File(PathBuf),
}

impl LedgerSettings {
    /// The defaults, the ledger kept in `runtime_dir` (beside the default
    /// socket; [`crate::runtime_dir`]).
    pub fn in_dir(runtime_dir: &Path) -> Self {
        LedgerSettings {
            enabled: true,
            path: runtime_dir.join(crate::runtime_dir::LEDGER_FILE),
            retention_max_age: None,
            retention_max_rows: None,
            queue_capacity: 65_536,
            caller_header: DEFAULT_CALLER_HEADER.to_owned(),
            fleet: None,
        }
    }
}

/// The file's telemetry keys; unset ones come from the OTEL_* variables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetrySettings {
    pub endpoint: Option<String>,
    pub protocol: Option<String>,
    pub service_name: Option<String>,
    pub capture_content: Option<bool>,
    pub capture_max_bytes: Option<usize>,
    pub sampler_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PriceSettings {
    pub model: String,
    pub input_per_million: f64,
    pub output_per_million: f64,
    pub cached_input_per_million: Option<f64>,
    pub cache_write_per_million: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggingSettings {
    pub format: LogFormat,
    /// A tracing filter; `LLM_SIDECAR_LOG` wins over it.
    pub level: Option<String>,
}
