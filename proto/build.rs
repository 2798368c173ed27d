//! Compiles the `.proto` files with protox (pure Rust, no system `protoc`), writes the encoded
//! descriptor set for server reflection, and generates the prost messages and tonic services.

use std::{env, fs, path::PathBuf};

use prost::Message;

const FILES: &[&str] = &[
    "store/v1/store.proto",
    "session/v1/money.proto",
    "session/v1/cart.proto",
    "session/v1/todo.proto",
    "session/v1/inventory.proto",
    "session/v1/record.proto",
    "session/v1/admin.proto",
    "session/v1/jobs.proto",
    "session/v1/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(FILES, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::FlatCodec")
        .compile_fds(fds)?;
    Ok(())
}
