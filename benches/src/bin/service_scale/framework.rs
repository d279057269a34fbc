//! The service framework under test: a `berth service serve --no-router`
//! process (its CPU and memory measured alone) or, without `--berth`, the
//! same `serve` function on this process's runtime.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use berth_benches::stats::{self, Rss};
use tokio::sync::oneshot;

/// How long the framework may take to print its API address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The framework's name with the masters.
const NAME: &str = "service-scale";

#[derive(Debug)]
enum Running {
    Process(Child),
    InProcess {
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), berth_service::serve::ServeError>>,
    },
}

/// The running framework.
#[derive(Debug)]
pub(crate) struct Framework {
    /// Its Marathon API.
    pub(crate) api: SocketAddr,
    running: Running,
}

impl Framework {
    /// Starts `berth service serve` of the binary `berth` against
    /// `masters`; its log (`BERTH_LOG=warn`, or `$SERVICE_SCALE_LOG`)
    /// goes to `service.log` in `dir`.
    pub(crate) fn process(berth: &Path, masters: &[String], dir: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(dir.join("service.log"))?;
        let mut child = Command::new(berth)
            .args(["service", "serve", "--no-router", "--name", NAME])
            .args(["--instance", "bench", "--listen", "127.0.0.1:0"])
            .args(["--master", &masters.join(",")])
            .env(
                "BERTH_LOG",
                std::env::var("SERVICE_SCALE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", berth.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            bail!("no stdout of the framework process");
        };
        // Its first lines name the API's address.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.trim().strip_prefix("api: http://") {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let mut framework = Framework {
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            running: Running::Process(child),
        };
        let addr = rx
            .recv_timeout(START_TIMEOUT)
            .context("the framework did not print its API address")?;
        framework.api = addr
            .parse()
            .with_context(|| format!("the framework's API address {addr:?}"))?;
        Ok(framework)
    }

    /// Runs the framework on this process's runtime.
    pub(crate) async fn in_process(masters: &[String]) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?;
        let config = berth_service::serve::ServeConfig {
            masters: masters.to_vec(),
            name: NAME.into(),
            holder: "bench".into(),
            listen: api,
            router: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(berth_service::serve::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        Ok(Framework {
            api,
            running: Running::InProcess {
                stop: Some(stop),
                task,
            },
        })
    }

    /// Its CPU time so far (this whole process's when in process).
    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        stats::cpu_time(self.pid())
    }

    /// Its resident set (this whole process's when in process).
    pub(crate) fn rss(&self) -> Option<Rss> {
        stats::rss(self.pid())
    }

    fn pid(&self) -> Option<u32> {
        match &self.running {
            Running::Process(c) => Some(c.id()),
            Running::InProcess { .. } => None,
        }
    }

    /// An error if it stopped.
    pub(crate) fn alive(&mut self) -> anyhow::Result<()> {
        match &mut self.running {
            Running::Process(c) => {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!("the framework exited: {status}");
                }
            }
            Running::InProcess { task, .. } => {
                if task.is_finished() {
                    bail!("the framework stopped");
                }
            }
        }
        Ok(())
    }

    /// Stops it.
    pub(crate) async fn stop(mut self) {
        match &mut self.running {
            Running::Process(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Running::InProcess { stop, task } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                match tokio::time::timeout(Duration::from_secs(10), task).await {
                    Ok(Ok(Err(e))) => eprintln!("the framework stopped with: {e}"),
                    Ok(_) => {}
                    Err(_) => eprintln!("the framework did not stop within 10 s"),
                }
            }
        }
    }
}

impl Drop for Framework {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Process(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Running::InProcess { task, .. } => task.abort(),
        }
    }
}
