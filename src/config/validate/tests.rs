use super::*;
use crate::config::Config;

fn error_of(text: &str) -> ConfigError {
    from_toml(text, "test.toml").expect_err("should be rejected")
}

#[test]
fn the_embedded_default_is_valid_and_offers_mock() {
    let config = Config::embedded();
    assert_eq!(config.routes[0].model, MOCK_ROUTE);
    assert!(config.server.tcp.unwrap().ip().is_loopback());
    assert_eq!(config.server.uds_mode, 0o660);
    assert_eq!(config.server.uds_dir_mode, 0o700);
    assert_eq!(config.server.max_message_bytes, 16 * 1024 * 1024);
    // Socket and ledger side by side in the runtime directory, never in a
    // fixed directory of /tmp that another user could make first.
    let dir = crate::runtime_dir::default_dir(&crate::config::process_env);
    assert_eq!(config.server.uds, Some(dir.join("llm-sidecar.sock")));
    assert_eq!(config.ledger.path, dir.join("ledger.sqlite3"));
    assert_ne!(dir, Path::new("/tmp/llm-sidecar"));
}

#[test]
fn an_unset_ledger_path_is_in_the_runtime_directory() {
    let config = from_toml_in(
        "[server]\ntcp = \"127.0.0.1:1\"\n",
        "t",
        Path::new("/r/llm-sidecar"),
    )
    .unwrap();
    assert_eq!(
        config.ledger.path,
        Path::new("/r/llm-sidecar/ledger.sqlite3")
    );
    assert_eq!(
        config.server.uds, None,
        "a file's socket is only the one it names"
    );
}

#[test]
fn uds_dir_mode_is_octal_and_closed_to_other_writers() {
    let config = from_toml("[server]\nuds = \"/tmp/x\"\nuds_dir_mode = \"0750\"\n", "t").unwrap();
    assert_eq!(config.server.uds_dir_mode, 0o750);
    let error = error_of("[server]\nuds = \"/tmp/x\"\nuds_dir_mode = \"0770\"\n");
    assert_eq!(error.key, "server.uds_dir_mode");
    assert!(
        error.message.contains("group or others"),
        "{}",
        error.message
    );
    assert_eq!(
        error_of("[server]\nuds = \"/tmp/x\"\nuds_dir_mode = \"rwx\"\n").key,
        "server.uds_dir_mode"
    );
}

#[test]
fn unknown_keys_are_named() {
    let error = error_of("[server]\nuds = \"/tmp/x.sock\"\ntimeout = 3\n");
    assert_eq!(error.file, "test.toml");
    assert!(error.message.contains("timeout"), "{error}");
}

#[test]
fn non_loopback_tcp_is_refused_unless_allowed() {
    let error = error_of("[server]\ntcp = \"0.0.0.0:50051\"\n");
    assert_eq!(error.key, "server.tcp");
    assert!(error.to_string().contains("allow_non_loopback"));
    let config = from_toml(
        "[server]\ntcp = \"0.0.0.0:50051\"\nallow_non_loopback = true\n",
        "t",
    )
    .unwrap();
    assert!(config.server.tcp.is_some());
}

#[test]
fn routes_must_name_known_providers() {
    let error =
        error_of("[server]\nuds = \"/tmp/x\"\n[[routes]]\nmodel = \"x\"\nprovider = \"nope\"\n");
    assert_eq!(error.key, "routes[0].provider");
}

#[test]
fn providers_need_a_base_url_and_a_known_kind() {
    let error = error_of("[server]\nuds = \"/tmp/x\"\n[providers.a]\napi_key_env = \"A\"\n");
    assert_eq!(error.key, "providers.a.base_url");
    let error = error_of(
        "[server]\nuds = \"/tmp/x\"\n[providers.a]\nkind = \"grpc\"\nbase_url = \"http://x\"\n",
    );
    assert_eq!(error.key, "providers.a.kind");
}

#[test]
fn aliases_may_not_chain() {
    let error = error_of("[server]\nuds = \"/tmp/x\"\n[aliases]\na = \"b\"\nb = \"gpt-4o\"\n");
    assert_eq!(error.key, "aliases.a");
}

