//! Generated code for the project's gRPC APIs, the encoded descriptor set that server
//! reflection serves, and the codec every generated client and server uses. The `.proto` files
//! are the source of truth.

pub mod codec;

/// `store.v1`: versioned key/value with compare-and-swap, served by store-svc.
pub mod store {
    /// Version 1 of the store API.
    pub mod v1 {
        tonic::include_proto!("store.v1");
    }
}

/// `session.v1`: the per-user actor services of session-svc.
pub mod session {
    /// Version 1 of the session API.
    pub mod v1 {
        tonic::include_proto!("session.v1");
    }
}

/// Every file of `proto/`, encoded as a `google.protobuf.FileDescriptorSet`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
