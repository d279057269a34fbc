//! Generates the protobuf messages and tonic services from the .proto files
//! under `proto/`, laid out as their packages say (`berth/v1/`,
//! `berth/ci/v1/`, `berth/service/v1/`, `berth/jobs/v1/`, so that code generated from them
//! in other languages can live in a package), with the protoc binary vendored by
//! `protoc-bin-vendored`, so building berth needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/berth/v1/common.proto",
        "proto/berth/v1/scheduler.proto",
        "proto/berth/v1/agent.proto",
        "proto/berth/v1/operator.proto",
        "proto/berth/v1/raft.proto",
        "proto/berth/v1/kv.proto",
        "proto/berth/ci/v1/ci.proto",
        "proto/berth/service/v1/service.proto",
        "proto/berth/jobs/v1/jobs.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &protos, &["proto"])?;
    Ok(())
}
