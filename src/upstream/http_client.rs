//! The one HTTP client every provider shares, so many local calls ride on
//! few pooled upstream connections (HTTP/2 where the upstream offers it via
//! ALPN, keep-alive HTTP/1.1 otherwise).

use crate::config::UpstreamConfig;

pub fn build_http_client(config: &UpstreamConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("llm-sidecar/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .tcp_nodelay(true)
        .http2_adaptive_window(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .http2_keep_alive_while_idle(false)
        // A redirect would resend the Authorization header to wherever the
        // upstream points; chat APIs do not redirect.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}
