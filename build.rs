//! Generates the gRPC code from `proto/` with protox (a pure-Rust protobuf
//! compiler), so building needs no system `protoc`. The descriptor set is
//! also written to OUT_DIR for server reflection. On x86_64 Linux, where
//! rustc links with lld, the binary's hot functions are placed first in its
//! code (`link/text-order.txt`, `scripts/text-order`).

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/llmsidecar/v1/chat.proto",
    "proto/llmsidecar/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    order_text()?;
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("llmsidecar_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

/// The functions that run at start and per call, packed together at the
/// start of `.text`: the kernel maps code 64 KiB around each fault, so
/// scattered they made most of the 11 MB of code resident; packed, the
/// idle sidecar's RSS is some 6 MiB lower. Only for the target whose
/// default linker is lld (rustc 1.90 and later), which reads the list;
/// names it no longer finds (another toolchain, other dependencies) are
/// skipped quietly: `scripts/text-order --check` counts them.
fn order_text() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=link/text-order.txt");
    let list = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("link/text-order.txt");
    if std::env::var("TARGET")? != "x86_64-unknown-linux-gnu" || !list.exists() {
        return Ok(());
    }
    println!(
        "cargo:rustc-link-arg-bin=llm-sidecar=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bin=llm-sidecar=-Wl,--no-warn-symbol-ordering");
    Ok(())
}
