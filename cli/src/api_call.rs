//! What the clients of the frameworks' HTTP APIs (`berth service`, `berth
//! job`) share: a request asked again while the framework answers from a
//! standby instance, and a definition file read with its content type.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::ci_client::{Reply, request_to};

/// How long a request answered "standby" (503 from an instance that does
/// not hold the lease, so nothing was done) is sent again: the lease's
/// time to live twice, since a standby takes over within one.
pub(crate) const STANDBY_PATIENCE: Duration = Duration::from_secs(20);

/// A framework's HTTP API.
pub(crate) struct Framework<'a> {
    /// Its base URL (`http://127.0.0.1:8080`).
    pub(crate) base: &'a str,
    /// The flag that sets it (`--service`), for errors.
    pub(crate) flag: &'a str,
    /// Its name in messages (`the service framework`).
    pub(crate) what: &'a str,
}

/// One request, sent again every 500 ms for up to [`STANDBY_PATIENCE`]
/// while `standby` says the reply came from a standby instance (said
/// once on stderr, with the reply's `why`).
pub(crate) async fn call(
    api: &Framework<'_>,
    method: &str,
    path: &str,
    body: Option<(&str, String)>,
    standby: impl Fn(&Reply) -> bool,
    why: impl Fn(&Reply) -> String,
) -> anyhow::Result<Reply> {
    let deadline = tokio::time::Instant::now() + STANDBY_PATIENCE;
    let mut told = false;
    loop {
        let reply = request_to(api.base, api.flag, api.what, method, path, body.clone()).await?;
        if !standby(&reply) || tokio::time::Instant::now() >= deadline {
            return Ok(reply);
        }
        if !told {
            eprintln!(
                "{} {}; waiting for an active instance of {}",
                api.base,
                why(&reply),
                api.what
            );
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A definition file's content type and text: YAML by its extension
/// (`.yaml`, `.yml`), or for stdin (`-`) when it does not start with `{`;
/// JSON otherwise.
pub(crate) fn definition(file: &Path) -> anyhow::Result<(&'static str, String)> {
    let stdin = file == Path::new("-");
    let text = if stdin {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("cannot read stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let yaml = if stdin {
        !text.trim_start().starts_with('{')
    } else {
        file.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
    };
    Ok((
        if yaml {
            "application/yaml"
        } else {
            "application/json"
        },
        text,
    ))
}
