//! Serving: the gRPC services (chat, health, reflection) on the Unix socket
//! and the optional loopback TCP port, and an orderly stop.

mod accept;
mod fleet_ledger;
mod http;
mod limits;
pub mod memory_limit;
pub mod reaping;
mod side_channels;
pub mod socket_dir;
mod uds;
pub mod uds_authority;
mod write_through;

pub use uds::{BindError, bind_uds};

use crate::admin::Admin;
use crate::admin::grpc::AdminServiceImpl;
use crate::auth::{Access, Gate, Listener, RequireToken};
use crate::config::{Config, Env};
use crate::inbound::grpc::ChatServiceImpl;
use crate::inbound::observe::{Observer, Rules};
use crate::pipeline::{Pipeline, PipelineHandle};
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::proto::v1::admin_service_server::AdminServiceServer;
use crate::proto::v1::chat_service_server::ChatServiceServer;
use crate::telemetry::Telemetry;
use anyhow::Context as _;
use futures::TryStreamExt as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// A started sidecar. Dropping it does not stop it; call [`Running::shutdown`].
#[derive(Debug)]
pub struct Running {
    /// The Unix socket path, when one is served.
    pub uds: Option<PathBuf>,
    /// The bound TCP address (the real port when the config said port 0).
    pub tcp: Option<SocketAddr>,
    /// The OpenAI-compatible facade's bound TCP address.
    pub http: Option<SocketAddr>,
    /// The OpenAI-compatible facade's Unix socket.
    pub http_uds: Option<PathBuf>,
    /// The admin port's bound address.
    pub admin: Option<SocketAddr>,
    /// The health-only port's bound address.
    pub health_port: Option<SocketAddr>,
    pub pipeline: Arc<PipelineHandle>,
    pub observer: Arc<Observer>,
    pub telemetry: Arc<Telemetry>,
    /// Who may call the TCP and HTTP listeners (`crate::auth`).
    gate: Arc<Gate>,
    health: tonic_health::server::HealthReporter,
    stop: watch::Sender<bool>,
    /// Ends the calls still in flight when the grace period is over.
    stop_calls: CancellationToken,
    /// The health-only port, stopped after everything else.
    stop_health: watch::Sender<bool>,
    health_server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    grace: Duration,
    servers: JoinSet<anyhow::Result<()>>,
}

/// The longest start-up waits for the budgets' spend to be read back.
const RESTORE_WAIT: Duration = Duration::from_secs(1);

/// Binds every listener and starts serving. Errors here are start-up
/// errors: a socket in use, an address taken, a bad descriptor set.
pub async fn start(config: &Config, env: Env<'_>) -> anyhow::Result<Running> {
    let telemetry = side_channels::telemetry(config, env)?;
    start_with_telemetry(config, env, telemetry).await
}