#[test]
fn uds_mode_is_octal() {
    let config = from_toml("[server]\nuds = \"/tmp/x\"\nuds_mode = \"0600\"\n", "t").unwrap();
    assert_eq!(config.server.uds_mode, 0o600);
    assert_eq!(
        error_of("[server]\nuds = \"/tmp/x\"\nuds_mode = \"rw\"\n").key,
        "server.uds_mode"
    );
}

#[test]
fn mock_can_be_switched_off() {
    let config = from_toml("mock = false\n[server]\nuds = \"/tmp/x\"\n", "t").unwrap();
    assert!(config.routes.is_empty());
    assert!(config.providers.is_empty());
}

#[test]
fn timeouts_merge_and_are_checked_against_each_other() {
    let config = from_toml(
        "[server]\nuds = \"/tmp/x\"\n[timeouts]\nidle_ms = 5000\n[providers.a]\nbase_url = \"http://a\"\ntimeouts = { idle_ms = 2000 }\n",
        "t",
    )
    .unwrap();
    assert_eq!(config.timeouts.idle, Duration::from_secs(5));
    assert_eq!(
        config.providers[1].timeouts.over(config.timeouts).idle,
        Duration::from_secs(2)
    );
    let error = error_of(
        "[server]\nuds = \"/tmp/x\"\n[timeouts]\nfirst_chunk_ms = 9000\nstream_total_ms = 5000\n",
    );
    assert_eq!(error.key, "timeouts.first_chunk_ms");
    let error = error_of("[server]\nuds = \"/tmp/x\"\n[timeouts]\nidle_ms = 0\n");
    assert_eq!(error.key, "timeouts.idle_ms");
}

#[test]
fn headers_are_plain_or_tables_and_secret_by_name_or_mark() {
    let config = from_toml(
        r#"[server]
uds = "/tmp/x"
[providers.a]
base_url = "http://x"
headers = { "X-Title" = "my-app", "X-Api-Key" = "abcdefgh1234", "X-Tenant" = { value = "tenant-0001", secret = true }, "X-Auth-Token" = { env = "TOKEN" }, "X-Signed" = { file = "/run/signed" } }
"#,
        "t",
    )
    .unwrap();
    let headers = &config
        .providers
        .iter()
        .find(|p| p.name == "a")
        .unwrap()
        .headers;
    let find = |name: &str| headers.iter().find(|header| header.name == name).unwrap();
    assert_eq!(
        find("X-Title").value,
        HeaderValueSource::Inline("my-app".into())
    );
    assert!(!find("X-Title").secret);
    assert!(find("X-Api-Key").secret);
    assert!(find("X-Tenant").secret);
    assert!(find("X-Auth-Token").secret);
    assert_eq!(
        find("X-Auth-Token").value,
        HeaderValueSource::Loaded(KeySource {
            env: Some("TOKEN".into()),
            file: None
        })
    );
    // A file is read like a key file; its name does not look secret.
    assert!(!find("X-Signed").secret);
}

#[test]
fn a_header_table_needs_one_source_and_known_keys() {
    let base = "[server]\nuds = \"/tmp/x\"\n[providers.a]\nbase_url = \"http://x\"\n";
    let error = error_of(&format!(
        "{base}headers = {{ \"X-A\" = {{ value = \"v\", env = \"E\" }} }}\n"
    ));
    assert_eq!(error.key, "providers.a.headers.X-A");
    assert!(error.message.contains("exactly one"), "{error}");
    let error = error_of(&format!(
        "{base}headers = {{ \"X-A\" = {{ value = \"v\", secrett = true }} }}\n"
    ));
    assert!(error.message.contains("secrett"), "{error}");
    let error = error_of(&format!("{base}headers = {{ \"X-A\" = 3 }}\n"));
    assert!(error.message.contains("a string, or a table"), "{error}");
}

