//! The gRPC services' codec: prost's, except that a stream event's message
//! goes back to the thread's free list once it is encoded (`recycle.rs`),
//! for the next event to be decoded into. The generated code names it
//! (`build.rs`, `codec_path`), for every service and the client alike;
//! only `ChatChunk` is kept, every other message is dropped as before.

use crate::inbound::grpc::recycle;
use crate::proto::v1 as pb;
use prost::Message;
use std::any::Any;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// `application/grpc+proto` through prost, encoding `T` and decoding `U`.
#[derive(Debug, Clone, Copy)]
pub struct RecyclingCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for RecyclingCodec<T, U> {
    fn default() -> Self {
        RecyclingCodec(PhantomData)
    }
}

impl<T, U> Codec for RecyclingCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = RecyclingEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        RecyclingEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Encodes `T` with prost, then hands a `ChatChunk` back to the free list.
#[derive(Debug, Clone, Copy)]
pub struct RecyclingEncoder<T>(PhantomData<T>);

impl<T: Message + 'static> Encoder for RecyclingEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // The buffer grows as needed: prost's only error is "no room".
        item.encode(buf)
            .map_err(|error| Status::internal(format!("encoding a message: {error}")))?;
        give_back_if_chunk(item);
        Ok(())
    }
}

/// A `ChatChunk` to the free list; any other message is dropped. (The
/// type test is decided when the encoder is compiled for `T`.)
fn give_back_if_chunk<T: 'static>(item: T) {
    let mut item = Some(item);
    if let Some(chunk) = (&mut item as &mut dyn Any).downcast_mut::<Option<pb::ChatChunk>>()
        && let Some(chunk) = chunk.take()
    {
        recycle::give_back(chunk);
    }
}