/// [`start`] with telemetry made by the caller (tests give an in-memory
/// span exporter).
pub async fn start_with_telemetry(
    config: &Config,
    env: Env<'_>,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<Running> {
    let stop_calls = CancellationToken::new();
    let pipeline = Arc::new(PipelineHandle::new(build_pipeline(
        config,
        env,
        &telemetry,
        &stop_calls,
    )?));
    side_channels::observe_providers(&telemetry, &pipeline);
    let observer = side_channels::observer(config, env, &telemetry)?;
    // Waited for a second at most: a large ledger takes seconds to sum, and
    // the sidecar then serves meanwhile (its budgets counting what calls
    // spend from now, the earlier spend added when it is read).
    let mut restoring = tokio::spawn(side_channels::restore_budget_spend(
        observer.clone(),
        std::time::SystemTime::now(),
        None,
    ));
    if tokio::time::timeout(RESTORE_WAIT, &mut restoring)
        .await
        .is_err()
    {
        tracing::info!(
            "budgets: still reading this window's spend back from the ledger; serving meanwhile"
        );
    }
    let gate = Gate::new(Access::load(config, env)?, Some(telemetry.meter()));
    observer.set_scrubber(pipeline.current().scrubber().clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ChatServiceServer<ChatServiceImpl>>()
        .await;
    let chat = crate::inbound::grpc::chat_service(
        pipeline.clone(),
        observer.clone(),
        config.server.max_message_bytes,
    );
    // The google.rpc error details too (RetryInfo, ErrorInfo in
    // `grpc-status-details-bin`), so reflection-driven tools decode them.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("cannot build the reflection service")?;
    let metrics_source = Arc::downgrade(&telemetry);
    let metrics: crate::admin::MetricsText = Arc::new(move || {
        metrics_source
            .upgrade()
            .map(|telemetry| telemetry.prometheus_text())
            .unwrap_or_default()
    });
    let admin = Admin::new(pipeline.clone(), observer.clone(), Some(metrics));
    let admin_grpc = AdminServiceServer::new(AdminServiceImpl::new(admin.clone()));
    let mut routes = Routes::new(chat)
        .add_service(health_service.clone())
        .add_service(reflection)
        .add_service(reflection_alpha);
    if config.server.admin_on_app_socket {
        routes = routes.add_service(admin_grpc.clone());
    }
    let app_grpc = routes.prepare().into_axum_router();

    let timeouts = config.server.connections;
    let grpc_serving = http::Serving::grpc(timeouts, config.server.limits);
    let http_serving = http::Serving::http(timeouts, config.server.limits);
    let (stop, stopped) = watch::channel(false);
    let mut servers = JoinSet::new();
    tokio::spawn(report_provider_health(
        pipeline.clone(),
        health.clone(),
        stopped.clone(),
    ));
    tokio::spawn(crate::heap::release_after_bursts(stopped.clone()));
    let mut running_uds = None;
    if let Some(path) = &config.server.uds {
        let listener = bind_uds(path, config.server.uds_mode, config.server.uds_dir_mode).await?;
        // Stock gRPC clients send the socket path as :authority, which h2
        // refuses; TCP clients send a host and need no such reading.
        let incoming = accept::resilient(UnixListenerStream::new(listener), "gRPC Unix socket")
            .map_ok(uds_authority::AuthorityFix::new);
        servers.spawn(http::serve(
            incoming,
            app_grpc.clone(),
            stopped.clone(),
            grpc_serving,
        ));
        tracing::info!(path = %path.display(), "serving gRPC on the Unix socket");
        running_uds = Some(path.clone());
    }
    let mut running_tcp = None;
    if let Some(addr) = config.server.tcp {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (server.tcp in {})", config.source)
        })?;
        let bound = listener.local_addr()?;
        servers.spawn(http::serve_tcp(
            listener,
            app_grpc.clone().layer(RequireToken::layer(gate.clone())),
            stopped.clone(),
            grpc_serving,
            "gRPC TCP",
        ));
        tracing::info!(%bound, "serving gRPC on loopback TCP");
        running_tcp = Some(bound);
    }
    let facade =
        crate::inbound::openai_http::router(pipeline.clone(), observer.clone(), timeouts.body_read);
    let mut running_http = None;
    if let Some(addr) = config.server.http {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (server.http in {})", config.source)
        })?;
        let bound = listener.local_addr()?;
        servers.spawn(http::serve_tcp(
            listener,
            guarded(facade.clone(), &gate, Listener::Http),
            stopped.clone(),
            http_serving,
            "HTTP facade",
        ));
        tracing::info!(%bound, "serving the OpenAI-compatible HTTP API on TCP");
        running_http = Some(bound);
    }
    let mut running_http_uds = None;
    if let Some(path) = &config.server.http_uds {
        let listener = bind_uds(path, config.server.uds_mode, config.server.uds_dir_mode).await?;
        servers.spawn(http::serve_uds(
            listener,
            guarded(facade, &gate, Listener::HttpUds),
            stopped.clone(),
            http_serving,
            "HTTP facade Unix socket",
        ));
        tracing::info!(path = %path.display(), "serving the OpenAI-compatible HTTP API on the Unix socket");
        running_http_uds = Some(path.clone());
    }
    let mut running_admin = None;
    if let Some(addr) = config.server.admin {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} (server.admin in {})",
                config.source
            )
        })?;
        let bound = listener.local_addr()?;
        // gRPC (AdminService, health for kubelet probes) and JSON on one port.
        let grpc = Routes::new(admin_grpc)
            .add_service(health_service.clone())
            .prepare()
            .into_axum_router();
        let router = crate::admin::http::router(admin).merge(grpc).layer(
            axum::middleware::from_fn_with_state(
                (gate.clone(), Listener::Admin),
                crate::auth::guard,
            ),
        );
        servers.spawn(http::serve_tcp(
            listener,
            router,
            stopped.clone(),
            http_serving,
            "admin port",
        ));
        tracing::info!(%bound, "serving the admin port (metrics, usage, health)");
        running_admin = Some(bound);
    }
    let mut running_health = None;
    let (stop_health, health_stopped) = watch::channel(false);
    let mut health_server = None;
    if let Some(addr) = config.server.health {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} (server.health in {})",
                config.source
            )
        })?;
        let bound = listener.local_addr()?;
        // Stopped last: while calls drain, probes still get an answer,
        // NOT_SERVING, rather than a refused connection.
        health_server = Some(tokio::spawn(http::serve_tcp(
            listener,
            Routes::new(health_service).prepare().into_axum_router(),
            health_stopped,
            grpc_serving,
            "gRPC health port",
        )));
        tracing::info!(%bound, "serving gRPC health for probes");
        running_health = Some(bound);
    }
    for (token, path) in gate.written_files() {
        tracing::info!(path = %path.display(), "{token} kept in this file");
    }
    Ok(Running {
        gate,
        uds: running_uds,
        admin: running_admin,
        health_port: running_health,
        tcp: running_tcp,
        http: running_http,
        http_uds: running_http_uds,
        pipeline,
        observer,
        telemetry,
        health,
        stop,
        stop_calls,
        stop_health,
        health_server,
        grace: config.server.shutdown_grace,
        servers,
    })
}

