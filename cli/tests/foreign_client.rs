//! A framework written in another language from the .proto files alone:
//! Python modules generated with grpcio-tools into a package of their own
//! (`mypkg.berth.v1`, `mypkg.berth.ci.v1`, `mypkg.berth.service.v1`), and
//! a client
//! (`foreign/client.py`) that imports them, asks a real `berth master` who
//! leads, subscribes, reads SUBSCRIBED, sees a made-up stream id and a
//! megabyte id refused with short errors grpcio accepts, and tears down.
//!
//! Needs python3 with `grpcio` and `grpcio-tools` (`.ci/run` installs
//! them): without them the test fails when `CI` is set and is skipped
//! with a notice otherwise.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::berth_master;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Whether python3 can import grpc and grpc_tools; otherwise says why
/// (and panics under CI).
fn python_ready() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("python3: {e}"),
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "the foreign client test needs python3 with grpcio and grpcio-tools \
         (pip install grpcio grpcio-tools): {why}"
    );
    eprintln!("skipping: python3 with grpcio and grpcio-tools is not available ({why})");
    false
}

/// The .proto files, relative to the include root, as protoc is given them.
fn proto_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("berth")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("the proto tree reads") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                let rel = path.strip_prefix(root).expect("under the root");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Waits until a master at `addr` accepts connections.
fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "berth master never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_python_framework_generated_from_the_protos_subscribes_to_a_real_master() {
    if !python_ready() {
        return;
    }
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto");
    let files = proto_files(&include);
    assert_eq!(
        files,
        [
            "berth/ci/v1/ci.proto",
            "berth/jobs/v1/jobs.proto",
            "berth/service/v1/service.proto",
            "berth/v1/agent.proto",
            "berth/v1/common.proto",
            "berth/v1/kv.proto",
            "berth/v1/operator.proto",
            "berth/v1/raft.proto",
            "berth/v1/scheduler.proto",
        ]
    );
    let out = tempfile::tempdir().expect("a temporary directory");
    let package = out.path().join("mypkg");
    std::fs::create_dir(&package).expect("mypkg is created");
    let generated = Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg("-I")
        .arg(&include)
        .arg(format!("--python_out={}", package.display()))
        .arg(format!("--grpc_python_out={}", package.display()))
        .args(&files)
        .output()
        .expect("python3 runs");
    assert!(
        generated.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    for module in [
        "berth/v1/scheduler_pb2.py",
        "berth/v1/scheduler_pb2_grpc.py",
        "berth/v1/operator_pb2.py",
        "berth/v1/agent_pb2.py",
        "berth/v1/kv_pb2_grpc.py",
        "berth/ci/v1/ci_pb2.py",
        "berth/service/v1/service_pb2.py",
        "berth/service/v1/service_pb2_grpc.py",
    ] {
        assert!(package.join(module).is_file(), "{module} was not generated");
    }

    let data = tempfile::tempdir().expect("a temporary directory");
    let (_master, addr) = berth_master(BERTH, data.path());
    wait_listening(&addr);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/foreign/client.py");
    let run = Command::new("python3")
        .arg(&client)
        .arg(out.path())
        .arg(&addr)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "client.py failed:\n{stdout}\n{stderr}"
    );
    for line in [
        "imported mypkg.berth.v1, mypkg.berth.ci.v1 and mypkg.berth.service.v1",
        "GetLeader: raft id 1",
        "SUBSCRIBED: framework fw-",
        "a megabyte framework id: INVALID_ARGUMENT",
        "Teardown: the framework is gone",
        "KeyValue: created, refused a stale write, held a lease at epoch 1",
    ] {
        assert!(
            stdout.contains(line),
            "{line:?} missing from:\n{stdout}\n{stderr}"
        );
    }
}
