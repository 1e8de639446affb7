//! Checks for the ledger, prices, telemetry and logging tables.

use super::Checker;
use crate::config::ConfigError;
use crate::config::observability::{
    FleetSettings, FleetUrl, LedgerSettings, LogFormat, LoggingSettings, PriceSettings,
    TelemetrySettings,
};
use crate::config::raw::{RawLedger, RawLogging, RawPrice, RawTelemetry};
use std::path::PathBuf;
use std::time::Duration;

impl Checker<'_> {
    pub(super) fn ledger(&self, raw: RawLedger) -> Result<LedgerSettings, ConfigError> {
        let defaults = LedgerSettings::in_dir(self.runtime_dir);
        let path = match raw.path.as_deref() {
            None => defaults.path,
            Some("") => {
                return Err(self.error(
                    "ledger.path",
                    "must not be empty (set `enabled = false` to turn the ledger off)",
                ));
            }
            Some(path) => PathBuf::from(path),
        };
        let retention_max_age = match raw.retention_days {
            None => None,
            // Up to 100 years: past that the age overflows the clock.
            Some(days) if days.is_finite() && days > 0.0 && days <= 36_500.0 => {
                Some(Duration::from_secs_f64(days * 86_400.0))
            }
            Some(days) => {
                return Err(self.error(
                    "ledger.retention_days",
                    format!("{days} is not a number of days from more than 0 to 36500"),
                ));
            }
        };
        if raw.retention_max_rows == Some(0) {
            return Err(self.error("ledger.retention_max_rows", "must be at least 1"));
        }
        let queue_capacity = raw.queue_capacity.unwrap_or(defaults.queue_capacity);
        if queue_capacity == 0 {
            return Err(self.error("ledger.queue_capacity", "must be at least 1"));
        }
        let caller_header = match raw.caller_header {
            None => defaults.caller_header,
            Some(header) => {
                let lower = header.to_ascii_lowercase();
                if http::HeaderName::from_bytes(lower.as_bytes()).is_err()
                    || lower.ends_with("-bin")
                {
                    return Err(self.error(
                        "ledger.caller_header",
                        format!("`{header}` is not a valid ASCII header / metadata name"),
                    ));
                }
                lower
            }
        };
        let fleet = self.fleet(raw.url, raw.url_env, raw.url_file, raw.spool_max_rows)?;
        Ok(LedgerSettings {
            fleet,
            enabled: raw.enabled.unwrap_or(true),
            path,
            retention_max_age,
            retention_max_rows: raw.retention_max_rows,
            queue_capacity,
            caller_header,
        })
    }

    /// `url`, `url_env` or `url_file` (at most one), and `spool_max_rows`.
    /// An inline URL is parsed now; errors never repeat it.
    fn fleet(
        &self,
        url: Option<String>,
        url_env: Option<String>,
        url_file: Option<String>,
        spool_max_rows: Option<u64>,
    ) -> Result<Option<FleetSettings>, ConfigError> {
        let url = match (url, url_env, url_file) {
            (None, None, None) => {
                if spool_max_rows.is_some() {
                    return Err(self.error(
                        "ledger.spool_max_rows",
                        "applies only with `url`, `url_env` or `url_file`",
                    ));
                }
                return Ok(None);
            }
            (Some(url), None, None) => FleetUrl::Inline(Box::new(
                crate::ledger::FleetTarget::parse(&url, Vec::new())
                    .map_err(|message| self.error("ledger.url", message))?,
            )),
            (None, Some(name), None) if !name.is_empty() => FleetUrl::Env(name),
            (None, None, Some(path)) if !path.is_empty() => FleetUrl::File(PathBuf::from(path)),
            (None, Some(_), None) => return Err(self.error("ledger.url_env", "must not be empty")),
            (None, None, Some(_)) => {
                return Err(self.error("ledger.url_file", "must not be empty"));
            }
            _ => {
                return Err(self.error("ledger.url", "give one of `url`, `url_env` and `url_file`"));
            }
        };
        let spool_max_rows = spool_max_rows.unwrap_or(crate::ledger::fleet::DEFAULT_SPOOL_MAX_ROWS);
        if spool_max_rows == 0 {
            return Err(self.error("ledger.spool_max_rows", "must be at least 1"));
        }
        Ok(Some(FleetSettings {
            url,
            spool_max_rows,
        }))
    }

    pub(super) fn prices(&self, raw: Vec<RawPrice>) -> Result<Vec<PriceSettings>, ConfigError> {
        raw.into_iter()
            .enumerate()
            .map(|(index, price)| {
                let key = |field: &str| format!("prices[{index}].{field}");
                if price.model.is_empty() {
                    return Err(self.error(key("model"), "must not be empty"));
                }
                if let Err(error) = globset::Glob::new(&price.model) {
                    return Err(self.error(key("model"), format!("not a valid glob: {error}")));
                }
                for (field, value) in [
                    ("input", Some(price.input)),
                    ("output", Some(price.output)),
                    ("cached_input", price.cached_input),
                    ("cache_write", price.cache_write),
                ] {
                    if let Some(value) = value
                        && !(value.is_finite() && value >= 0.0)
                    {
                        return Err(self.error(
                            key(field),
                            format!("{value} is not a price (USD per million tokens, 0 or more)"),
                        ));
                    }
                }
                Ok(PriceSettings {
                    model: price.model,
                    input_per_million: price.input,
                    output_per_million: price.output,
                    cached_input_per_million: price.cached_input,
                    cache_write_per_million: price.cache_write,
                })
            })
            .collect()
    }

    pub(super) fn telemetry(&self, raw: RawTelemetry) -> Result<TelemetrySettings, ConfigError> {
        if let Some(protocol) = raw.protocol.as_deref()
            && !matches!(protocol, "grpc" | "http/protobuf")
        {
            return Err(self.error(
                "telemetry.protocol",
                format!("`{protocol}` is not one of \"grpc\", \"http/protobuf\""),
            ));
        }
        if let Some(ratio) = raw.sampler_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(self.error(
                "telemetry.sampler_ratio",
                format!("{ratio} is not between 0.0 and 1.0"),
            ));
        }
        if raw.capture_max_bytes == Some(0) {
            return Err(self.error("telemetry.capture_max_bytes", "must be at least 1"));
        }
        Ok(TelemetrySettings {
            endpoint: raw.endpoint.filter(|endpoint| !endpoint.is_empty()),
            protocol: raw.protocol,
            service_name: raw.service_name,
            capture_content: raw.capture_content,
            capture_max_bytes: raw.capture_max_bytes,
            sampler_ratio: raw.sampler_ratio,
        })
    }

    pub(super) fn logging(&self, raw: RawLogging) -> Result<LoggingSettings, ConfigError> {
        let format = match raw.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(self.error(
                    "logging.format",
                    format!("`{other}` is not one of \"text\", \"json\""),
                ));
            }
        };
        if let Some(level) = raw.level.as_deref()
            && let Err(error) = tracing_subscriber::EnvFilter::builder().parse(level)
        {
            return Err(self.error("logging.level", format!("`{level}`: {error}")));
        }
        Ok(LoggingSettings {
            format,
            level: raw.level,
        })
    }
}
