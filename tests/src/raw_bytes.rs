//! Calling any unary gRPC method with bytes of the test's choosing, protobuf or not.
//!
//! The generated clients can only send messages they can encode, so they can never send what a
//! broken or hostile client would: a body that is not protobuf at all (`\xff\xff\xff`), a
//! truncated one, or a string field holding bytes that are not UTF-8. [`RawBytesCodec`] is a
//! `tonic` codec whose messages are `Vec<u8>` passed through untouched (tonic still adds the
//! gRPC frame header), and [`call_raw`] sends one such body to a method named by its path, on
//! any transport a generated client accepts (a tonic `Channel`, a
//! [`RawChannel`](crate::raw_channel::RawChannel)). It knows nothing about store-svc, so
//! session-svc tests use it as they are:
//!
//! ```no_run
//! # async fn example(channel: tonic::transport::Channel) {
//! let garbage = b"\xff\xff\xff".to_vec();
//! let outcome = tests::raw_bytes::call_raw(channel, "/store.v1.StoreService/Put", garbage).await;
//! assert_eq!(outcome.unwrap_err().code(), tonic::Code::InvalidArgument);
//! # }
//! ```
//!
//! [`length_delimited_field`] writes one protobuf field by hand, for bodies that are valid
//! protobuf except for what a test breaks on purpose.

use bytes::{Buf, BufMut};
use tonic::{
    Status,
    client::{Grpc, GrpcService},
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{Body, StdError, http::uri::PathAndQuery},
};

/// A codec whose messages are raw bytes: it encodes a `Vec<u8>` as the message body exactly as
/// given, and decodes a response body into the `Vec<u8>` it was.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawBytesCodec;

impl Codec for RawBytesCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawBytesCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytesCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Sends `body` as the request message of the unary method at `path`
/// (`"/store.v1.StoreService/Put"`) over `transport`, and returns the response message's bytes
/// (decode them with `prost::Message::decode`) or the server's status.
///
/// Panics when `path` is not a valid URI path: that is a mistake in the test, not an answer.
pub async fn call_raw<T>(transport: T, path: &str, body: Vec<u8>) -> Result<Vec<u8>, Status>
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let path = path
        .parse::<PathAndQuery>()
        .unwrap_or_else(|error| panic!("{path:?} is not a gRPC method path: {error}"));
    let mut grpc = Grpc::new(transport);
    // As the generated clients do: a call on a transport that is not ready fails inside tonic.
    grpc.ready().await.map_err(|error| {
        Status::unavailable(format!("the transport is not ready: {}", error.into()))
    })?;
    grpc.unary(tonic::Request::new(body), path, RawBytesCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// One protobuf field of wire type 2 (length-delimited: strings, bytes, messages): its tag,
/// its length and `bytes`, not checked in any way. Appended to an encoded message, a later
/// occurrence of a field replaces the earlier one, so a test can encode a valid message with
/// prost and then overwrite one string field with bytes that are not UTF-8.
pub fn length_delimited_field(field_number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut field = Vec::with_capacity(bytes.len() + 10);
    push_varint(&mut field, (u64::from(field_number) << 3) | 2);
    push_varint(&mut field, bytes.len() as u64);
    field.extend_from_slice(bytes);
    field
}

/// Appends `value` as a protobuf base-128 varint.
fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::length_delimited_field;

    #[test]
    fn a_length_delimited_field_is_tag_length_bytes() {
        assert_eq!(length_delimited_field(2, b"ab"), vec![0x12, 2, b'a', b'b']);
        let long = length_delimited_field(1, &[0; 300]);
        assert_eq!(&long[..3], &[0x0a, 0xac, 0x02], "300 as a two-byte varint");
        assert_eq!(long.len(), 303);
    }
}
