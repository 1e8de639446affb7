//! The client's side of an HTTP/2 connection, cut into frames (RFC 9113
//! §3.4, §4.1) just far enough to find the header blocks.
//!
//! No I/O here: the adapter feeds bytes in and takes bytes out. Bytes before
//! the next HEADERS frame are handed on where they were read ([`scan`]);
//! from a HEADERS frame on, bytes are held ([`Rewriter::pending_mut`]) until
//! the whole header block (HEADERS plus its CONTINUATION frames) is there,
//! which is then written again ([`block`]) as a HEADERS frame and as many
//! CONTINUATION frames as its size needs.
//!
//! [`scan`]: Rewriter::scan
//! [`block`]: super::block

use super::block::BlockRewriter;
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::ReadBuf;

/// The client connection preface (RFC 9113 §3.4), before the first frame.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Stream dependency (4 bytes) and weight (1) of a HEADERS frame with
/// the PRIORITY flag.
const PRIORITY_LEN: usize = 5;

/// The largest frame payload the server accepts: SETTINGS_MAX_FRAME_SIZE's
/// initial value (RFC 9113 §6.5.2), which tonic's server keeps. A HEADERS
/// or CONTINUATION frame over it is refused, as h2 would refuse it, and the
/// frames written again never exceed it.
pub(super) const MAX_FRAME_SIZE: usize = 16_384;

/// The most header-block bytes held for one request, as received and as
/// written again. hyper accepts header lists of 16 KiB; this leaves room
/// for a client's own framing while bounding what a client can make the
/// sidecar hold.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Why a connection's header block could not be handed on.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("HTTP/2 {kind} frame of {len} bytes is over the {MAX_FRAME_SIZE}-byte frame size")]
    FrameTooLarge { kind: &'static str, len: usize },
    #[error("HTTP/2 header block of stream {stream} is over {MAX_HEADER_BLOCK} bytes")]
    BlockTooLarge { stream: u32 },
    #[error(
        "HTTP/2 HEADERS frame of stream {stream}: padding or priority is longer than the payload"
    )]
    BadPadding { stream: u32 },
    #[error(
        "HTTP/2 header block of stream {stream} is followed by a frame of type {kind:#x}, not its CONTINUATION"
    )]
    ExpectedContinuation { stream: u32, kind: u8 },
    #[error("HTTP/2 header block of stream {stream}: HPACK: {message}")]
    Hpack { stream: u32, message: String },
}

/// The nine bytes in front of every frame.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    /// The stream identifier as sent, reserved bit included.
    stream_bytes: [u8; 4],
}

impl FrameHead {
    fn parse(bytes: &[u8]) -> FrameHead {
        FrameHead {
            len: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream_bytes: [bytes[5], bytes[6], bytes[7], bytes[8]],
        }
    }

    fn stream(&self) -> u32 {
        u32::from_be_bytes(self.stream_bytes) & 0x7fff_ffff
    }

    fn write(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_bytes: [u8; 4]) {
        debug_assert!(len <= MAX_FRAME_SIZE);
        out.put_uint(len as u64, 3);
        out.put_u8(kind);
        out.put_u8(flags);
        out.put_slice(&stream_bytes);
    }
}

/// One connection's client-to-server state.
#[derive(Debug)]
pub(super) struct Rewriter {
    /// Bytes of the client preface not yet seen.
    preface_left: usize,
    /// Everything passes as it is: the connection is not HTTP/2 with prior
    /// knowledge (h2 refuses it in its own words), or its first header
    /// block named a valid authority.
    off: bool,
    /// A header block has been written again: every later one must be.
    rewriting: bool,
    /// Payload bytes of the frame being handed on that have not been read.
    skip: usize,
    /// Bytes read but not yet handed on, from a frame boundary: a frame
    /// header cut by a read, or a header block being gathered.
    pending: BytesMut,
    /// Bytes ready to hand on (header blocks written again, and the frames
    /// read with them).
    out: BytesMut,
    block: BlockRewriter,
    /// A header block's fragments gathered from its frames (reused).
    fragments: Vec<u8>,
    /// A header block written again (reused).
    rewritten: Vec<u8>,
}

impl Rewriter {
    pub(super) fn new() -> Rewriter {
        Rewriter {
            preface_left: PREFACE.len(),
            off: false,
            rewriting: false,
            skip: 0,
            pending: BytesMut::new(),
            out: BytesMut::new(),
            block: BlockRewriter::new(),
            fragments: Vec::new(),
            rewritten: Vec::new(),
        }
    }

