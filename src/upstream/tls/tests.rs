use super::*;
use crate::config::{TlsConfig, from_toml};
use crate::upstream::{ClientError, UpstreamClients};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::path::Path;

/// A self-signed CA certificate, PEM.
fn ca_pem() -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

/// A certificate and its key, PEM.
fn identity_pem() -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["client".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn upstream_with(ca_files: &[&Path]) -> TlsConfig {
    TlsConfig {
        ca_files: ca_files.iter().map(|path| path.to_path_buf()).collect(),
        ..TlsConfig::default()
    }
}

fn load_error(tls: &TlsConfig) -> ConfigError {
    match TlsLoader::new(tls, "test.toml", &no_env) {
        Ok(_) => panic!("should be refused"),
        Err(error) => error,
    }
}

#[test]
fn ca_files_are_read_and_each_problem_names_the_key_the_file_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, ca_pem() + &ca_pem()).unwrap();
    let loader = TlsLoader::new(&upstream_with(&[&good]), "test.toml", &no_env).unwrap();
    let tls = loader.upstream();
    assert_eq!(tls.roots.len(), 2, "both certificates of the bundle");
    assert!(tls.public_roots);

    let missing = dir.path().join("missing.pem");
    let error = load_error(&upstream_with(&[&good, &missing]));
    assert_eq!(error.file, "test.toml");
    assert_eq!(error.key, "upstream.ca_files[1]");
    assert!(
        error.message.contains(&missing.display().to_string()),
        "{error}"
    );
    assert!(error.message.contains("cannot be read"), "{error}");
    assert!(
        error
            .message
            .contains("expected a PEM file of CA certificates"),
        "{error}"
    );

    let cases = [
        ("just some text\n", "holds no certificate"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n",
            "a `CERTIFICATE` block has no END line",
        ),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "certificate 1 is not a usable CA certificate",
        ),
    ];
    for (text, problem) in cases {
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, text).unwrap();
        let error = load_error(&upstream_with(&[&broken]));
        assert_eq!(error.key, "upstream.ca_files[0]");
        assert!(error.message.contains(problem), "{text:?}: {error}");
        assert!(
            error.message.contains(&broken.display().to_string()),
            "{error}"
        );
    }
}

#[test]
fn a_provider_replaces_only_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = dir.path().join("upstream.pem");
    let own_ca = dir.path().join("own.pem");
    std::fs::write(&upstream_ca, ca_pem()).unwrap();
    std::fs::write(&own_ca, ca_pem() + &ca_pem() + &ca_pem()).unwrap();
    let (cert, key) = identity_pem();
    std::fs::write(dir.path().join("client.crt"), cert).unwrap();
    std::fs::write(dir.path().join("client.key"), key).unwrap();
    let upstream = TlsConfig {
        client_identity: Some(ClientIdentity {
            cert_file: dir.path().join("client.crt"),
            key_file: dir.path().join("client.key"),
        }),
        ..upstream_with(&[&upstream_ca])
    };
    let loader = TlsLoader::new(&upstream, "test.toml", &no_env).unwrap();

    let roots_only = TlsOverrides {
        public_roots: Some(false),
        ..TlsOverrides::default()
    };
    let tls = loader.provider("providers.p", &roots_only).unwrap();
    assert!(!tls.public_roots);
    assert_eq!(tls.roots.len(), 1, "[upstream]'s CA file");
    assert_eq!(
        tls.identity.map(|loaded| loaded.key).as_deref(),
        Some("upstream")
    );

    let own = TlsOverrides {
        ca_files: Some(vec![own_ca]),
        ..TlsOverrides::default()
    };
    let tls = loader.provider("providers.p", &own).unwrap();
    assert!(tls.public_roots);
    assert_eq!(tls.roots.len(), 3, "its own CA file instead");

    let missing = TlsOverrides {
        ca_files: Some(vec![dir.path().join("nope.pem")]),
        ..TlsOverrides::default()
    };
    let error = loader.provider("providers.p", &missing).err().unwrap();
    assert_eq!(error.key, "providers.p.ca_files[0]");
}

#[test]
fn a_client_certificate_needs_its_certificate_and_its_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = identity_pem();
    let (_, other_key) = identity_pem();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cert = write("client.crt", &cert);
    let key = write("client.key", &key);
    let other_key = write("other.key", &other_key);
    let ca = write("ca.pem", &ca_pem());
    let config = |cert: &str, key: &str| {
        from_toml(
            &format!(
                "[server]\nuds = \"/tmp/unused.sock\"\n\
                 [providers.internal]\nbase_url = \"https://internal:8443/v1\"\n\
                 ca_files = [\"{ca}\"]\nclient_cert_file = \"{cert}\"\nclient_key_file = \"{key}\"\n"
            ),
            "test.toml",
        )
        .unwrap()
    };
    let clients = UpstreamClients::new(&config(&cert, &key), &no_env);
    assert!(clients.is_ok(), "{:?}", clients.err());

    let expect = |cert: &str, key: &str, field: &str, problem: &str| {
        let Err(ClientError::Config(error)) = UpstreamClients::new(&config(cert, key), &no_env)
        else {
            panic!("{cert} with {key} should be refused");
        };
        assert_eq!(error.key, format!("providers.internal.{field}"), "{error}");
        assert!(error.message.contains(problem), "{error}");
    };
    expect(&key, &key, "client_cert_file", "holds no certificate");
    expect(
        &cert,
        &cert,
        "client_key_file",
        "holds no usable private key",
    );
    expect(&cert, &ca, "client_key_file", "holds no usable private key");
    expect(
        &cert,
        &other_key,
        "client_key_file",
        "is not the private key of",
    );
}

#[test]
fn the_environment_adds_its_file_and_directories_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (ca_pem(), ca_pem());
    std::fs::write(dir.path().join("bundle.pem"), first.clone() + &second).unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("first.pem"), &first).unwrap();
    std::fs::write(certs.join("third.pem"), ca_pem()).unwrap();
    std::fs::write(certs.join("README"), "not a certificate").unwrap();
    std::fs::create_dir(certs.join("java")).unwrap();
    let bundle = dir.path().join("bundle.pem").display().to_string();
    let cert_dir = format!("{}:", certs.display());
    let env = |name: &str| match name {
        "SSL_CERT_FILE" => Some(bundle.clone()),
        "SSL_CERT_DIR" => Some(cert_dir.clone()),
        _ => None,
    };
    assert_eq!(env_roots(&env).unwrap().len(), 3);
    assert_eq!(
        env_paths(&env),
        [dir.path().join("bundle.pem"), certs.clone()]
    );

    let loader = TlsLoader::new(&TlsConfig::default(), "test.toml", &env).unwrap();
    assert_eq!(loader.upstream().roots.len(), 3);
    let only_own = TlsOverrides {
        public_roots: Some(false),
        ..TlsOverrides::default()
    };
    assert!(
        loader
            .provider("providers.p", &only_own)
            .unwrap()
            .roots
            .is_empty()
    );

    let missing = |name: &str| (name == "SSL_CERT_FILE").then(|| "/nonexistent/ca.pem".to_owned());
    let error = env_roots(&missing).unwrap_err();
    assert_eq!(
        (error.file.as_str(), error.key.as_str()),
        ("the environment", "SSL_CERT_FILE")
    );
    assert!(error.message.contains("/nonexistent/ca.pem"), "{error}");
}
