use super::*;
use std::collections::HashMap;

fn resolve_with(
    file: &TelemetryFileConfig,
    vars: &[(&str, &str)],
) -> Result<TelemetryConfig, String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    TelemetryConfig::resolve(file, &|name| vars.get(name).cloned())
}

fn resolve_env(vars: &[(&str, &str)]) -> Result<TelemetryConfig, String> {
    resolve_with(&TelemetryFileConfig::default(), vars)
}

#[test]
fn nothing_set_gives_the_defaults() {
    let config = resolve_env(&[]).unwrap();
    assert_eq!(config, TelemetryConfig::default());
    assert_eq!(config.service_name, "llm-sidecar");
    assert!(config.traces.is_none() && config.metrics.is_none());
    assert_eq!(config.sampler, SamplerConfig::default());
    assert_eq!(config.capture_limit(), None);
    assert_eq!(
        config.resource_attributes,
        vec![(
            "service.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned()
        )]
    );
}

#[test]
fn grpc_base_endpoint_is_used_as_is_for_both_signals() {
    let config = resolve_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]).unwrap();
    let expected = OtlpTarget {
        endpoint: "http://collector:4317".into(),
        protocol: Protocol::Grpc,
    };
    assert_eq!(config.traces, Some(expected.clone()));
    assert_eq!(config.metrics, Some(expected));
}

#[test]
fn http_base_endpoint_gets_the_signal_path_and_signal_endpoints_do_not() {
    let config = resolve_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://metrics:9000/custom",
        ),
    ])
    .unwrap();
    assert_eq!(
        config.traces.unwrap().endpoint,
        "http://collector:4318/v1/traces"
    );
    let metrics = config.metrics.unwrap();
    assert_eq!(metrics.endpoint, "http://metrics:9000/custom");
    assert_eq!(metrics.protocol, Protocol::HttpProtobuf);
}

#[test]
fn signal_protocol_wins_over_the_general_one() {
    let config = resolve_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
    ])
    .unwrap();
    assert_eq!(config.traces.unwrap().protocol, Protocol::Grpc);
    assert_eq!(config.metrics.unwrap().protocol, Protocol::HttpProtobuf);
}

#[test]
fn file_values_win_over_the_environment() {
    let file = TelemetryFileConfig {
        endpoint: Some("http://from-file:4318".into()),
        protocol: Some("http/protobuf".into()),
        headers: Some(OtlpHeaders(vec![("x-file".into(), "1".into())])),
        service_name: Some("file-service".into()),
        capture_content: Some(false),
        capture_max_bytes: Some(100),
        sampler_ratio: Some(0.25),
    };
    let config = resolve_with(
        &file,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-env=2"),
            ("OTEL_SERVICE_NAME", "env-service"),
            ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
    )
    .unwrap();
    assert_eq!(
        config.traces.unwrap().endpoint,
        "http://from-file:4318/v1/traces"
    );
    assert_eq!(
        config.headers.0,
        vec![("x-file".to_owned(), "1".to_owned())]
    );
    assert_eq!(config.service_name, "file-service");
    assert!(!config.capture_content);
    assert_eq!(config.capture_max_bytes, 100);
    assert_eq!(
        config.sampler,
        SamplerConfig {
            parent_based: true,
            root: RootSampler::TraceIdRatio(0.25)
        }
    );
}

#[test]
fn environment_fills_what_the_file_leaves_open() {
    let config = resolve_env(&[
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20abc, x-tenant = t1",
        ),
        ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "TRUE"),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_SDK_DISABLED", "true"),
    ])
    .unwrap();
    assert_eq!(
        config.headers.0,
        vec![
            ("authorization".to_owned(), "Bearer abc".to_owned()),
            ("x-tenant".to_owned(), "t1".to_owned())
        ]
    );
    assert_eq!(config.capture_limit(), Some(DEFAULT_CAPTURE_MAX_BYTES));
    assert_eq!(
        config.sampler,
        SamplerConfig {
            parent_based: false,
            root: RootSampler::TraceIdRatio(0.1)
        }
    );
    assert_eq!(config.metric_export_interval, Duration::from_secs(5));
    assert_eq!(config.export_timeout, Duration::from_millis(2500));
    assert!(config.disabled);
}

#[test]
fn every_sampler_name_parses() {
    let cases = [
        ("always_on", false, RootSampler::AlwaysOn),
        ("always_off", false, RootSampler::AlwaysOff),
        ("traceidratio", false, RootSampler::TraceIdRatio(1.0)),
        ("parentbased_always_on", true, RootSampler::AlwaysOn),
        ("parentbased_always_off", true, RootSampler::AlwaysOff),
        (
            "parentbased_traceidratio",
            true,
            RootSampler::TraceIdRatio(1.0),
        ),
    ];
    for (name, parent_based, root) in cases {
        let config = resolve_env(&[("OTEL_TRACES_SAMPLER", name)]).unwrap();
        assert_eq!(
            config.sampler,
            SamplerConfig { parent_based, root },
            "{name}"
        );
    }
}