/// The health service name that reports a provider's circuit.
/// A pipeline for `config`, sharing the process's telemetry and stop.
fn build_pipeline(
    config: &Config,
    env: Env<'_>,
    telemetry: &Arc<Telemetry>,
    stop_calls: &CancellationToken,
) -> anyhow::Result<Pipeline> {
    let pipeline = Pipeline::new(config, env)
        .context("cannot build the clients of the upstreams and the shared store")?
        .with_telemetry(telemetry.clone())
        .with_stop(stop_calls.clone());
    for provider in pipeline.providers() {
        if let Some(problem) = provider.readiness_problem() {
            tracing::warn!(provider = %provider.name, "provider is not usable: {problem}");
        }
    }
    Ok(pipeline)
}

pub fn provider_health_name(provider: &str) -> String {
    format!("llmsidecar.provider.{provider}")
}

/// Mirrors each provider's circuit into the health service (SERVING
/// unless open), so probes and operators can see a provider being skipped.
async fn report_provider_health(
    pipeline: Arc<PipelineHandle>,
    health: tonic_health::server::HealthReporter,
    mut stopped: watch::Receiver<bool>,
) {
    use tonic_health::ServingStatus;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let states: Vec<(String, ServingStatus)> = pipeline
            .current()
            .provider_states()
            .map(|state| {
                let status = if state.circuit == crate::pipeline::CircuitState::Open {
                    ServingStatus::NotServing
                } else {
                    ServingStatus::Serving
                };
                (provider_health_name(state.name), status)
            })
            .collect();
        for (name, status) in states {
            health.set_service_status(name, status).await;
        }
    }
}

/// The facade's routes behind `listener`'s checks (and CORS for the
/// configured browser origins).
fn guarded(facade: axum::Router, gate: &Arc<Gate>, listener: Listener) -> axum::Router {
    // The checks first, preflights included (a foreign Host gets no CORS
    // answer either); then CORS for the origins they let through.
    // Around the facade once, as one service (see `openai_http::router`).
    let checked = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(
            (gate.clone(), listener),
            crate::auth::guard,
        ))
        .layer(crate::auth::cors(gate.clone()))
        .service(facade);
    axum::Router::new().fallback_service(checked)
}

