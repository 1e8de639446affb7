//! Telemetry settings: the config file's explicit values first, then the
//! standard `OTEL_*` variables, then defaults, resolved once into a
//! [`TelemetryConfig`] that `init` takes as it is.
//!
//! Why resolve here rather than let the OpenTelemetry crates read the
//! environment: the variables are read through an [`Env`] seam so tests never
//! touch the process environment, the file layer can win over them, and a bad
//! value stops start-up with a message naming the variable instead of being
//! silently ignored. (The OTLP exporter still reads a few variables this
//! module does not, such as `OTEL_EXPORTER_OTLP_COMPRESSION` and the
//! `OTEL_BSP_*` batch settings; they keep their standard meaning.)
//!
//! Header values are credentials more often than not: [`OtlpHeaders`] never
//! shows them in `Debug`, and no error message quotes them.

use crate::config::Env;
use axum::http::{HeaderName, HeaderValue, Uri};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub const DEFAULT_SERVICE_NAME: &str = "llm-sidecar";
/// Captured message content is cut here: enough to read a prompt, bounded
/// so one long conversation cannot make a span megabytes large.
pub const DEFAULT_CAPTURE_MAX_BYTES: usize = 16 * 1024;
/// The specification's defaults.
pub const DEFAULT_METRIC_EXPORT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The OTLP transports we build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    /// The spelling of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn parse(value: &str) -> Result<Protocol, String> {
        match value.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(format!(
                "`{other}` is not one of \"grpc\", \"http/protobuf\""
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Where one signal goes. `endpoint` is the final URL: for HTTP it already
/// ends in `/v1/traces` or `/v1/metrics` when it came from a base endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTarget {
    pub endpoint: String,
    pub protocol: Protocol,
}

/// Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`); usually
/// an API key. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OtlpHeaders(pub Vec<(String, String)>);

impl fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, _)| (name, "<redacted>")))
            .finish()
    }
}

/// The head sampler, as `OTEL_TRACES_SAMPLER` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Follow the caller's sampled flag when there is a parent.
    pub parent_based: bool,
    pub root: RootSampler,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    /// Keeps this fraction of traces, by trace id.
    TraceIdRatio(f64),
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            parent_based: true,
            root: RootSampler::AlwaysOn,
        }
    }
}

/// What a config file can say about telemetry; `None` leaves the choice to
/// the environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryFileConfig {
    /// A base endpoint, as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: Option<String>,
    pub headers: Option<OtlpHeaders>,
    pub service_name: Option<String>,
    pub capture_content: Option<bool>,
    pub capture_max_bytes: Option<usize>,
    /// Parent-based trace-id-ratio sampling at this ratio.
    pub sampler_ratio: Option<f64>,
}

impl From<&crate::config::TelemetrySettings> for TelemetryFileConfig {
    fn from(settings: &crate::config::TelemetrySettings) -> Self {
        TelemetryFileConfig {
            endpoint: settings.endpoint.clone(),
            protocol: settings.protocol.clone(),
            headers: None,
            service_name: settings.service_name.clone(),
            capture_content: settings.capture_content,
            capture_max_bytes: settings.capture_max_bytes,
            sampler_ratio: settings.sampler_ratio,
        }
    }
}

/// Everything `init` needs, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// `OTEL_SDK_DISABLED=true`: no OTLP export and no recorded spans (ids
    /// are still made, so trace context still flows). `/metrics` stays on:
    /// it is the sidecar's own endpoint, read locally, not an export.
    pub disabled: bool,
    /// `None`: spans are not exported.
    pub traces: Option<OtlpTarget>,
    /// `None`: metrics are served on `/metrics` only.
    pub metrics: Option<OtlpTarget>,
    pub headers: OtlpHeaders,
    /// Per export request (`OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub export_timeout: Duration,
    pub service_name: String,
    /// Resource attributes besides `service.name`, sorted by key.
    pub resource_attributes: Vec<(String, String)>,
    pub sampler: SamplerConfig,
    pub metric_export_interval: Duration,
    /// Record prompts and answers on spans (opt-in: they may hold personal data).
    pub capture_content: bool,
    pub capture_max_bytes: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            disabled: false,
            traces: None,
            metrics: None,
            headers: OtlpHeaders::default(),
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            resource_attributes: vec![(
                "service.version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )],
            sampler: SamplerConfig::default(),
            metric_export_interval: DEFAULT_METRIC_EXPORT_INTERVAL,
            capture_content: false,
            capture_max_bytes: DEFAULT_CAPTURE_MAX_BYTES,
        }
    }
}

