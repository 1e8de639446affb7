//! Which `Host` and `Origin` an HTTP listener answers.
//!
//! DNS rebinding: a web page on `evil.example` makes its name resolve to
//! 127.0.0.1 and then reads what `http://evil.example:8787` answers, as
//! the page's own origin. Its requests carry `Host: evil.example`; so a
//! listener answers only host names it knows — `localhost`, `*.localhost`
//! (which resolve to loopback by RFC 6761), the configured ones — and IP
//! literals, which no DNS answer can rebind (a kubelet probe or a
//! Prometheus scrape comes to the pod IP so).

use std::net::IpAddr;

/// Whether `authority` (`host[:port]`, as in `Host` or HTTP/2's
/// `:authority`) names this sidecar.
pub fn host_allowed(authority: &str, allowed: &[String]) -> bool {
    let Some(host) = host_of(authority) else {
        return false;
    };
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost") || allowed.contains(&host)
}

/// The host of `host[:port]` or `[v6]:port`; `None` when malformed.
fn host_of(authority: &str) -> Option<&str> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return (after.is_empty() || after.starts_with(':')).then_some(host);
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return None,
        None => authority,
    };
    (!host.is_empty() && !host.contains(['@', '/', ' '])).then_some(host)
}

/// Whether a browser request from `origin` may be served.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.trim_end_matches('/');
    allowed.iter().any(|name| name.eq_ignore_ascii_case(origin))
}

/// Whether a request body's `Content-Type` is JSON (`application/json`
/// or `application/*+json`, any parameters). Browsers send `text/plain`,
/// form and multipart bodies across origins without asking first; a JSON
/// body they must ask for (a CORS preflight), which we do not grant.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_ip_literals_are_answered() {
        let none: &[String] = &[];
        for host in [
            "localhost",
            "localhost:8787",
            "LocalHost.",
            "api.localhost:1",
            "127.0.0.1:8787",
            "10.1.2.3",
            "[::1]:8787",
            "[fe80::1]",
        ] {
            assert!(host_allowed(host, none), "{host}");
        }
    }

    #[test]
    fn other_names_are_refused_unless_configured() {
        let none: &[String] = &[];
        for host in [
            "evil.example",
            "evil.example:8787",
            "localhost.evil.example",
            "",
            ":80",
            "a@b",
            "[::1",
        ] {
            assert!(!host_allowed(host, none), "{host}");
        }
        let allowed = ["llm-sidecar.default.svc".to_owned()];
        assert!(host_allowed("LLM-sidecar.default.svc:8787", &allowed));
        assert!(!host_allowed("other.default.svc", &allowed));
    }

    #[test]
    fn origins_match_as_configured() {
        let allowed = ["https://app.example.com".to_owned()];
        assert!(origin_allowed("https://app.example.com", &allowed));
        assert!(!origin_allowed("http://app.example.com", &allowed));
        assert!(!origin_allowed("null", &allowed));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("multipart/form-data; boundary=x"));
    }
}
