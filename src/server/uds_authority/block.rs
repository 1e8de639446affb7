//! One HPACK header block (RFC 7541) read and written again, with an
//! `:authority` h2 would refuse replaced by `localhost`.
//!
//! Two HPACK contexts meet here and must each stay in step:
//! - the client's encoder and our decoder: every block the client sends is
//!   decoded here, in order, so our dynamic table follows the client's
//!   (insertions, evictions, size updates);
//! - our encoder and h2's decoder: every block is written again with
//!   literal representations *without indexing* and no size updates, so
//!   h2's dynamic table stays empty and any block we write can be decoded
//!   with an empty table. Nothing the client indexed is lost: we send the
//!   decoded field, not the index.
//!
//! Once one block is written again, every later block must be too: passing
//! one through unchanged would hand h2 indexes into a table it never built.
//! Before that, a connection whose first block names a valid authority
//! passes whole (see `frames.rs`).

use loona_hpack::Decoder;
use loona_hpack::encoder::encode_integer_into;

/// The dynamic table size the client's encoder may use: the server's
/// SETTINGS_HEADER_TABLE_SIZE, which tonic and hyper leave at the
/// protocol's initial 4,096 bytes (RFC 9113 §6.5.2).
const HEADER_TABLE_SIZE: usize = 4_096;

/// What replaces an `:authority` h2 would refuse (a socket path): the
/// name gRPC gives a local server.
const LOCAL_AUTHORITY: &[u8] = b"localhost";

pub(super) struct BlockRewriter {
    decoder: Decoder<'static>,
}

impl std::fmt::Debug for BlockRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockRewriter").finish_non_exhaustive()
    }
}

impl BlockRewriter {
    pub(super) fn new() -> BlockRewriter {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        BlockRewriter { decoder }
    }

    /// Decodes `block` (the client's next header block, whole) and appends
    /// it to `out` as literals without indexing, fields in the same order;
    /// `Ok(true)` when an `:authority` was replaced.
    /// Once `out` is over `limit` bytes nothing more is appended (a small
    /// block can name a large table entry many times), but the block is
    /// still decoded to its end. The error is the decoder's, for the message.
    pub(super) fn rewrite(
        &mut self,
        block: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, String> {
        out.reserve(block.len() + block.len() / 2);
        let mut replaced = false;
        self.decoder
            .decode_with_cb(block, |name, value| {
                if out.len() > limit {
                    return;
                }
                let value: &[u8] = if &*name == b":authority" && !is_authority(&value) {
                    replaced = true;
                    LOCAL_AUTHORITY
                } else {
                    &value
                };
                write_literal(out, &name, value);
            })
            .map_err(|error| error.to_string())?;
        Ok(replaced)
    }
}

/// Whether h2 takes `value` as an `:authority`: it parses it as the `http`
/// crate does, and resets the stream when that fails.
fn is_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// A literal header field without indexing, new name (RFC 7541 §6.2.2),
/// strings without Huffman coding (§5.2).
fn write_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    write_string(out, name);
    write_string(out, value);
}

fn write_string(out: &mut Vec<u8>, text: &[u8]) {
    // Writing into a Vec cannot fail.
    let _ = encode_integer_into(text.len(), 7, 0x00, out);
    out.extend_from_slice(text);
}
