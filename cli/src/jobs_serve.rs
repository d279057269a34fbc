//! `berth jobs serve`: the job framework as a daemon (its client commands
//! are `berth job …`).

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// Run the job framework (Metronome-compatible batch and cron jobs).
    Serve(JobsServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct JobsServeArgs {
    #[command(flatten)]
    masters: crate::daemons::MasterList,
    /// Where the API is served. Anything but loopback needs --insecure.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The framework's name with the masters.
    #[arg(long, default_value = "jobs")]
    name: String,
    /// This instance's name among the framework's instances (one is
    /// active, the others wait); default: the host name and process id.
    #[arg(long)]
    instance: Option<String>,
    #[command(flatten)]
    exposure: crate::daemons::Exposure,
}

impl JobsServeArgs {
    /// Its API, and whether `--insecure` was given.
    pub(crate) fn apis(&self) -> (Vec<crate::daemons::Api<'_>>, bool) {
        (
            vec![crate::daemons::Api {
                name: "the job API",
                risk: "run any job (any command, on the cluster's agents)",
                listen: self.listen,
                advertise: None,
            }],
            self.exposure.insecure,
        )
    }
}

/// Runs a `berth jobs` command.
pub(crate) async fn run(command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::Serve(args) => serve(args).await,
    }
}

/// Runs the job framework until SIGTERM or Ctrl-C.
async fn serve(args: JobsServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let holder = args.instance.unwrap_or_else(crate::service::instance_name);
    let config = berth_jobs::serve::ServeConfig {
        masters: args.masters.master,
        name: args.name,
        holder,
        listen: local,
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "berth jobs serve is running\n  api: http://{local}   (export BERTH_JOBS=http://{local})"
        );
        let _ = out.flush();
    }
    berth_jobs::serve::serve(config, listener, crate::daemons::shutdown_signal()).await?;
    Ok(())
}
