//! Generates the gRPC code from `proto/` with protox (a pure-Rust protobuf
//! compiler), so building needs no system `protoc`. The descriptor set is
//! also written to OUT_DIR for server reflection. On x86_64 Linux, where
//! rustc links with lld, the binary's hot functions are placed first in its
//! code (`link/text-order.txt`, `scripts/text-order`), and its relocations
//! are packed (DT_RELR) where the glibc reads them.

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
        // prost's codec, but for a stream event's message, which is used
        // again once encoded (src/inbound/grpc/codec.rs).
        .codec_path("crate::inbound::grpc::codec::RecyclingCodec")
        .compile_fds(descriptors)?;
    Ok(())
}

/// The functions that run at start and per call, packed together at the
/// start of `.text`: the kernel maps code 64 KiB around each fault, so
/// scattered they made most of the 11 MB of code resident; packed, the
/// idle sidecar's RSS is some 6 MiB lower. Only where lld links: the
/// target whose default linker it is (rustc 1.90 and later), with no
/// linker chosen in the flags or the environment (GNU ld refuses the
/// option); names it no longer finds (another toolchain, other
/// dependencies) are skipped quietly: `scripts/text-order --check` counts
/// them.
fn order_text() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=link/text-order.txt");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let list = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("link/text-order.txt");
    if std::env::var("TARGET")? != "x86_64-unknown-linux-gnu"
        || !list.exists()
        || !links_with_default_lld()
    {
        return Ok(());
    }
    println!(
        "cargo:rustc-link-arg-bin=llm-sidecar=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bin=llm-sidecar=-Wl,--no-warn-symbol-ordering");
    // The position-independent binary's 24,000 relative relocations as a
    // bitmap (DT_RELR) instead of 24 bytes each: the loader reads some 10 KB
    // at start instead of 560 KB, which stayed resident. lld marks the
    // binary as needing glibc's GLIBC_ABI_DT_RELR (2.36, Debian 12), so a
    // glibc that cannot read the bitmap refuses to start it; hence only
    // where the glibc it is linked against has it.
    if glibc_reads_relr() {
        println!("cargo:rustc-link-arg-bin=llm-sidecar=-Wl,-z,pack-relative-relocs");
    }
    Ok(())
}

/// The build host's glibc (which the binary links against, and the image's
/// runtime matches: deploy/Dockerfile) is 2.36 or later.
fn glibc_reads_relr() -> bool {
    let Ok(output) = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
    else {
        return false;
    };
    // "glibc 2.36"
    second_word_version(&String::from_utf8_lossy(&output.stdout)) >= (2, 36)
}

/// rustc 1.90 or later (rust-lld is then the default linker of
/// x86_64-unknown-linux-gnu), and neither the flags nor the environment
/// name another linker.
fn links_with_default_lld() -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let chosen = ["linker", "fuse-ld", "link-self-contained"];
    if chosen.iter().any(|flag| flags.contains(flag))
        || std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(output) = std::process::Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    second_word_version(&String::from_utf8_lossy(&output.stdout)) >= (1, 90)
}

/// Major and minor of a version printed as the second word ("tool 1.2.3").
fn second_word_version(text: &str) -> (u32, u32) {
    let mut numbers = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}
