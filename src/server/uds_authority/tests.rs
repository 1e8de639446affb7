//! The adapter in front of the real h2 server, fed a client's bytes in
//! reads of every size: split frame headers, padding, priority,
//! CONTINUATION frames, a dynamic table shared across blocks.

use super::AuthorityFix;
use super::frames::MAX_FRAME_SIZE;
use loona_hpack::{Decoder, Encoder};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client's side of a connection, delivered in the given reads; then
/// silent (never EOF, unless `eof`). What the server writes is dropped.
struct Reads {
    reads: VecDeque<Vec<u8>>,
    eof: bool,
}

impl Reads {
    fn new(bytes: &[u8], read_size: usize) -> Reads {
        Reads {
            reads: bytes.chunks(read_size).map(<[u8]>::to_vec).collect(),
            eof: false,
        }
    }

    fn then_eof(mut self) -> Reads {
        self.eof = true;
        self
    }
}

impl AsyncRead for Reads {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let eof = self.eof;
        match self.reads.front_mut() {
            Some(read) => {
                let n = read.len().min(buf.remaining());
                buf.put_slice(&read[..n]);
                read.drain(..n);
                if read.is_empty() {
                    self.reads.pop_front();
                }
                Poll::Ready(Ok(()))
            }
            None if eof => Poll::Ready(Ok(())),
            None => Poll::Pending,
        }
    }
}

impl AsyncWrite for Reads {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

fn request_fields(authority: &str, extra: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/llmsidecar.v1.ChatService/Complete"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("x-custom", extra),
    ]
    .into_iter()
    .map(|(name, value)| (name.as_bytes().to_vec(), value.as_bytes().to_vec()))
    .collect()
}

fn encode(encoder: &mut Encoder<'_>, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])))
}

/// A client's connection: three requests on one HPACK context (the
/// encoder indexes, so later blocks refer to fields of earlier ones).
/// Stream 1: a raw socket path, its block cut across HEADERS (padded, with
/// priority) and two CONTINUATION frames, then a DATA frame. Stream 3: the
/// percent-encoded path, indexes only. Stream 5: a valid authority.
fn client_bytes() -> Vec<u8> {
    let mut encoder = Encoder::new();
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));

    let first = encode(&mut encoder, &request_fields("/run/llm/x.sock", "one"));
    let (a, rest) = first.split_at(first.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut payload = vec![4u8]; // pad length
    payload.extend_from_slice(&[0, 0, 0, 0, 15]); // depends on stream 0, weight 16
    payload.extend_from_slice(a);
    payload.extend_from_slice(&[0; 4]);
    bytes.extend(frame(HEADERS, PADDED | PRIORITY, 1, &payload));
    bytes.extend(frame(CONTINUATION, 0, 1, b));
    bytes.extend(frame(CONTINUATION, END_HEADERS, 1, c));
    bytes.extend(frame(DATA, END_STREAM, 1, b"hello"));

    let second = encode(
        &mut encoder,
        &request_fields("%2Frun%2Fllm%2Fx.sock", "one"),
    );
    bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
    let third = encode(&mut encoder, &request_fields("example.com:8080", "two"));
    bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &third));
    bytes
}

async fn serve(reads: Reads) -> Vec<(http::Request<h2::RecvStream>, Vec<u8>)> {
    let mut connection = h2::server::handshake(AuthorityFix::new(reads))
        .await
        .expect("h2 accepts the preface and SETTINGS");
    let mut requests = Vec::new();
    for _ in 0..3 {
        let (request, _respond) = connection
            .accept()
            .await
            .expect("a request")
            .expect("h2 accepts the request");
        requests.push(request);
    }
    let mut seen = Vec::new();
    for request in requests {
        let (parts, mut body) = request.into_parts();
        let mut data = Vec::new();
        if !body.is_end_stream() {
            while let Some(chunk) = body.data().await {
                data.extend_from_slice(&chunk.expect("body data"));
            }
        }
        seen.push((http::Request::from_parts(parts, body), data));
    }
    seen
}