#[test]
fn tls_keys_are_checked_where_they_are_written() {
    let base = "[server]\nuds = \"/tmp/x\"\n";
    let error = error_of(&format!(
        "{base}[upstream]\nclient_cert_file = \"/c.pem\"\n"
    ));
    assert_eq!(error.key, "upstream.client_key_file");
    let error = error_of(&format!(
        "{base}[providers.p]\nbase_url = \"https://p/v1\"\nclient_key_file = \"/k.pem\"\n"
    ));
    assert_eq!(error.key, "providers.p.client_cert_file");
    let error = error_of(&format!("{base}[upstream]\nca_files = [\"\"]\n"));
    assert_eq!(error.key, "upstream.ca_files[0]");
    let error = error_of(&format!("{base}[upstream]\npublic_roots = false\n"));
    assert_eq!(error.key, "upstream.public_roots");
    assert!(
        error
            .message
            .contains("no upstream server would be trusted"),
        "{error}"
    );
    // A provider's `public_roots = false` may rest on [upstream]'s CA files.
    let config = from_toml(
        &format!(
            "{base}[upstream]\nca_files = [\"/ca.pem\"]\n\
             [providers.p]\nbase_url = \"https://p/v1\"\npublic_roots = false\n\
             [providers.q]\nbase_url = \"https://q/v1\"\n"
        ),
        "t",
    )
    .unwrap();
    let tls_of = |name: &str| {
        let provider = config.providers.iter().find(|p| p.name == name).unwrap();
        (
            provider.tls.is_empty(),
            provider.tls.over(&config.upstream.tls),
        )
    };
    let (shares, p) = tls_of("p");
    assert!(!shares);
    assert!(!p.public_roots);
    assert_eq!(p.ca_files, [PathBuf::from("/ca.pem")]);
    assert!(
        tls_of("q").0,
        "a provider without TLS keys shares the client"
    );
    assert_eq!(config.tls_files(), [PathBuf::from("/ca.pem")]);
}

#[test]
fn auth_defaults_to_required_tokens_and_checks_its_keys() {
    let config = Config::embedded();
    assert!(config.auth.require_token);
    assert!(config.auth.tokens.is_empty());
    let base = "[server]\ntcp = \"127.0.0.1:1\"\n";
    for (table, key, says) in [
        (
            "[auth.tokens]\n\"a b\" = { env = \"T\" }",
            "auth.tokens.a b",
            "letters",
        ),
        (
            "[auth.tokens]\napp = { env = \"T\", file = \"/t\" }",
            "auth.tokens.app",
            "either",
        ),
        ("[auth]\nadmin_token = {}", "auth.admin_token", "either"),
        (
            "[auth]\nallowed_hosts = [\"host:8080\"]",
            "auth.allowed_hosts[0]",
            "no port",
        ),
        (
            "[auth]\nallowed_origins = [\"app.example.com\"]",
            "auth.allowed_origins[0]",
            "scheme",
        ),
    ] {
        let error = error_of(&format!("{base}{table}\n"));
        assert_eq!(error.key, key, "{table}");
        assert!(error.message.contains(says), "{table}: {}", error.message);
    }
    let config = from_toml(
        &format!(
            "{base}[auth]\nallowed_hosts = [\"LLM.Svc\"]\nallowed_origins = [\"https://App.example/\"]\n\
             [auth.tokens]\nweb = {{ file = \"/t\" }}\n"
        ),
        "t",
    )
    .unwrap();
    assert_eq!(config.auth.allowed_hosts, ["llm.svc"]);
    assert_eq!(config.auth.allowed_origins, ["https://app.example"]);
    assert_eq!(config.auth.tokens[0].name, "web");
}