/// Kubernetes downward-API variables → resource attributes. The first
/// variable set wins (`K8S_*` is the OTel operator's spelling, the other the
/// common hand-written one).
const KUBERNETES: [(&str, &[&str]); 4] = [
    ("k8s.pod.name", &["K8S_POD_NAME", "POD_NAME"]),
    (
        "k8s.namespace.name",
        &["K8S_NAMESPACE_NAME", "POD_NAMESPACE"],
    ),
    ("k8s.node.name", &["K8S_NODE_NAME", "NODE_NAME"]),
    ("k8s.pod.uid", &["K8S_POD_UID"]),
];

#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Signal::Traces => "v1/traces",
            Signal::Metrics => "v1/metrics",
        }
    }
}

impl TelemetryConfig {
    /// The file's explicit values win; the environment fills the rest.
    /// Errors name the file key or the variable, never a header value.
    pub fn resolve(file: &TelemetryFileConfig, env: Env<'_>) -> Result<TelemetryConfig, String> {
        let var = |name: &str| {
            env(name)
                .map(|value| value.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let headers = match &file.headers {
            Some(headers) => headers.clone(),
            None => match var("OTEL_EXPORTER_OTLP_HEADERS") {
                Some(text) => parse_headers(&text)
                    .map_err(|error| format!("OTEL_EXPORTER_OTLP_HEADERS: {error}"))?,
                None => OtlpHeaders::default(),
            },
        };
        let (service_name, resource_attributes) = resource(file, &var)?;
        let capture_max_bytes = match file.capture_max_bytes {
            Some(0) => return Err("telemetry.capture_max_bytes: must be at least 1".to_owned()),
            Some(bytes) => bytes,
            None => DEFAULT_CAPTURE_MAX_BYTES,
        };
        Ok(TelemetryConfig {
            disabled: parse_bool(&var, "OTEL_SDK_DISABLED")?.unwrap_or(false),
            traces: target(Signal::Traces, file, &var)?,
            metrics: target(Signal::Metrics, file, &var)?,
            headers,
            export_timeout: millis(&var, "OTEL_EXPORTER_OTLP_TIMEOUT")?
                .unwrap_or(DEFAULT_EXPORT_TIMEOUT),
            service_name,
            resource_attributes,
            sampler: sampler(file, &var)?,
            metric_export_interval: millis(&var, "OTEL_METRIC_EXPORT_INTERVAL")?
                .unwrap_or(DEFAULT_METRIC_EXPORT_INTERVAL),
            capture_content: match file.capture_content {
                Some(capture) => capture,
                None => parse_bool(&var, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")?
                    .unwrap_or(false),
            },
            capture_max_bytes,
        })
    }

    /// The byte cap for captured content, or `None` when content is not
    /// captured: the one check the pipeline makes before building it.
    pub fn capture_limit(&self) -> Option<usize> {
        self.capture_content.then_some(self.capture_max_bytes)
    }
}

type Var<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// The endpoint and protocol of one signal. Precedence: the file's base
/// endpoint, then the signal's own variable (used as is, per the spec),
/// then the base variable (`/v1/<signal>` appended for HTTP).
fn target(
    signal: Signal,
    file: &TelemetryFileConfig,
    var: &Var<'_>,
) -> Result<Option<OtlpTarget>, String> {
    let protocol_var = format!("OTEL_EXPORTER_OTLP_{}_PROTOCOL", signal.name());
    let protocol = if let Some(protocol) = file.protocol.as_deref().filter(|p| !p.is_empty()) {
        Protocol::parse(protocol).map_err(|error| format!("telemetry.protocol: {error}"))?
    } else if let Some(protocol) = var(&protocol_var) {
        Protocol::parse(&protocol).map_err(|error| format!("{protocol_var}: {error}"))?
    } else if let Some(protocol) = var("OTEL_EXPORTER_OTLP_PROTOCOL") {
        Protocol::parse(&protocol)
            .map_err(|error| format!("OTEL_EXPORTER_OTLP_PROTOCOL: {error}"))?
    } else {
        Protocol::Grpc
    };

    let signal_var = format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.name());
    let (source, endpoint, is_base) = if let Some(endpoint) = file
        .endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        ("telemetry.endpoint", endpoint.to_owned(), true)
    } else if let Some(endpoint) = var(&signal_var) {
        (signal_var.as_str(), endpoint, false)
    } else if let Some(endpoint) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint, true)
    } else {
        return Ok(None);
    };
    check_endpoint(&endpoint).map_err(|error| format!("{source}: {error}"))?;
    let endpoint = if is_base && protocol == Protocol::HttpProtobuf {
        format!("{}/{}", endpoint.trim_end_matches('/'), signal.path())
    } else {
        endpoint
    };
    Ok(Some(OtlpTarget { endpoint, protocol }))
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: Uri = endpoint
        .parse()
        .map_err(|error| format!("`{endpoint}` is not a URL: {error}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(()),
        _ => Err(format!(
            "`{endpoint}` must be an http:// or https:// URL with a host"
        )),
    }
}