    /// Looks at bytes just read into the reader's buffer (with nothing
    /// pending) and returns how many of them pass as they are: all up to
    /// the next HEADERS frame, or to a frame header cut by the end of the
    /// read. The rest is kept as pending.
    pub(super) fn scan(&mut self, fresh: &[u8]) -> usize {
        debug_assert!(self.pending.is_empty() && self.out.is_empty());
        let mut at = 0;
        while at < fresh.len() && !self.off {
            let rest = &fresh[at..];
            if self.preface_left > 0 {
                let seen = PREFACE.len() - self.preface_left;
                let n = self.preface_left.min(rest.len());
                if rest[..n] != PREFACE[seen..seen + n] {
                    self.off = true;
                    break;
                }
                self.preface_left -= n;
                at += n;
            } else if self.skip > 0 {
                let n = self.skip.min(rest.len());
                self.skip -= n;
                at += n;
            } else if rest.len() < FRAME_HEADER_LEN || rest[3] == TYPE_HEADERS {
                self.pending.extend_from_slice(rest);
                return at;
            } else {
                self.skip = FrameHead::parse(rest).len;
                at += FRAME_HEADER_LEN;
            }
        }
        fresh.len()
    }

    /// Whether bytes are held that need more reading or processing before
    /// they can be handed on.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Where to read more bytes when [`process`](Self::process) needs them.
    pub(super) fn pending_mut(&mut self) -> &mut BytesMut {
        &mut self.pending
    }

    /// The client closed with a frame unfinished: hand on what there is.
    pub(super) fn give_up_pending(&mut self) {
        let pending = self.pending.split();
        self.out.extend_from_slice(&pending);
        self.off = true;
    }