#[tokio::test]
async fn h2_accepts_socket_path_authorities_in_reads_of_every_size() {
    let bytes = client_bytes();
    for read_size in [1, 2, 5, 9, 10, 17, 64, 4096] {
        // h2 resets a stream whose authority it refuses and waits for the
        // next: without the rewrite this would wait for good.
        let seen = tokio::time::timeout(
            Duration::from_secs(10),
            serve(Reads::new(&bytes, read_size)),
        )
        .await
        .expect("h2 took all three requests");
        let authorities: Vec<_> = seen
            .iter()
            .map(|(request, _)| request.uri().authority().unwrap().as_str().to_owned())
            .collect();
        assert_eq!(
            authorities,
            ["localhost", "localhost", "example.com:8080"],
            "reads of {read_size}"
        );
        let customs: Vec<_> = seen
            .iter()
            .map(|(request, _)| request.headers()["x-custom"].to_str().unwrap().to_owned())
            .collect();
        assert_eq!(customs, ["one", "one", "two"], "reads of {read_size}");
        assert_eq!(
            seen[0].0.uri().path(),
            "/llmsidecar.v1.ChatService/Complete"
        );
        assert_eq!(seen[0].1, b"hello", "reads of {read_size}");
    }
}

/// Reads the adapter's whole output for `bytes` (which must end).
async fn output_of(bytes: &[u8], read_size: usize) -> io::Result<Vec<u8>> {
    let mut adapter = AuthorityFix::new(Reads::new(bytes, read_size).then_eof());
    let mut out = Vec::new();
    adapter.read_to_end(&mut out).await?;
    Ok(out)
}

/// The frames in `bytes` after the preface: (type, flags, stream, payload).
fn frames_of(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut rest = &bytes[PREFACE.len()..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        frames.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    frames
}

#[tokio::test]
async fn blocks_are_written_without_padding_within_the_frame_size_and_without_the_table() {
    let mut encoder = Encoder::new();
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    let big = "v".repeat(40_000);
    let fields = request_fields("/tmp/s.sock", &big);
    let block = encode(&mut encoder, &fields);
    let mut payload = vec![2u8];
    payload.extend_from_slice(&block[..100]);
    payload.extend_from_slice(&[0, 0]);
    bytes.extend(frame(HEADERS, PADDED, 1, &payload));
    for chunk in block[100..].chunks(MAX_FRAME_SIZE) {
        bytes.extend(frame(CONTINUATION, 0, 1, chunk));
    }
    bytes.extend(frame(CONTINUATION, END_HEADERS, 1, &[]));
    let data = frame(DATA, END_STREAM, 1, &[7; 16_000]);
    bytes.extend_from_slice(&data);
    // The same fields again (the value is over the table's size, so it
    // comes as a literal again).
    let again = encode(&mut encoder, &fields);
    let mut chunks = again.chunks(MAX_FRAME_SIZE).peekable();
    bytes.extend(frame(HEADERS, 0, 3, chunks.next().unwrap()));
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        bytes.extend(frame(CONTINUATION, flags, 3, chunk));
    }

    for read_size in [3, 1000, 1 << 20] {
        let out = output_of(&bytes, read_size).await.unwrap();
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let frames = frames_of(&out);
        assert!(
            frames
                .iter()
                .all(|(_, _, _, payload)| payload.len() <= MAX_FRAME_SIZE)
        );
        let mut blocks: Vec<(u32, Vec<u8>)> = Vec::new();
        for (kind, flags, stream, payload) in &frames {
            match *kind {
                HEADERS => {
                    assert_eq!(flags & (PADDED | PRIORITY), 0);
                    blocks.push((*stream, payload.clone()));
                }
                CONTINUATION => blocks.last_mut().unwrap().1.extend_from_slice(payload),
                _ => {}
            }
        }
        assert_eq!(blocks.len(), 2);
        for (stream, block) in blocks {
            // A fresh decoder for each block: nothing we wrote needs a table.
            let decoded = Decoder::new().decode(&block).unwrap();
            let authority = &decoded.iter().find(|(n, _)| n == b":authority").unwrap().1;
            assert_eq!(authority, b"localhost", "stream {stream}");
            let custom = &decoded.iter().find(|(n, _)| n == b"x-custom").unwrap().1;
            assert_eq!(custom.len(), 40_000, "stream {stream}");
        }
        // The DATA frame passes byte for byte.
        let data_at = out.windows(data.len()).position(|w| w == data.as_slice());
        assert!(data_at.is_some(), "reads of {read_size}");
    }
}

