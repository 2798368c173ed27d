//! The codec of every generated service: prost's, except that a message is encoded into a
//! contiguous buffer first and copied into tonic's frame buffer in one piece.
//!
//! prost writes a message a field and a varint byte at a time through `BufMut`. Into a `Vec`
//! that is a push; into tonic's `EncodeBuf` (a `BytesMut` behind a wrapper) each small write
//! checks capacity and goes through two layers, which makes encoding about three times slower:
//! 3.7 µs against 1.2 µs for a 1.4 KB `Session` with 20 lines on this project's machine. A
//! session-svc reply is a whole cart, so that was a large share of its CPU per call. Decoding
//! is prost's, except that a body that does not decode (truncated, wrong wire types, a string
//! that is not UTF-8) is the caller's mistake: INVALID_ARGUMENT, never INTERNAL.

use std::{cell::RefCell, marker::PhantomData};

use bytes::BufMut;
use prost::Message;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// A scratch buffer larger than this is not kept for the next message on its thread.
const KEEP_SCRATCH_BYTES: usize = 256 * 1024;

thread_local! {
    /// Where messages are encoded before being copied into the frame; one per thread, since
    /// encoding never awaits.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// prost messages, encoded through a contiguous scratch buffer (see the module docs). `T` is
/// what it encodes, `U` what it decodes.
#[derive(Debug, Clone, Copy)]
pub struct FlatCodec<T, U>(PhantomData<Types<T, U>>);

/// The codec's types, as a `fn` pointer so that the codec is `Send` and `Sync` whatever they are.
type Types<T, U> = fn(T) -> U;

impl<T, U> Default for FlatCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for FlatCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = FlatEncoder<T>;
    type Decoder = FlatDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        FlatEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        FlatDecoder(PhantomData)
    }
}

/// Decodes `U` as prost does; a body that does not decode is INVALID_ARGUMENT.
#[derive(Debug, Clone, Copy)]
pub struct FlatDecoder<U>(PhantomData<fn() -> U>);

impl<U: Message + Default> Decoder for FlatDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| {
            // prost's message names the message and field, never the bytes it was given.
            Status::invalid_argument(format!(
                "the message does not decode as {}: {error}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("protobuf")
            ))
        })
    }
}

/// Encodes `T` into the thread's scratch buffer, then into the frame in one copy.
#[derive(Debug, Clone, Copy)]
pub struct FlatEncoder<T>(PhantomData<fn(T)>);

impl<T: Message> Encoder for FlatEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        encode_flat(&item, buf);
        Ok(())
    }
}

/// Encodes `item` into the thread's scratch buffer, then appends it to `out` in one copy.
fn encode_flat<T: Message>(item: &T, out: &mut impl BufMut) {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        item.encode_raw(&mut *scratch);
        out.put_slice(&scratch);
        if scratch.capacity() > KEEP_SCRATCH_BYTES {
            *scratch = Vec::new();
        }
    });
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::session::v1::{LineItem, Session};

    fn session(lines: usize, name_bytes: usize) -> Session {
        Session {
            key: "k".into(),
            items: (0..lines)
                .map(|i| LineItem {
                    sku: format!("sku-{i}"),
                    name: "n".repeat(name_bytes),
                    quantity: 1 + i as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Encodes `message` as the codec's encoder does into a frame.
    fn frame(message: &Session) -> BytesMut {
        let mut bytes = BytesMut::from(&b"head"[..]);
        encode_flat(message, &mut bytes);
        assert_eq!(&bytes[..4], b"head", "appends after what the frame holds");
        bytes.split_off(4)
    }

    #[test]
    fn encodes_exactly_what_prost_does() {
        for message in [Session::default(), session(3, 10), session(200, 2_000)] {
            let bytes = frame(&message);
            assert_eq!(bytes.as_ref(), message.encode_to_vec().as_slice());
            assert_eq!(Session::decode(bytes).unwrap(), message);
        }
    }

    #[test]
    fn a_large_message_does_not_stay_in_the_scratch_buffer() {
        frame(&session(200, 2_000)); // About 400 KB.
        let kept = SCRATCH.with(|scratch| scratch.borrow().capacity());
        assert!(kept <= KEEP_SCRATCH_BYTES, "{kept} bytes kept");
        frame(&session(3, 10));
        let kept = SCRATCH.with(|scratch| scratch.borrow().capacity());
        assert!(kept > 0, "a small message's buffer is reused");
    }
}
