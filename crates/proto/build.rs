//! Generates the message types, servers and clients of `proto/` with the
//! vendored `protoc`, and the file descriptor sets that server reflection
//! serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: the build script is single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };

    tonic_prost_build::configure()
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("effnet_descriptor.bin"))
        .compile_protos(
            &[root.join("effnet/v1/classifier.proto")],
            std::slice::from_ref(&root),
        )?;

    let triton = root.join("triton");
    tonic_prost_build::configure()
        .bytes(".inference")
        .file_descriptor_set_path(out_dir.join("inference_descriptor.bin"))
        .compile_protos(
            &[
                triton.join("grpc_service.proto"),
                triton.join("model_config.proto"),
            ],
            &[triton],
        )?;

    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
