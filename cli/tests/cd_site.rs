//! examples/cd-site end to end, through the real binary: `berth dev` runs
//! the cluster (master, an agent with Docker, the service framework and its
//! router), and `berth ci run --master` runs the example's pipeline on it
//! twice. The first commit is tested, built into an image on the agent and
//! deployed; the second, whose dynamic page fails every third request of
//! an instance, goes out as a canary under a steady load through the
//! router, is rolled back by the router's measurements, and the site never
//! stops answering.

#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::BerthDev;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
/// Host ports this test's agent offers (no other test uses them).
const PORTS: &str = "31400-31499";
const APP: &str = "/cd-site";
/// The image's name: its tags are the commits.
const IMAGE: &str = "berth-test-cd-site";
/// The canary's share of the requests in examples/cd-site/ci/app.sh.
const CANARY_WEIGHT: f64 = 0.20;

/// `berth dev` on ephemeral ports, with `berth` on its agent's `PATH` (the
/// deploy job calls it) and its tasks killed when it stops.
fn start_dev() -> BerthDev {
    let bin = Path::new(BERTH).parent().unwrap();
    BerthDev::start(
        BERTH,
        &format!("cpus:4;mem:4096;disk:10000;ports:[{PORTS}]"),
        Some(berth_tests::path_with(bin)),
    )
}

