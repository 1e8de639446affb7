//! Upstream TLS over real sockets: an HTTPS upstream behind a private CA
//! (made in the test), one that asks for a client certificate, a CA file
//! replaced on disk while the binary runs, `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`, and `HTTPS_PROXY` / `NO_PROXY`.

mod common;

use common::process::{SOCKET_ONLY, Sidecar};
use common::tls::{Authority, ConnectProxy, TlsFront};
use common::{sidecar_from, user};
use fake_upstream::FakeUpstream;
use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::proto::v1 as pb;
use pb::chat_service_client::ChatServiceClient;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Longer than any answer here takes; a refusal must come well within it.
const NO_HANG: Duration = Duration::from_secs(15);

fn ask(model: &str) -> pb::ChatRequest {
    pb::ChatRequest {
        model: model.to_owned(),
        messages: vec![user("hello over TLS")],
        ..pb::ChatRequest::default()
    }
}

/// Calls `model` once: the answer's text, or the status it failed with.
async fn call(
    client: &mut ChatServiceClient<Channel>,
    model: &str,
) -> Result<pb::ChatResponse, tonic::Status> {
    tokio::time::timeout(NO_HANG, client.complete(ask(model)))
        .await
        .unwrap_or_else(|_| panic!("a call to `{model}` hung"))
        .map(tonic::Response::into_inner)
}

/// A whole config: `[server]` on `{socket}`, no retries, no ledger, then
/// `providers`, with a route `model = NAME` for each provider named.
fn config(providers: &str, names: &[&str]) -> String {
    let mut text = format!(
        "[server]\nuds = \"{{socket}}\"\n[retry]\nmax_attempts = 1\n[ledger]\nenabled = false\n{providers}\n"
    );
    for name in names {
        text.push_str(&format!(
            "[[routes]]\nmodel = \"{name}\"\nprovider = \"{name}\"\n"
        ));
    }
    text
}

fn toml_path(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_upstream_is_refused_until_its_ca_is_trusted() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("private test CA");
    let other = Authority::new("another test CA");
    let front = TlsFront::start(fake.addr(), &authority.server(), None).await;
    let ca = toml_path(&authority.write(dir.path(), "ca.pem"));
    let other_ca = toml_path(&other.write(dir.path(), "other-ca.pem"));
    let url = front.base_url();
    let providers = format!(
        "[providers.public]\nbase_url = \"{url}\"\n\
         [providers.private]\nbase_url = \"{url}\"\nca_files = [\"{ca}\"]\n\
         [providers.wrong]\nbase_url = \"{url}\"\nca_files = [\"{other_ca}\"]\npublic_roots = false\n"
    );
    let (running, mut client, _socket_dir) =
        sidecar_from(&config(&providers, &["public", "private", "wrong"])).await;

    for refused in ["public", "wrong"] {
        let status = call(&mut client, refused).await.expect_err(refused);
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("UnknownIssuer"),
            "the error says the certificate is not trusted: {}",
            status.message()
        );
    }
    assert!(
        fake.requests().is_empty(),
        "nothing got through the refused handshakes"
    );

    let answer = call(&mut client, "private")
        .await
        .expect("trusted through ca_files");
    assert!(!answer.choices.is_empty(), "{answer:?}");
    assert_eq!(fake.requests().len(), 1);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_ca_files_serve_every_provider_and_a_provider_may_replace_them() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("private test CA");
    let other = Authority::new("another test CA");
    let front = TlsFront::start(fake.addr(), &authority.server(), None).await;
    let ca = toml_path(&authority.write(dir.path(), "ca.pem"));
    let other_ca = toml_path(&other.write(dir.path(), "other-ca.pem"));
    let url = front.base_url();
    let text = config(
        &format!(
            "[providers.inherits]\nbase_url = \"{url}\"\n\
             [providers.replaces]\nbase_url = \"{url}\"\nca_files = [\"{other_ca}\"]\n"
        ),
        &["inherits", "replaces"],
    )
    .replace(
        "[retry]",
        &format!("[upstream]\nca_files = [\"{ca}\"]\n[retry]"),
    );
    let (running, mut client, _socket_dir) = sidecar_from(&text).await;
    call(&mut client, "inherits")
        .await
        .expect("[upstream] ca_files trusted");
    let status = call(&mut client, "replaces")
        .await
        .expect_err("its own CA only");
    assert!(
        status.message().contains("UnknownIssuer"),
        "{}",
        status.message()
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_asks_for_a_client_certificate_answers_only_with_one() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Authority::new("server test CA");
    let client_ca = Authority::new("client test CA");
    let front = TlsFront::start(fake.addr(), &server_ca.server(), Some(&client_ca)).await;
    let ca = toml_path(&server_ca.write(dir.path(), "ca.pem"));
    let (cert, key) = client_ca.client("llm-sidecar").write(dir.path(), "client");
    let (stranger_cert, stranger_key) = Authority::new("unknown client CA")
        .client("stranger")
        .write(dir.path(), "stranger");
    let url = front.base_url();
    let providers = format!(
        "[providers.anonymous]\nbase_url = \"{url}\"\nca_files = [\"{ca}\"]\n\
         [providers.stranger]\nbase_url = \"{url}\"\nca_files = [\"{ca}\"]\n\
         client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n\
         [providers.known]\nbase_url = \"{url}\"\nca_files = [\"{ca}\"]\n\
         client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        toml_path(&stranger_cert),
        toml_path(&stranger_key),
        toml_path(&cert),
        toml_path(&key),
    );
    let (running, mut client, _socket_dir) =
        sidecar_from(&config(&providers, &["anonymous", "stranger", "known"])).await;

    for refused in ["anonymous", "stranger"] {
        let status = call(&mut client, refused).await.expect_err(refused);
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "{refused}: {status:?}"
        );
    }
    assert!(fake.requests().is_empty(), "nothing got past the front");

    call(&mut client, "known")
        .await
        .expect("answered with the client certificate");
    assert_eq!(fake.requests().len(), 1);
    running.shutdown().await;
}

