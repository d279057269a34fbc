//! A framework under test (the service framework, the job framework): a
//! `berth <framework> serve` process, whose CPU and memory are measured
//! alone, or its `serve` function on this process's runtime.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::oneshot;

use crate::stats::{self, Rss};

/// How long a framework process may take to print its API address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What ends an in-process framework's `serve`.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug)]
enum Running {
    Process(Child),
    InProcess {
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), String>>,
    },
}

/// The running framework.
#[derive(Debug)]
pub struct Framework {
    /// Its HTTP API.
    pub api: SocketAddr,
    running: Running,
}

impl Framework {
    /// Starts `berth <args>` (a `serve` command that prints `api:
    /// http://ADDR` on stdout, as `berth service serve` and `berth jobs
    /// serve` do); its stderr goes to `log`, with `BERTH_LOG` set to
    /// `log_level`.
    ///
    /// # Errors
    /// When it does not start or does not name its API in time.
    pub fn process(
        berth: &Path,
        args: &[String],
        log_level: &str,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log)?;
        let mut child = Command::new(berth)
            .args(args)
            .env("BERTH_LOG", log_level)
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

    /// Runs `serve` (given a listener on loopback and what ends it) on
    /// this process's runtime.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn in_process<F, E>(
        serve: impl FnOnce(tokio::net::TcpListener, Shutdown) -> F,
    ) -> anyhow::Result<Self>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = serve(
            listener,
            Box::pin(async move {
                let _ = stopped.await;
            }),
        );
        let task = tokio::spawn(async move { serving.await.map_err(|e| e.to_string()) });
        Ok(Framework {
            api,
            running: Running::InProcess {
                stop: Some(stop),
                task,
            },
        })
    }

    /// Its CPU time so far (this whole process's when in process).
    pub fn cpu_time(&self) -> Option<Duration> {
        stats::cpu_time(self.pid())
    }

    /// Its resident set (this whole process's when in process).
    pub fn rss(&self) -> Option<Rss> {
        stats::rss(self.pid())
    }

    /// Its process id (`None` in process).
    pub fn pid(&self) -> Option<u32> {
        match &self.running {
            Running::Process(c) => Some(c.id()),
            Running::InProcess { .. } => None,
        }
    }

    /// An error if it stopped.
    ///
    /// # Errors
    /// When it stopped.
    pub fn alive(&mut self) -> anyhow::Result<()> {
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
    pub async fn stop(mut self) {
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