/// `berth ci run` of `repo` on `dev`'s cluster: exit code and output.
fn ci_run(dev: &BerthDev, repo: &Path, site_port: u16) -> (Option<i32>, String) {
    let out = Command::new(BERTH)
        .args(["ci", "run"])
        .arg(repo)
        .args(["--master", &dev.master])
        .args(["--var", &format!("BERTH_SERVICE={}", dev.service)])
        .args(["--var", &format!("SITE_PORT={site_port}")])
        .args(["--var", &format!("SITE_IMAGE={IMAGE}")])
        .output()
        .unwrap();
    (
        out.status.code(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// Removes the containers and images of the commits built, however the
/// test ends.
struct Images(Vec<String>);

impl Images {
    fn containers(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|image| {
                let filter = format!("ancestor={image}");
                berth_tests::docker(&["ps", "-aq", "--filter", &filter])
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for id in self.containers() {
            let _ = berth_tests::docker(&["rm", "-f", &id]);
        }
        for image in &self.0 {
            let _ = berth_tests::docker(&["rmi", "-f", image]);
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET path` on a fresh connection: status and body, or why it failed.
fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: site\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).map_err(|e| e.to_string())?;
    let reply = text(&reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end: {reply:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {reply:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((
        status,
        if chunked {
            berth_tests::dechunk(body)
        } else {
            body.into()
        },
    ))
}

/// Requests the dynamic page through the router every 20 ms until `stop`:
/// what each request got.
fn load(
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Result<(u16, String), String>>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            seen.push(get(port, "/cgi-bin/hello"));
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

/// A git repository holding examples/cd-site (file modes kept: the CGI
/// page is executable), committed; its short commit id.
fn example_repo(dir: &Path) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cd-site");
    let repo = dir.join("cd-site");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&example)
        .arg(&repo)
        .status()
        .unwrap();
    assert!(copied.success());
    berth_tests::git(&repo, &["init", "-q", "-b", "main"]);
    berth_tests::git(&repo, &["add", "-A"]);
    berth_tests::git(&repo, &["commit", "-q", "-m", "cd-site v1"]);
    repo
}

fn short_sha(repo: &Path) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--short=8", "HEAD"])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_owned()
}

/// The image the app runs now.
fn deployed_image(dev: &BerthDev) -> String {
    let out = dev.berth(&["service", "show", APP, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let app: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    app["container"]["docker"]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn cd_site_example_deploys_a_commit_and_rolls_back_a_failing_canary() {
    if !berth_tests::docker_ready("cd_site_example") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = example_repo(tmp.path());
    let mut dev = start_dev();
    let mut images = Images(Vec::new());
    let port = berth_tests::free_port();

    // The first commit: tested, built, deployed, live.
    let v1 = short_sha(&repo);
    images.0.push(format!("{IMAGE}:{v1}"));
    let (code, out) = ci_run(&dev, &repo, port);
    assert_eq!(code, Some(0), "{out}");
    for job in ["test-pages", "build-image", "deploy"] {
        assert!(out.contains(&format!("  success    {job}")), "{out}");
    }
    assert_eq!(deployed_image(&dev), format!("{IMAGE}:{v1}"));
    let (status, page) = get(port, "/").unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(r#"<span id="version">v1</span>"#), "{page}");
    assert_eq!(
        get(port, "/cgi-bin/hello").unwrap(),
        (200, "hello from cd-site v1\n".to_owned())
    );

    // The second commit's page fails every third request of an instance:
    // its tests pass, its canary does not.
    let patch = repo.join("v2-broken.patch");
    berth_tests::git(&repo, &["apply", &patch.display().to_string()]);
    berth_tests::git(&repo, &["commit", "-q", "-a", "-m", "cd-site v2"]);
    let v2 = short_sha(&repo);
    images.0.push(format!("{IMAGE}:{v2}"));
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(port, stop.clone());
    let started = Instant::now();
    let (code, out) = ci_run(&dev, &repo, port);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let seen = running.join().unwrap();
    assert_eq!(code, Some(1), "{out}");
    for job in ["test-pages", "build-image"] {
        assert!(out.contains(&format!("  success    {job}")), "{out}");
    }
    assert!(out.contains("  failed     deploy"), "{out}");
    assert!(out.contains("rolledBack"), "the deploy job's log: {out}");
    assert!(out.contains("canary error rate"), "rolled back why: {out}");
    assert_eq!(deployed_image(&dev), format!("{IMAGE}:{v1}"));

    // The site never stopped answering: every request got an answer; the
    // only errors are the canary's 500s, which at most its share of the
    // requests reached, and there were some (the analysis counted them).
    let failed: Vec<_> = seen.iter().filter(|r| r.is_err()).collect();
    let errors = seen.iter().filter(|r| matches!(r, Ok((500, _)))).count();
    let odd: Vec<_> = seen
        .iter()
        .flatten()
        .filter(|(s, b)| {
            *s != 500
                && (*s, b.as_str()) != (200, "hello from cd-site v1\n")
                && (*s, b.as_str()) != (200, "hello from cd-site v2\n")
        })
        .collect();
    eprintln!(
        "second pipeline ({took:?}): {} requests through the router, {errors} answered 500 ({:.1} %), {} v2 answers",
        seen.len(),
        100.0 * errors as f64 / seen.len().max(1) as f64,
        seen.iter()
            .flatten()
            .filter(|(_, b)| b.contains("v2"))
            .count()
    );
    assert!(seen.len() > 100, "the load ran: {} requests", seen.len());
    assert!(failed.is_empty(), "requests without an answer: {failed:?}");
    assert!(odd.is_empty(), "unexpected answers: {odd:?}");
    assert!(errors > 0, "the canary's failures reached the load");
    assert!(
        (errors as f64) <= CANARY_WEIGHT * seen.len() as f64,
        "{errors} of {} requests failed: more than the canary's share",
        seen.len()
    );
    // v1 serves alone again.
    for _ in 0..20 {
        assert_eq!(
            get(port, "/cgi-bin/hello").unwrap(),
            (200, "hello from cd-site v1\n".to_owned())
        );
    }

    // Remove the app; no container stays.
    let out = dev.berth(&["service", "remove", APP]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(
        Duration::from_secs(60),
        "the site's containers to go",
        || {
            images.containers().iter().all(|id| {
                berth_tests::docker(&["inspect", "--format", "{{.State.Running}}", id])
                    .is_none_or(|r| r != "true")
            })
        },
    );
    assert!(dev.terminate().success());
}
