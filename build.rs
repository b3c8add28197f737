//! Compiles `proto/ipclass/v1/ipclass.proto` into Rust with a vendored
//! `protoc`, so a fresh checkout builds without a system protobuf compiler.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/ipclass/v1/ipclass.proto";
    println!("cargo:rerun-if-changed={proto}");

    // Respect an explicit PROTOC; otherwise use the copy shipped as a crate.
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded, so no other thread
        // reads the environment while it is changed.
        unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("ipclass_descriptor.bin"))
        .bytes(".ipclass.v1.IsInternalPackedRequest")
        .bytes(".ipclass.v1.IsInternalPackedResponse")
        .type_attribute(".ipclass.v1.TableInfo", "#[derive(serde::Serialize)]")
        .type_attribute(".ipclass.v1.SetInfo", "#[derive(serde::Serialize)]")
        .compile_protos(&[proto], &["proto"])?;
    Ok(())
}
