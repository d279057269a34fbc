//! `berth router`: the standalone router, following the service
//! framework's published route table (see
//! `berth_service::serve::standalone`).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::Args;

/// Options of `berth router`.
#[derive(Debug, Args)]
pub(crate) struct RouterArgs {
    #[command(flatten)]
    masters: crate::daemons::MasterList,
    /// The service framework's name (its key-value namespace).
    #[arg(long, default_value = "service")]
    name: String,
    /// This router's name (the key of its statistics); default: the host
    /// name and process id.
    #[arg(long)]
    instance: Option<String>,
    /// The address service ports are opened on. Anything but loopback
    /// needs --insecure.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Where the router serves /metrics (Prometheus), /healthz and
    /// /v1/routes. Anything but loopback needs --insecure.
    #[arg(long, default_value = "127.0.0.1:9091")]
    admin: SocketAddr,
    #[command(flatten)]
    exposure: crate::daemons::Exposure,
}

impl RouterArgs {
    /// Its APIs, and whether `--insecure` was given.
    pub(crate) fn apis(&self) -> (Vec<crate::daemons::Api<'_>>, bool) {
        (
            vec![
                crate::daemons::Api {
                    name: "the router's admin endpoint",
                    risk: "read the routes and statistics of every app",
                    listen: self.admin,
                    advertise: None,
                },
                crate::daemons::Api {
                    name: "the router's service ports",
                    risk: "reach every app's instances",
                    listen: SocketAddr::new(self.bind, 0),
                    advertise: None,
                },
            ],
            self.exposure.insecure,
        )
    }
}

/// Runs the router until SIGTERM or Ctrl-C.
pub(crate) async fn router(args: RouterArgs) -> anyhow::Result<ExitCode> {
    let name = args.instance.unwrap_or_else(crate::service::instance_name);
    let config = berth_service::serve::standalone::StandaloneConfig {
        masters: args.masters.master,
        namespace: args.name,
        name: name.clone(),
        router: crate::service::router_config(args.bind, args.admin),
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "berth router {name} is running\n  service ports on {}, admin http://{}",
            args.bind, args.admin
        );
        let _ = out.flush();
    }
    berth_service::serve::standalone::run(config, crate::daemons::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