#[test]
fn connection_limits_have_defaults_and_stay_within_http2() {
    let config = from_toml("[server]\ntcp = \"127.0.0.1:1\"\n", "t").unwrap();
    assert_eq!(config.server.limits, ConnectionLimits::default());
    assert_eq!(config.server.max_calls_in_flight, None);
    let config = from_toml(
        "[server]\ntcp = \"127.0.0.1:1\"\nmax_concurrent_streams = 500\n\
         stream_window_bytes = 1048576\nsend_buffer_bytes = 32768\nmax_calls_in_flight = 40\n",
        "t",
    )
    .unwrap();
    assert_eq!(config.server.limits.max_concurrent_streams, 500);
    assert_eq!(config.server.limits.stream_window_bytes, 1 << 20);
    // The connection's window is never smaller than a stream's.
    assert_eq!(config.server.limits.connection_window_bytes, 1 << 20);
    assert_eq!(config.server.limits.send_buffer_bytes, 32 * 1024);
    assert_eq!(config.server.max_calls_in_flight, Some(40));
    for (line, key) in [
        (
            "max_concurrent_streams = 0",
            "server.max_concurrent_streams",
        ),
        ("stream_window_bytes = 1000", "server.stream_window_bytes"),
        (
            "stream_window_bytes = 2147483648",
            "server.stream_window_bytes",
        ),
        (
            "stream_window_bytes = 1048576\nconnection_window_bytes = 65535",
            "server.connection_window_bytes",
        ),
        ("send_buffer_bytes = 4096", "server.send_buffer_bytes"),
        ("max_calls_in_flight = 0", "server.max_calls_in_flight"),
    ] {
        let error = error_of(&format!("[server]\ntcp = \"127.0.0.1:1\"\n{line}\n"));
        assert_eq!(error.key, key, "{line}: {}", error.message);
    }
}

#[test]
fn an_sse_event_must_fit_in_a_message() {
    let config = from_toml(
        "[server]\ntcp = \"127.0.0.1:1\"\nmax_message_bytes = 100000\n",
        "t",
    )
    .unwrap();
    assert_eq!(config.upstream.max_sse_line_bytes, 100_000);
    assert_eq!(config.upstream.max_response_bytes, 100_000);
    let error = error_of(
        "[server]\ntcp = \"127.0.0.1:1\"\nmax_message_bytes = 100000\n\
         [upstream]\nmax_sse_line_bytes = 200000\n",
    );
    assert_eq!(error.key, "upstream.max_sse_line_bytes");
    assert!(
        error.message.contains("server.max_message_bytes"),
        "{}",
        error.message
    );
}

#[test]
fn resuming_needs_a_prefill_style_and_says_which_key() {
    let provider = |keys: &str| {
        format!(
            "[server]\ntcp = \"127.0.0.1:1\"\n[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n{keys}\n"
        )
    };
    let config = from_toml(
        &provider("resume = true\nprefill = \"prefix_flag\"\n[upstream]\nresume_max_bytes = 1024"),
        "t",
    )
    .unwrap();
    let p = config.providers.iter().find(|p| p.name == "p").unwrap();
    assert_eq!(
        (p.resume, p.prefill),
        (true, Some(PrefillStyle::PrefixFlag))
    );
    assert_eq!(config.upstream.resume_max_bytes, 1024);

    let error = error_of(&provider("resume = true"));
    assert_eq!(error.key, "providers.p.resume");
    assert!(error.message.contains("prefill"), "{}", error.message);

    let error = error_of(&provider("prefill = \"assistant\""));
    assert_eq!(error.key, "providers.p.prefill");
    assert!(
        error.message.contains("trailing_assistant"),
        "{}",
        error.message
    );

    let error = error_of(&format!(
        "{}[[routes]]\nmodel = \"m\"\nprovider = \"p\"\nresume = true\n",
        provider("")
    ));
    assert_eq!(error.key, "routes[0].resume");

    let error = error_of(&provider("[upstream]\nresume_max_bytes = 0"));
    assert_eq!(error.key, "upstream.resume_max_bytes");
}

#[test]
fn a_retention_too_long_for_the_clock_is_refused_by_name() {
    for days in ["1e300", "0", "-1", "40000"] {
        let error = error_of(&format!(
            "[server]\nuds = \"/tmp/x\"\n[ledger]\nretention_days = {days}\n"
        ));
        assert_eq!(error.key, "ledger.retention_days", "{days}");
        assert!(error.message.contains("36500"), "{}", error.message);
    }
}