/// The binary on `dir/sidecar.sock` with `config` and environment `env`.
fn serve(dir: &Path, config: &Path, env: &[(&str, Option<&str>)]) -> Sidecar {
    let socket = dir.join("sidecar.sock");
    Sidecar::serve_with_env(
        &[
            &["--config", config.to_str().unwrap()][..],
            &["--uds", socket.to_str().unwrap(), "--ledger", ""],
            &SOCKET_ONLY,
        ]
        .concat(),
        Some("info"),
        &socket,
        &dir.join("sidecar.log"),
        env,
    )
}

async fn connect(dir: &Path) -> ChatServiceClient<Channel> {
    chat_client(
        connect_uds(&dir.join("sidecar.sock")).await.unwrap(),
        1 << 20,
    )
}

/// Waits (10 s at most) until `ready` holds.
async fn eventually(what: &str, mut ready: impl AsyncFnMut() -> bool, log: impl Fn() -> String) {
    let started = Instant::now();
    while !ready().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} did not happen:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_replaced_on_disk_is_picked_up_and_a_broken_one_keeps_the_last() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("private test CA");
    let front = TlsFront::start(fake.addr(), &authority.server(), None).await;
    // At first the file holds another CA: valid, but not the server's.
    let ca_file = Authority::new("stale test CA").write(dir.path(), "ca.pem");
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        config_for_binary(&format!(
            "[providers.internal]\nbase_url = \"{}\"\nca_files = [\"{}\"]\n",
            front.base_url(),
            toml_path(&ca_file)
        )),
    )
    .unwrap();
    let sidecar = serve(dir.path(), &config, &[]);
    let mut client = connect(dir.path()).await;
    let status = call(&mut client, "internal")
        .await
        .expect_err("the stale CA");
    assert!(
        status.message().contains("UnknownIssuer"),
        "{}",
        status.message()
    );

    // The right CA, written the way a Secret or ConfigMap update lands.
    std::fs::write(dir.path().join("ca.pem.new"), &authority.pem).unwrap();
    std::fs::rename(dir.path().join("ca.pem.new"), &ca_file).unwrap();
    eventually(
        "trusting the new CA",
        async || call(&mut client, "internal").await.is_ok(),
        || sidecar.log(),
    )
    .await;

    // A broken file: the reload is refused, naming the file, and the
    // client built from the last good one keeps serving.
    std::fs::write(&ca_file, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
    eventually(
        "the refusal in the log",
        async || sidecar.log().contains("config reload rejected"),
        || sidecar.log(),
    )
    .await;
    let log = sidecar.log();
    assert!(
        log.contains(&toml_path(&ca_file)),
        "the log names the file:\n{log}"
    );
    assert!(
        log.contains("providers.internal.ca_files[0]"),
        "and the key:\n{log}"
    );
    call(&mut client, "internal")
        .await
        .expect("still the last good CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_replaced_on_disk_is_presented_from_then_on() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Authority::new("server test CA");
    let client_ca = Authority::new("client test CA");
    let front = TlsFront::start(fake.addr(), &server_ca.server(), Some(&client_ca)).await;
    let ca = toml_path(&server_ca.write(dir.path(), "ca.pem"));
    // At first a certificate the upstream does not accept (an expired or
    // revoked one, in life), in the files a cert-manager Secret updates.
    let (cert, key) = Authority::new("retired client CA")
        .client("llm-sidecar")
        .write(dir.path(), "client");
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        config_for_binary(&format!(
            "[providers.mutual]\nbase_url = \"{}\"\nca_files = [\"{ca}\"]\n\
             client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            front.base_url(),
            toml_path(&cert),
            toml_path(&key),
        )),
    )
    .unwrap();
    let sidecar = serve(dir.path(), &config, &[]);
    let mut client = connect(dir.path()).await;
    call(&mut client, "mutual")
        .await
        .expect_err("the retired certificate");
    assert!(fake.requests().is_empty());

    // The renewed pair, each file swapped in whole.
    let (renewed_cert, renewed_key) = client_ca.client("llm-sidecar").write(dir.path(), "renewed");
    std::fs::rename(&renewed_key, &key).unwrap();
    std::fs::rename(&renewed_cert, &cert).unwrap();
    eventually(
        "presenting the renewed certificate",
        async || call(&mut client, "mutual").await.is_ok(),
        || sidecar.log(),
    )
    .await;
    assert!(!fake.requests().is_empty());
}