    /// Copies ready bytes into `buf`; false when there were none.
    pub(super) fn drain_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.out.is_empty() {
            return false;
        }
        let n = self.out.len().min(buf.remaining());
        buf.put_slice(&self.out[..n]);
        self.out.advance(n);
        true
    }

    /// Moves the next frame or header block from pending to ready. False
    /// when pending holds too little of it: read more, then call again.
    pub(super) fn process(&mut self) -> Result<bool, RewriteError> {
        if self.off {
            let rest = self.pending.split();
            self.out.extend_from_slice(&rest);
            return Ok(!rest.is_empty());
        }
        if self.pending.len() < FRAME_HEADER_LEN {
            return Ok(false);
        }
        let head = FrameHead::parse(&self.pending);
        if head.kind != TYPE_HEADERS {
            // A frame whose header a read cut in two: hand on what is here
            // and let the rest of its payload pass unread.
            let whole = FRAME_HEADER_LEN + head.len;
            let here = whole.min(self.pending.len());
            self.skip = whole - here;
            let frame = self.pending.split_to(here);
            self.out.extend_from_slice(&frame);
            return Ok(true);
        }
        let Some(gathered) = self.gather()? else {
            return Ok(false);
        };
        self.rewritten.clear();
        let replaced = self
            .block
            .rewrite(&self.fragments, &mut self.rewritten, MAX_HEADER_BLOCK)
            .map_err(|message| RewriteError::Hpack {
                stream: head.stream(),
                message,
            })?;
        if !replaced && !self.rewriting {
            // A client that names a valid authority in its first request
            // (tonic, grpc-go, a grpcio channel given one) names it in
            // every request of the connection: its frames pass as they
            // are from here on, h2's table follows the client's as it
            // would without us, and no later block costs a decode.
            let frames = self.pending.split_to(gathered.consumed);
            self.out.extend_from_slice(&frames);
            self.off = true;
            return Ok(true);
        }
        self.rewriting = true;
        if self.rewritten.len() > MAX_HEADER_BLOCK {
            return Err(RewriteError::BlockTooLarge {
                stream: head.stream(),
            });
        }
        self.write_block(head, gathered.priority);
        self.pending.advance(gathered.consumed);
        Ok(true)
    }

    /// Gathers the header block that starts pending into `fragments`, once
    /// all its frames are there.
    fn gather(&mut self) -> Result<Option<Gathered>, RewriteError> {
        let first = FrameHead::parse(&self.pending);
        let mut priority = None;
        let mut at = 0;
        self.fragments.clear();
        loop {
            if self.pending.len() < at + FRAME_HEADER_LEN {
                return self.too_soon(first);
            }
            let head = FrameHead::parse(&self.pending[at..]);
            if at > 0 && (head.kind != TYPE_CONTINUATION || head.stream() != first.stream()) {
                return Err(RewriteError::ExpectedContinuation {
                    stream: first.stream(),
                    kind: head.kind,
                });
            }
            if head.len > MAX_FRAME_SIZE {
                return Err(RewriteError::FrameTooLarge {
                    kind: if at == 0 { "HEADERS" } else { "CONTINUATION" },
                    len: head.len,
                });
            }
            let start = at + FRAME_HEADER_LEN;
            if self.pending.len() < start + head.len {
                return self.too_soon(first);
            }
            let mut payload = &self.pending[start..start + head.len];
            if at == 0 {
                let (fragment, dependency) = strip_headers_payload(head, payload)?;
                payload = fragment;
                priority = dependency;
            }
            self.fragments.extend_from_slice(payload);
            at = start + head.len;
            if head.flags & FLAG_END_HEADERS != 0 {
                return Ok(Some(Gathered {
                    consumed: at,
                    priority,
                }));
            }
        }
    }

    /// More of the block is to come; unless it has grown too large.
    fn too_soon(&self, first: FrameHead) -> Result<Option<Gathered>, RewriteError> {
        if self.pending.len() > MAX_HEADER_BLOCK + 2 * FRAME_HEADER_LEN {
            return Err(RewriteError::BlockTooLarge {
                stream: first.stream(),
            });
        }
        Ok(None)
    }

    /// Writes `rewritten` as a HEADERS frame (with the original's stream,
    /// END_STREAM and priority, without padding) and CONTINUATION frames.
    fn write_block(&mut self, first: FrameHead, priority: Option<[u8; PRIORITY_LEN]>) {
        let mut block = &self.rewritten[..];
        let room = MAX_FRAME_SIZE - priority.map_or(0, |p| p.len());
        let (chunk, rest) = block.split_at(block.len().min(room));
        let mut flags = first.flags & (FLAG_END_STREAM | FLAG_PRIORITY);
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        let len = chunk.len() + priority.map_or(0, |p| p.len());
        self.out
            .reserve(block.len() + FRAME_HEADER_LEN * (1 + block.len() / MAX_FRAME_SIZE) + 5);
        FrameHead::write(&mut self.out, len, TYPE_HEADERS, flags, first.stream_bytes);
        if let Some(priority) = priority {
            self.out.put_slice(&priority);
        }
        self.out.put_slice(chunk);
        block = rest;
        while !block.is_empty() {
            let (chunk, rest) = block.split_at(block.len().min(MAX_FRAME_SIZE));
            let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
            FrameHead::write(
                &mut self.out,
                chunk.len(),
                TYPE_CONTINUATION,
                flags,
                first.stream_bytes,
            );
            self.out.put_slice(chunk);
            block = rest;
        }
    }
}

/// A header block gathered: how many pending bytes its frames took, and
/// the HEADERS frame's priority fields.
struct Gathered {
    consumed: usize,
    priority: Option<[u8; PRIORITY_LEN]>,
}

/// A HEADERS payload without its pad length, priority fields and padding
/// (RFC 9113 §6.2): the header block fragment, and the priority fields.
fn strip_headers_payload(
    head: FrameHead,
    payload: &[u8],
) -> Result<(&[u8], Option<[u8; PRIORITY_LEN]>), RewriteError> {
    let bad = || RewriteError::BadPadding {
        stream: head.stream(),
    };
    let mut payload = payload;
    let mut padding = 0;
    if head.flags & FLAG_PADDED != 0 {
        let (&pad_len, rest) = payload.split_first().ok_or_else(bad)?;
        padding = usize::from(pad_len);
        payload = rest;
    }
    let mut priority = None;
    if head.flags & FLAG_PRIORITY != 0 {
        let fields = payload.get(..PRIORITY_LEN).ok_or_else(bad)?;
        priority = Some(<[u8; PRIORITY_LEN]>::try_from(fields).map_err(|_| bad())?);
        payload = &payload[PRIORITY_LEN..];
    }
    let end = payload.len().checked_sub(padding).ok_or_else(bad)?;
    Ok((&payload[..end], priority))
}