#[tokio::test]
async fn a_header_block_cut_by_another_frame_ends_the_connection_saying_why() {
    let mut bytes = PREFACE.to_vec();
    let block = encode(&mut Encoder::new(), &request_fields("/s.sock", "x"));
    bytes.extend(frame(HEADERS, 0, 1, &block));
    bytes.extend(frame(DATA, 0, 1, b"x"));
    let error = output_of(&bytes, 7).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert_eq!(
        error.to_string(),
        "HTTP/2 header block of stream 1 is followed by a frame of type 0x0, not its CONTINUATION"
    );
}

#[tokio::test]
async fn oversized_and_malformed_header_frames_are_refused() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(HEADERS, END_HEADERS, 1, &vec![0; MAX_FRAME_SIZE + 1]));
    let error = output_of(&bytes, 4096).await.unwrap_err();
    assert!(error.to_string().contains("16385 bytes"), "{error}");

    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82]));
    let error = output_of(&bytes, 4096).await.unwrap_err();
    assert!(error.to_string().contains("padding"), "{error}");

    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &[0xff, 0xff, 0xff, 0xff, 0x7f],
    ));
    let error = output_of(&bytes, 4096).await.unwrap_err();
    assert!(error.to_string().contains("HPACK"), "{error}");
}

#[tokio::test]
async fn what_is_not_http2_passes_as_it_is() {
    let bytes = b"GET / HTTP/1.1\r\nHost: /tmp/s.sock\r\n\r\n\x00\x00\x01\x01\x04".to_vec();
    assert_eq!(output_of(&bytes, 5).await.unwrap(), bytes);
}

#[test]
fn frames_before_a_headers_frame_pass_in_the_read_buffer() {
    let mut rewriter = super::frames::Rewriter::new();
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]));
    bytes.extend(frame(DATA, 0, 1, &[1; 100]));
    let before = bytes.len();
    bytes.extend(frame(HEADERS, END_HEADERS, 3, &[0x82]));
    assert_eq!(rewriter.scan(&bytes[..before - 50]), before - 50);
    assert!(!rewriter.has_pending());
    // The DATA frame's last 50 bytes pass too; the HEADERS frame is held.
    assert_eq!(rewriter.scan(&bytes[before - 50..]), 50);
    assert!(rewriter.has_pending());
}

/// A connection whose first request names a valid authority passes byte
/// for byte, indexed blocks included (h2's table follows the client's);
/// one whose first request names a socket path is written again to its
/// end, even when a later request names a valid authority.
#[tokio::test]
async fn a_connection_that_starts_valid_passes_whole_and_one_that_does_not_is_rewritten() {
    let mut encoder = Encoder::new();
    let mut valid_first = PREFACE.to_vec();
    valid_first.extend(frame(SETTINGS, 0, 0, &[]));
    for (stream, authority) in [(1, "localhost"), (3, "localhost"), (5, "/run/llm/x.sock")] {
        let block = encode(&mut encoder, &request_fields(authority, "same"));
        valid_first.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
    }
    for read_size in [1, 7, 4096] {
        assert_eq!(
            output_of(&valid_first, read_size).await.unwrap(),
            valid_first
        );
    }

    let rewritten = output_of(&client_bytes(), 4096).await.unwrap();
    let blocks: Vec<_> = frames_of(&rewritten)
        .into_iter()
        .filter(|(kind, ..)| *kind == HEADERS)
        .collect();
    assert_eq!(blocks.len(), 3);
    // The valid third request is written as literals too: its block names
    // the authority in full, where the client's indexed it.
    let third = &blocks[2].3;
    let found = third
        .windows(16)
        .any(|window| window == b"example.com:8080");
    assert!(found, "the third block is written again as literals");
}
