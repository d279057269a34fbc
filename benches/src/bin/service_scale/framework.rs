//! The service framework under test ([`Framework`]): a `berth service
//! serve --no-router` process (its CPU and memory measured alone) or,
//! without `--berth`, the same `serve` function on this process's runtime.

use std::path::Path;

pub(crate) use berth_benches::framework::Framework;

/// The framework's name with the masters.
const NAME: &str = "service-scale";

/// Starts `berth service serve` of the binary `berth` against `masters`;
/// its log (`BERTH_LOG=warn`, or `$SERVICE_SCALE_LOG`) goes to
/// `service.log` in `dir`.
pub(crate) fn process(berth: &Path, masters: &[String], dir: &Path) -> anyhow::Result<Framework> {
    let args: Vec<String> = [
        "service",
        "serve",
        "--no-router",
        "--name",
        NAME,
        "--instance",
        "bench",
        "--listen",
        "127.0.0.1:0",
        "--master",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([masters.join(",")])
    .collect();
    let level = std::env::var("SERVICE_SCALE_LOG").unwrap_or_else(|_| "warn".into());
    Framework::process(berth, &args, &level, &dir.join("service.log"))
}

/// Runs the framework on this process's runtime.
pub(crate) async fn in_process(masters: &[String]) -> anyhow::Result<Framework> {
    let masters = masters.to_vec();
    Framework::in_process(move |listener, shutdown| {
        let config = berth_service::serve::ServeConfig {
            masters,
            name: NAME.into(),
            holder: "bench".into(),
            listen: listener
                .local_addr()
                .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into()),
            router: None,
        };
        berth_service::serve::serve(config, listener, shutdown)
    })
    .await
}
