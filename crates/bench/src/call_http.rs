//! Calls over HTTP/1.1 with keep-alive, as an OpenAI SDK makes them: to the
//! fake upstream directly, through nginx, the sidecar's facade and the peers.

use crate::trace::{StreamTrace, content_in};
use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use tokio::time::{Instant, timeout_at};

#[derive(Debug, Clone)]
pub struct HttpCaller {
    client: reqwest::Client,
    url: String,
    unary_body: Bytes,
    stream_body: Bytes,
    headers: Vec<(String, String)>,
}

impl HttpCaller {
    /// `base` is up to and including `/v1`.
    pub fn new(base: &str, model: &str, headers: Vec<(String, String)>) -> anyhow::Result<Self> {
        // The load generator's own client, not an upstream one.
        #[allow(clippy::disallowed_methods)]
        let client = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .build()?;
        Ok(HttpCaller {
            client,
            url: format!("{base}/chat/completions"),
            unary_body: body(model, false),
            stream_body: body(model, true),
            headers,
        })
    }

    /// The same target and connections, asking for another model.
    pub fn with_model(&self, model: &str) -> HttpCaller {
        HttpCaller {
            unary_body: body(model, false),
            stream_body: body(model, true),
            ..self.clone()
        }
    }

    fn post(&self, body: &Bytes) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
    }

    pub async fn unary(&self) -> Result<(), String> {
        let response = self
            .post(&self.unary_body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    }

    pub async fn stream(&self, deadline: Instant) -> StreamTrace {
        let mut trace = StreamTrace::start();
        let response = match timeout_at(deadline, self.post(&self.stream_body).send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                trace.fail(e);
                return trace;
            }
            Err(_) => {
                trace.fail("deadline before the response headers");
                return trace;
            }
        };
        if !response.status().is_success() {
            trace.fail(format!("HTTP {}", response.status()));
            return trace;
        }
        let mut response = response;
        let mut events = Events::default();
        loop {
            match timeout_at(deadline, response.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    events.push(&bytes, &mut trace);
                    if trace.complete {
                        return trace;
                    }
                }
                Ok(Ok(None)) => {
                    trace.fail("the body ended before data: [DONE]");
                    return trace;
                }
                Ok(Err(e)) => {
                    trace.fail(e);
                    return trace;
                }
                Err(_) => {
                    trace.fail("deadline in the middle of the stream");
                    return trace;
                }
            }
        }
    }
}

fn body(model: &str, stream: bool) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": crate::caller::PROMPT}],
            "stream": stream,
        })
        .to_string(),
    )
}

/// Splits the SSE body into events across reads.
#[derive(Debug, Default)]
struct Events {
    pending: Vec<u8>,
}

impl Events {
    fn push(&mut self, bytes: &[u8], trace: &mut StreamTrace) {
        self.pending.extend_from_slice(bytes);
        let mut consumed = 0;
        while let Some(end) = find(&self.pending[consumed..], b"\n\n") {
            let event = &self.pending[consumed..consumed + end];
            for line in event.split(|&b| b == b'\n') {
                let Some(data) = line.strip_prefix(b"data:") else {
                    continue;
                };
                let data = data.trim_ascii();
                if data == b"[DONE]" {
                    trace.finish();
                } else if let Some(text) = content_in(data) {
                    trace.content(text);
                } else if find(data, b"\"error\"").is_some() {
                    trace.fail(String::from_utf8_lossy(data));
                }
            }
            consumed += end + 2;
        }
        self.pending.drain(..consumed);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads() {
        let mut trace = StreamTrace::start();
        let mut events = Events::default();
        events.push(b"data: {\"delta\":{\"content\":\"1\"}}\n", &mut trace);
        assert_eq!(trace.chunks(), 0);
        events.push(
            b"\ndata: {\"delta\":{\"content\":\"2\"}}\n\ndata: [DO",
            &mut trace,
        );
        assert_eq!(trace.chunks(), 2);
        assert!(!trace.complete);
        events.push(b"NE]\n\n", &mut trace);
        assert!(trace.complete);
    }
}
