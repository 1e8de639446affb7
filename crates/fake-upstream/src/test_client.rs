//! A tiny raw HTTP/1.1 client over `TcpStream` for the fake's own tests: it
//! keeps the socket in the test's hands (to drop it mid-response) and exposes
//! the chunked-encoding frames (to check `split_bytes`).

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    /// Body bytes of each HTTP chunk (one entry if not chunked).
    pub(crate) chunks: Vec<Vec<u8>>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn body(&self) -> Vec<u8> {
        self.chunks.concat()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body()).expect("utf-8 body")
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body()).expect("json body")
    }

    /// `data:` payloads of the SSE body, in order (comments skipped).
    pub(crate) fn sse_data(&self) -> Vec<String> {
        self.text()
            .replace("\r\n", "\n")
            .split("\n\n")
            .filter_map(|frame| frame.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }
}

pub(crate) struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub(crate) fn into_inner(self) -> BufReader<TcpStream> {
        self.reader
    }

    /// Sends one request; `headers` are extra `(name, value)` pairs.
    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: fake\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.reader
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .expect("write request");
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).await.expect("read line");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    /// Reads status line and headers.
    pub(crate) async fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let status_line = self.line().await;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("header line");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        (status, headers)
    }

    /// Reads one chunk of a chunked body; `None` at the terminating chunk.
    pub(crate) async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = self.line().await;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_line:?}"));
        if size == 0 {
            while !self.line().await.is_empty() {}
            return None;
        }
        let mut data = vec![0; size];
        self.reader.read_exact(&mut data).await.expect("chunk data");
        let mut crlf = [0; 2];
        self.reader.read_exact(&mut crlf).await.expect("chunk crlf");
        Some(data)
    }

    /// Reads a whole response.
    pub(crate) async fn read_response(&mut self) -> Response {
        let (status, headers) = self.read_head().await;
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut chunks = Vec::new();
        // No body by definition (RFC 9110 §15.3.5, §15.4.5): reading to the
        // end would wait for a keep-alive connection to close.
        if status == 204 || status == 304 {
        } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            while let Some(c) = self.read_chunk().await {
                chunks.push(c);
            }
        } else if let Some(len) = find("content-length") {
            let mut data = vec![0; len.parse().expect("content-length")];
            self.reader.read_exact(&mut data).await.expect("body");
            chunks.push(data);
        } else {
            let mut data = Vec::new();
            self.reader.read_to_end(&mut data).await.expect("body");
            chunks.push(data);
        }
        Response {
            status,
            headers,
            chunks,
        }
    }
}

/// One request on a fresh connection.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut c = Client::connect(addr).await;
    c.send(method, path, headers, body).await;
    c.read_response().await
}

/// `POST /v1/chat/completions` with `body` on a fresh connection.
pub(crate) async fn chat(addr: SocketAddr, body: &Value) -> Response {
    request(addr, "POST", "/v1/chat/completions", &[], &body.to_string()).await
}