/// A config file for the binary (`--uds` gives the socket): no retries,
/// files checked every 100 ms, a route `model = NAME` per provider.
fn config_for_binary(providers: &str) -> String {
    let names: Vec<&str> = providers
        .lines()
        .filter_map(|line| line.strip_prefix("[providers.")?.strip_suffix(']'))
        .collect();
    config(providers, &names).replace(
        "uds = \"{socket}\"",
        "uds = \"/nonexistent/unused.sock\"\nwatch_interval_ms = 100",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_cert_file_and_ssl_cert_dir_add_to_the_public_roots() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let by_file = Authority::new("test CA in SSL_CERT_FILE");
    let by_dir = Authority::new("test CA in SSL_CERT_DIR");
    let front_file = TlsFront::start(fake.addr(), &by_file.server(), None).await;
    let front_dir = TlsFront::start(fake.addr(), &by_dir.server(), None).await;
    let bundle = by_file.write(dir.path(), "bundle.pem");
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir(&cert_dir).unwrap();
    by_dir.write(&cert_dir, "by-dir.pem");
    // Directories of certificates hold other things too.
    std::fs::write(cert_dir.join("README"), "not a certificate\n").unwrap();
    let unrelated = Authority::new("unrelated test CA").write(dir.path(), "unrelated.pem");
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        config_for_binary(&format!(
            "[providers.file]\nbase_url = \"{}\"\n\
             [providers.dir]\nbase_url = \"{}\"\n\
             [providers.strict]\nbase_url = \"{}\"\npublic_roots = false\nca_files = [\"{}\"]\n",
            front_file.base_url(),
            front_dir.base_url(),
            front_file.base_url(),
            toml_path(&unrelated),
        )),
    )
    .unwrap();
    let sidecar = serve(
        dir.path(),
        &config,
        &[
            ("SSL_CERT_FILE", Some(bundle.to_str().unwrap())),
            ("SSL_CERT_DIR", Some(cert_dir.to_str().unwrap())),
        ],
    );
    let mut client = connect(dir.path()).await;
    let log = || sidecar.log();
    call(&mut client, "file")
        .await
        .unwrap_or_else(|status| panic!("{status:?}\n{}", log()));
    call(&mut client, "dir")
        .await
        .unwrap_or_else(|status| panic!("{status:?}\n{}", log()));
    // public_roots = false leaves out the environment's roots as well.
    let status = call(&mut client, "strict")
        .await
        .expect_err("only its own CA");
    assert!(
        status.message().contains("UnknownIssuer"),
        "{}",
        status.message()
    );
}

/// The binary, started with `env`, serving `provider` behind a TLS front
/// whose CA is `authority`: its first call is refused as untrusted.
struct UntrustedAtFirst {
    _fake: FakeUpstream,
    _front: TlsFront,
    sidecar: Sidecar,
    client: ChatServiceClient<Channel>,
}

