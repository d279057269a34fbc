//! Generates the protobuf messages and tonic services from `proto/*.proto`
//! with the protoc binary vendored by `protoc-bin-vendored`, so building
//! berth needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/common.proto",
        "proto/scheduler.proto",
        "proto/agent.proto",
        "proto/operator.proto",
        "proto/raft.proto",
        "proto/ci.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &protos, &["proto"])?;
    Ok(())
}