#[test]
fn budgets_are_checked_field_by_field() {
    const LISTEN: &str = "[server]\nhttp = \"127.0.0.1:0\"\n";
    let config = from_toml(
        &format!(
            "{LISTEN}[[budgets]]\ntag = \"team=search\"\nwindow = \"month\"\nusd = 25.0\n\
         [[budgets]]\nname = \"mock\"\nprovider = \"mock\"\nwindow = \"hour\"\ntokens = 1000\n\
         unpriced = \"allow\"\n"
        ),
        "test.toml",
    )
    .unwrap();
    assert_eq!(config.budgets[0].name, "tag:team=search/month");
    assert_eq!(config.budgets[1].name, "mock");
    for (text, key, words) in [
        (
            "[[budgets]]\ncaller = \"a\"\ntokens = 1\n",
            "budgets[0].window",
            "required",
        ),
        (
            "[[budgets]]\ncaller = \"a\"\nwindow = \"week\"\ntokens = 1\n",
            "budgets[0].window",
            "`week` is not a window",
        ),
        (
            "[[budgets]]\ncaller = \"a\"\nwindow = \"day\"\n",
            "budgets[0]",
            "sets no limit",
        ),
        (
            "[[budgets]]\ncaller = \"a\"\ntag = \"t=v\"\nwindow = \"day\"\ntokens = 1\n",
            "budgets[0]",
            "exactly one of",
        ),
        (
            "[[budgets]]\ntag = \"team\"\nwindow = \"day\"\ntokens = 1\n",
            "budgets[0].tag",
            "`key=value`",
        ),
        (
            "[[budgets]]\nprovider = \"nope\"\nwindow = \"day\"\ntokens = 1\n",
            "budgets[0].provider",
            "no provider named `nope`",
        ),
        (
            "[[budgets]]\ncaller = \"a\"\nwindow = \"day\"\nusd = -1.0\n",
            "budgets[0].usd",
            "at least 0.000001",
        ),
        (
            "[[budgets]]\ncaller = \"a\"\nwindow = \"day\"\nusd = 0.0000001\n",
            "budgets[0].usd",
            "at least 0.000001",
        ),
        (
            "[[budgets]]\ntag = \" team = search \"\nwindow = \"day\"\ntokens = 1\n",
            "budgets[0].tag",
            "spaces around",
        ),
        (
            "[[budgets]]\nname = \"a\\nb\"\ncaller = \"a\"\nwindow = \"day\"\ntokens = 1\n",
            "budgets[0].name",
            "printable ASCII",
        ),
        (
            "[[budgets]]\ntag = \"équipe=x\"\nwindow = \"day\"\ntokens = 1\n",
            "budgets[0].name",
            "give the budget a `name`",
        ),
        (
            "[[budgets]]\ncaller = \"a\"\nwindow = \"day\"\ntokens = 1\n\
             [[budgets]]\ncaller = \"a\"\nwindow = \"day\"\ntokens = 2\n",
            "budgets[1].name",
            "names another budget",
        ),
    ] {
        let error = error_of(&format!("{LISTEN}{text}"));
        assert_eq!(error.key, key, "{text}");
        assert!(error.message.contains(words), "{text}: {}", error.message);
    }
}

#[test]
fn the_fleet_ledger_takes_one_url_source_and_never_repeats_the_password() {
    let with = |ledger: &str| format!("[server]\nuds = \"/tmp/x\"\n[ledger]\n{ledger}\n");
    let config = from_toml(
        &with("url = \"postgres://app:hunter2-pw@db:5432/usage\"\nspool_max_rows = 10"),
        "t",
    )
    .unwrap();
    let fleet = config.ledger.fleet.clone().expect("a fleet ledger");
    assert_eq!(fleet.spool_max_rows, 10);
    assert!(!format!("{config:?}").contains("hunter2-pw"));
    let config = from_toml(&with("url_env = \"LEDGER_URL\""), "t").unwrap();
    assert_eq!(
        config.ledger.fleet.unwrap().spool_max_rows,
        crate::ledger::fleet::DEFAULT_SPOOL_MAX_ROWS
    );

    let error = error_of(&with("url = \"postgres://app:x@db/u\"\nurl_env = \"U\""));
    assert_eq!(error.key, "ledger.url");
    let error = error_of(&with("spool_max_rows = 5"));
    assert_eq!(error.key, "ledger.spool_max_rows");
    let error = error_of(&with("url = \"postgres://app:hunter2-pw@db:port/usage\""));
    assert_eq!(error.key, "ledger.url");
    assert!(!error.to_string().contains("hunter2-pw"), "{error}");
}