/// `service.name` and the other resource attributes. Explicit
/// `OTEL_RESOURCE_ATTRIBUTES` entries win over what we derive (version,
/// Kubernetes); `service.name` follows the spec's order: file,
/// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, default.
fn resource(
    file: &TelemetryFileConfig,
    var: &Var<'_>,
) -> Result<(String, Vec<(String, String)>), String> {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "service.version".to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    );
    for (attribute, variables) in KUBERNETES {
        if let Some(value) = variables.iter().find_map(|name| var(name)) {
            attributes.insert(attribute.to_owned(), value);
        }
    }
    if let Some(text) = var("OTEL_RESOURCE_ATTRIBUTES") {
        for (key, value) in
            parse_pairs(&text).map_err(|error| format!("OTEL_RESOURCE_ATTRIBUTES: {error}"))?
        {
            attributes.insert(key, value);
        }
    }
    let from_attributes = attributes.remove("service.name");
    let service_name = file
        .service_name
        .clone()
        .filter(|name| !name.is_empty())
        .or_else(|| var("OTEL_SERVICE_NAME"))
        .or(from_attributes)
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    Ok((service_name, attributes.into_iter().collect()))
}

fn sampler(file: &TelemetryFileConfig, var: &Var<'_>) -> Result<SamplerConfig, String> {
    if let Some(ratio) = file.sampler_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "telemetry.sampler_ratio: {ratio} is not between 0.0 and 1.0"
            ));
        }
        return Ok(SamplerConfig {
            parent_based: true,
            root: RootSampler::TraceIdRatio(ratio),
        });
    }
    let Some(name) = var("OTEL_TRACES_SAMPLER") else {
        return Ok(SamplerConfig::default());
    };
    let ratio = || -> Result<f64, String> {
        let Some(arg) = var("OTEL_TRACES_SAMPLER_ARG") else {
            return Ok(1.0);
        };
        arg.parse::<f64>()
            .ok()
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .ok_or_else(|| {
                format!("OTEL_TRACES_SAMPLER_ARG: `{arg}` is not a ratio between 0.0 and 1.0")
            })
    };
    let (parent_based, root) = match name.as_str() {
        "always_on" => (false, RootSampler::AlwaysOn),
        "always_off" => (false, RootSampler::AlwaysOff),
        "traceidratio" => (false, RootSampler::TraceIdRatio(ratio()?)),
        "parentbased_always_on" => (true, RootSampler::AlwaysOn),
        "parentbased_always_off" => (true, RootSampler::AlwaysOff),
        "parentbased_traceidratio" => (true, RootSampler::TraceIdRatio(ratio()?)),
        other => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER: `{other}` is not one of always_on, always_off, \
                 traceidratio, parentbased_always_on, parentbased_always_off, \
                 parentbased_traceidratio"
            ));
        }
    };
    Ok(SamplerConfig { parent_based, root })
}

fn parse_bool(var: &Var<'_>, name: &str) -> Result<Option<bool>, String> {
    let Some(value) = var(name) else {
        return Ok(None);
    };
    if value.eq_ignore_ascii_case("true") {
        Ok(Some(true))
    } else if value.eq_ignore_ascii_case("false") {
        Ok(Some(false))
    } else {
        Err(format!("{name}: `{value}` is not true or false"))
    }
}

/// A positive number of milliseconds, as the spec's duration variables are.
fn millis(var: &Var<'_>, name: &str) -> Result<Option<Duration>, String> {
    let Some(value) = var(name) else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
        _ => Err(format!(
            "{name}: `{value}` is not a positive number of milliseconds"
        )),
    }
}

/// `k=v,k=v` headers, each a valid HTTP header. Errors say which entry or
/// name is wrong and never quote a value.
fn parse_headers(text: &str) -> Result<OtlpHeaders, String> {
    let mut headers = Vec::new();
    for (index, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((name, value)) = entry.split_once('=') else {
            return Err(format!("entry {} is not name=value", index + 1));
        };
        let name = name.trim();
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("`{name}` is not a valid header name"));
        }
        let value = percent_decode(value.trim());
        if value.is_empty() || HeaderValue::from_str(&value).is_err() {
            return Err(format!(
                "the value of `{name}` is empty or not a valid header value"
            ));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(OtlpHeaders(headers))
}

/// `k=v,k=v` with percent-encoded values (W3C baggage style), as
/// `OTEL_RESOURCE_ATTRIBUTES` is written.
fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(format!("`{entry}` is not key=value"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("`{entry}` has an empty key"));
        }
        pairs.push((key.to_owned(), percent_decode(value.trim())));
    }
    Ok(pairs)
}

/// Decodes `%XX` escapes; a malformed escape is kept as written, as the
/// OTel SDKs do.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

#[cfg(test)]
mod tests;
