//! A pipeline survives a 30 s outage of `berth ci serve`: a real `berth
//! dev` and `berth ci serve`; the server is SIGTERMed while a job runs,
//! the job ends and uploads its artifacts while the server is down (the
//! agent tries again until the server is back), the server is started
//! again on the same port and data 30 s later, and the pipeline succeeds
//! with nothing failed or lost: the next job fetches the artifacts and
//! reads them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{ChildProcess, free_port};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
/// How long the server stays down.
const OUTAGE: Duration = Duration::from_secs(30);

fn berth(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BERTH).args(args).output().expect("berth runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `berth ci serve` on `listen` with its data in `dir/ci`, its log
/// appended to `dir/serve.log`.
fn serve(dir: &Path, master: &str, listen: &str) -> ChildProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .expect("serve log");
    ChildProcess(
        Command::new(BERTH)
            .args(["ci", "serve", "--master", master, "--listen", listen])
            .args(["--data-dir", "ci"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("berth ci serve starts"),
    )
}

fn wait_until(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < bound,
            "{what} did not happen within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pipeline's JSON view, if the server answers.
fn pipeline(server: &str) -> Option<serde_json::Value> {
    let (code, out) = berth(&["ci", "show", "1", "--json", "--server", server]);
    (code == Some(0))
        .then(|| serde_json::from_str(&out).ok())
        .flatten()
}

#[test]
fn a_pipeline_survives_a_30_second_outage_of_its_ci_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = format!("127.0.0.1:{}", free_port());
    let agent = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{listen}");
    let _dev = ChildProcess(
        Command::new(BERTH)
            .args(["dev", "--listen", &master, "--agent-listen", &agent])
            // Other tests' berth dev may run at once: no fixed ports.
            .args([
                "--service-listen",
                "127.0.0.1:0",
                "--router-admin",
                "127.0.0.1:0",
                "--jobs-listen",
                "127.0.0.1:0",
            ])
            .args(["--no-docker", "--resources", "cpus:4;mem:4096;disk:10000"])
            .arg("--data-dir")
            .arg(dir.path().join("dev"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth dev starts"),
    );
    let mut ci = serve(dir.path(), &master, &listen);
    wait_until("berth ci serve answering", Duration::from_secs(60), || {
        berth(&["ci", "list", "--server", &server]).0 == Some(0)
    });

    let started = dir.path().join("started");
    let go = dir.path().join("go");
    let pipeline_file = format!(
        "build:\n  stage: build\n  script:\n    - touch {started}\n    - while [ ! -f {go} ]; do sleep 0.2; done\n    - mkdir -p out && echo artifact-made-in-the-outage > out/a.txt\n  artifacts:\n    paths: [out/]\ncheck:\n  stage: test\n  script:\n    - cat out/a.txt\n    - test \"$(cat out/a.txt)\" = artifact-made-in-the-outage\n",
        started = started.display(),
        go = go.display()
    );
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", &pipeline_file)]);
    let path = repo.path().to_str().expect("utf-8 path");
    let (code, out) = berth(&["ci", "trigger", path, "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    wait_until("the build job running", Duration::from_secs(60), || {
        started.exists()
    });

    // SIGTERM the server; the job ends while it is down and its upload
    // meets a closed port.
    let _ = Command::new("kill")
        .args(["-TERM", &ci.0.id().to_string()])
        .status();
    wait_until("berth ci serve stopping", Duration::from_secs(20), || {
        ci.0.try_wait().ok().flatten().is_some()
    });
    let down = Instant::now();
    std::fs::write(&go, b"").expect("go");
    let sandboxes = dir.path().join("dev/agent/sandboxes");
    wait_until(
        "the build job's upload meeting the closed port",
        Duration::from_secs(20),
        || {
            berth_tests::files_under(&sandboxes)
                .iter()
                .filter(|p| p.ends_with("stderr"))
                .any(|p| {
                    std::fs::read_to_string(p).is_ok_and(|t| {
                        t.contains("berth: uploading") && t.contains("trying again for up to 300s")
                    })
                })
        },
    );
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    let _ci = serve(dir.path(), &master, &listen);

    // The pipeline goes on and succeeds: nothing failed, nothing lost.
    let mut last = None;
    wait_until("the pipeline's end", Duration::from_secs(120), || {
        last = pipeline(&server);
        last.as_ref().is_some_and(|p| {
            matches!(
                p["status"].as_str(),
                Some("success" | "failed" | "canceled")
            )
        })
    });
    let view = last.expect("the pipeline");
    let serve_log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert_eq!(view["status"], "success", "{view:#}\n{serve_log}");
    let jobs: Vec<(String, String)> = view["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap_or_default().to_owned(),
                j["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        jobs,
        [
            ("build".to_owned(), "success".to_owned()),
            ("check".to_owned(), "success".to_owned())
        ],
        "{view:#}"
    );
    // `-f`: the job has ended, but its log may still be being collected
    // (`logs` without it prints what is stored so far).
    let (code, out) = berth(&["ci", "logs", "-f", "1", "check", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("artifact-made-in-the-outage"), "{out}");
    let (code, out) = berth(&["ci", "logs", "-f", "1", "build", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("trying again for up to 300s"), "{out}");
}