/// How long calls ended at the end of the grace period get to send their
/// UNAVAILABLE before their connections are closed.
const AFTER_GRACE: Duration = Duration::from_secs(2);

impl Running {
    /// Reports NOT_SERVING, stops accepting calls, lets the calls in flight
    /// finish within the configured grace period (`server.shutdown_grace_ms`)
    /// and ends the rest with UNAVAILABLE; then flushes the ledger and
    /// telemetry and removes the socket files.
    pub async fn shutdown(self) {
        let grace = self.grace;
        self.shutdown_within(grace).await;
    }

    /// [`shutdown`](Self::shutdown) with its own grace period.
    pub async fn shutdown_within(mut self, grace: Duration) {
        use tonic_health::ServingStatus;
        let began = tokio::time::Instant::now();
        self.health
            .set_not_serving::<ChatServiceServer<ChatServiceImpl>>()
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        // Listeners stop accepting; open connections are told to go away
        // (HTTP/2 GOAWAY) once their calls are done.
        let _ = self.stop.send(true);
        if tokio::time::timeout(grace, self.join_servers())
            .await
            .is_err()
        {
            let in_flight: usize = self
                .pipeline
                .current()
                .provider_states()
                .map(|state| state.in_flight)
                .sum();
            tracing::warn!(
                in_flight,
                grace_ms = grace.as_millis() as u64,
                "grace period over: ending the calls still open with UNAVAILABLE"
            );
            self.stop_calls.cancel();
            if tokio::time::timeout(AFTER_GRACE, self.join_servers())
                .await
                .is_err()
            {
                tracing::warn!("connections still open after the grace period; closing them");
                self.servers.abort_all();
                self.join_servers().await;
            }
        }
        let _ = self.stop_health.send(true);
        if let Some(mut health_server) = self.health_server.take()
            && tokio::time::timeout(AFTER_GRACE, &mut health_server)
                .await
                .is_err()
        {
            health_server.abort();
        }
        for path in [&self.uds, &self.http_uds].into_iter().flatten() {
            let _ = std::fs::remove_file(path);
        }
        if let Some(ledger) = self.observer.ledger() {
            // The fleet ledger's forwarder drains in what is left of the
            // grace (at least a second): the pod is killed after it.
            let left = grace.saturating_sub(began.elapsed());
            ledger.close_within(left.max(Duration::from_secs(1))).await;
        }
        // The SDK's shutdown blocks on the last export (bounded).
        let telemetry = self.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
}

impl Running {
    /// Serves new calls by `config` from now on — providers, keys, routes,
    /// limits, prices — while calls under way finish as they began. All or
    /// nothing: if any part of `config` cannot be built, nothing changes.
    /// Listener settings (`[server]`) take effect only at a restart.
    pub fn reload(&self, config: &Config, env: Env<'_>) -> anyhow::Result<()> {
        let pipeline = build_pipeline(config, env, &self.telemetry, &self.stop_calls)?;
        let access = Access::load(config, env)?;
        let rules = Rules::new(config)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("in {}", config.source))?;
        self.observer.set_scrubber(pipeline.scrubber().clone());
        self.pipeline.replace(pipeline);
        let added = self.observer.set_rules(rules);
        self.gate.replace(access);
        // A budget new with this configuration counts what the ledger says
        // was spent in its window before now, as at a start.
        if !added.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(side_channels::restore_budget_spend(
                self.observer.clone(),
                std::time::SystemTime::now(),
                Some(added),
            ));
        }
        Ok(())
    }

    async fn join_servers(&mut self) {
        while let Some(result) = self.servers.join_next().await {
            match result {
                Ok(Err(error)) => tracing::warn!("a listener ended with an error: {error}"),
                Err(error) if error.is_cancelled() => {}
                Err(error) => tracing::warn!("a listener task failed: {error}"),
                Ok(Ok(())) => {}
            }
        }
    }
}