impl UntrustedAtFirst {
    async fn start(
        dir: &Path,
        provider: &str,
        authority: &Authority,
        env: &[(&str, Option<&str>)],
    ) -> UntrustedAtFirst {
        let fake = FakeUpstream::start().await.unwrap();
        let front = TlsFront::start(fake.addr(), &authority.server(), None).await;
        let config = dir.join("sidecar.toml");
        std::fs::write(
            &config,
            config_for_binary(&format!(
                "[providers.{provider}]\nbase_url = \"{}\"\n",
                front.base_url()
            )),
        )
        .unwrap();
        let sidecar = serve(dir, &config, env);
        let mut client = connect(dir).await;
        let status = call(&mut client, provider)
            .await
            .expect_err("not trusted yet");
        assert!(
            status.message().contains("UnknownIssuer"),
            "{}",
            status.message()
        );
        UntrustedAtFirst {
            _fake: fake,
            _front: front,
            sidecar,
            client,
        }
    }

    /// Waits until `provider` is called through a trusted connection.
    async fn trusted_eventually(mut self, provider: &str, what: &str) {
        eventually(
            what,
            async || call(&mut self.client, provider).await.is_ok(),
            || self.sidecar.log(),
        )
        .await;
    }
}

/// A CA bundle as large as a distribution's (over 64 KiB, the size above
/// which the watcher looks at a file's times, not its contents): rewritten
/// in place to hold the server's CA, it is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_ssl_cert_file_rewritten_in_place_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("test CA added to the bundle");
    let filler = Authority::new("one of many other test CAs").pem;
    let others = filler.repeat(64 * 1024 / filler.len() + 1);
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, &others).unwrap();
    let env = [("SSL_CERT_FILE", Some(bundle.to_str().unwrap()))];
    let served = UntrustedAtFirst::start(dir.path(), "file", &authority, &env).await;
    std::fs::write(&bundle, format!("{others}{}", authority.pem)).unwrap();
    served
        .trusted_eventually("file", "trusting the CA added to the bundle")
        .await;
}

/// A CA added to `SSL_CERT_DIR` (as `update-ca-certificates` adds one) is
/// trusted from the next check of the directory's own times, without a
/// restart or SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_added_to_ssl_cert_dir_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("test CA added to the directory");
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir(&cert_dir).unwrap();
    Authority::new("a test CA already there").write(&cert_dir, "other.pem");
    let env = [("SSL_CERT_DIR", Some(cert_dir.to_str().unwrap()))];
    let served = UntrustedAtFirst::start(dir.path(), "dir", &authority, &env).await;
    authority.write(&cert_dir, "added.pem");
    served
        .trusted_eventually("dir", "trusting the CA added to the directory")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_carries_upstream_calls_and_no_proxy_skips_it() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("private test CA");
    let front = TlsFront::start(fake.addr(), &authority.server(), None).await;
    let proxy = ConnectProxy::start().await;
    let ca = toml_path(&authority.write(dir.path(), "ca.pem"));
    let port = front.addr.port();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        config_for_binary(&format!(
            "[providers.proxied]\nbase_url = \"https://127.0.0.1:{port}/v1\"\n\
             [providers.direct]\nbase_url = \"https://localhost:{port}/v1\"\n\
             [upstream]\nca_files = [\"{ca}\"]\n"
        )),
    )
    .unwrap();
    let proxy_url = format!("http://{}", proxy.addr);
    let sidecar = serve(
        dir.path(),
        &config,
        &[
            ("HTTPS_PROXY", Some(&proxy_url)),
            ("NO_PROXY", Some("localhost")),
            ("https_proxy", None),
            ("no_proxy", None),
            ("ALL_PROXY", None),
            ("all_proxy", None),
        ],
    );
    let mut client = connect(dir.path()).await;
    let log = || sidecar.log();
    call(&mut client, "proxied")
        .await
        .unwrap_or_else(|status| panic!("{status:?}\n{}", log()));
    assert_eq!(proxy.targets(), [format!("127.0.0.1:{port}")]);
    call(&mut client, "direct")
        .await
        .unwrap_or_else(|status| panic!("{status:?}\n{}", log()));
    assert_eq!(proxy.targets().len(), 1, "NO_PROXY went around the proxy");
    assert_eq!(fake.requests().len(), 2);
}