#[test]
fn resource_attributes_merge_kubernetes_and_explicit_entries() {
    let config = resolve_env(&[
        ("POD_NAME", "app-7d9f"),
        ("K8S_POD_NAME", "app-from-operator"),
        ("POD_NAMESPACE", "prod"),
        ("NODE_NAME", "node-1"),
        ("K8S_POD_UID", "uid-1"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=prod,service.name=from-attrs,k8s.node.name=node%2D9",
        ),
    ])
    .unwrap();
    assert_eq!(config.service_name, "from-attrs");
    let attributes: HashMap<_, _> = config.resource_attributes.into_iter().collect();
    assert_eq!(attributes["k8s.pod.name"], "app-from-operator");
    assert_eq!(attributes["k8s.namespace.name"], "prod");
    assert_eq!(attributes["k8s.node.name"], "node-9");
    assert_eq!(attributes["k8s.pod.uid"], "uid-1");
    assert_eq!(attributes["deployment.environment.name"], "prod");
    assert_eq!(attributes["service.version"], env!("CARGO_PKG_VERSION"));
    assert!(!attributes.contains_key("service.name"));
}

#[test]
fn otel_service_name_wins_over_resource_attributes() {
    let config = resolve_env(&[
        ("OTEL_SERVICE_NAME", "svc"),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=other"),
    ])
    .unwrap();
    assert_eq!(config.service_name, "svc");
}

#[test]
fn bad_values_name_their_variable() {
    let cases: [(&[(&str, &str)], &str); 10] = [
        (
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x")],
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
        (&[("OTEL_TRACES_SAMPLER", "xray")], "OTEL_TRACES_SAMPLER"),
        (
            &[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            &[("OTEL_METRIC_EXPORT_INTERVAL", "0")],
            "OTEL_METRIC_EXPORT_INTERVAL",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")],
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ),
        (&[("OTEL_SDK_DISABLED", "yes")], "OTEL_SDK_DISABLED"),
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", "novalue")],
            "OTEL_RESOURCE_ATTRIBUTES",
        ),
        (
            &[("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "1")],
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
        ),
    ];
    for (vars, name) in cases {
        let error = resolve_env(vars).unwrap_err();
        assert!(error.starts_with(name), "{error} should name {name}");
    }
}

#[test]
fn bad_file_values_name_their_key() {
    let cases = [
        (
            TelemetryFileConfig {
                protocol: Some("udp".into()),
                ..TelemetryFileConfig::default()
            },
            "telemetry.protocol",
        ),
        (
            TelemetryFileConfig {
                endpoint: Some("not a url".into()),
                ..TelemetryFileConfig::default()
            },
            "telemetry.endpoint",
        ),
        (
            TelemetryFileConfig {
                sampler_ratio: Some(1.5),
                ..TelemetryFileConfig::default()
            },
            "telemetry.sampler_ratio",
        ),
        (
            TelemetryFileConfig {
                capture_max_bytes: Some(0),
                ..TelemetryFileConfig::default()
            },
            "telemetry.capture_max_bytes",
        ),
    ];
    for (file, key) in cases {
        let error = resolve_with(&file, &[]).unwrap_err();
        assert!(error.starts_with(key), "{error} should name {key}");
    }
}

#[test]
fn header_errors_and_debug_never_show_values() {
    let secret = "s3cr3t-token";
    let config = resolve_env(&[(
        "OTEL_EXPORTER_OTLP_HEADERS",
        &format!("authorization={secret}"),
    )])
    .unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("authorization"));

    let error = resolve_env(&[(
        "OTEL_EXPORTER_OTLP_HEADERS",
        &format!("authorization=a\u{7f}{secret}"),
    )])
    .unwrap_err();
    assert!(error.starts_with("OTEL_EXPORTER_OTLP_HEADERS"));
    assert!(!error.contains(secret), "{error}");

    let error = resolve_env(&[("OTEL_EXPORTER_OTLP_HEADERS", secret)]).unwrap_err();
    assert!(!error.contains(secret), "{error}");

    let file = TelemetryFileConfig {
        headers: Some(OtlpHeaders(vec![("api-key".into(), secret.into())])),
        ..TelemetryFileConfig::default()
    };
    assert!(!format!("{file:?}").contains(secret));
}

#[test]
fn empty_variables_count_as_unset() {
    let config = resolve_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        ("OTEL_TRACES_SAMPLER", " "),
        ("OTEL_SERVICE_NAME", ""),
    ])
    .unwrap();
    assert_eq!(config, TelemetryConfig::default());
}

#[test]
fn percent_decoding_keeps_malformed_escapes() {
    assert_eq!(percent_decode("a%20b"), "a b");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz"), "%zz");
    assert_eq!(percent_decode("%C3%A9"), "é");
}
