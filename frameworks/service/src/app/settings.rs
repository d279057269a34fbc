//! berth's own deployment settings: the top-level `deployment` key, which
//! Marathon does not use.
//!
//! ```json
//! "deployment": {
//!   "strategy": "rolling",          // or "blueGreen" or "canary"; default "rolling"
//!   "minHealthySeconds": 0,         // an instance counts once healthy (and ready) this long; default 0
//!   "progressDeadlineSeconds": 600, // some new instance must count within this; 0 = no deadline; default 600
//!   "autoRevert": true,             // at the deadline, go back to the last stable version; default true
//!   "blueGreen": {                  // only with "strategy": "blueGreen"
//!     "previewPort": null,          // serve the new version here and wait for promote; default none
//!     "keepOldSeconds": 300         // keep the old version after the switch; default 300
//!   },
//!   "canary": {                     // only with "strategy": "canary"
//!     "steps": [{"weight": 10}, {"pause": 60}, {"weight": 50}, {"pause": 60}, {"weight": 100}],
//!     "analysis": {
//!       "intervalSeconds": 30,          // default 30, at least 1
//!       "minRequests": 20,              // no verdict on fewer canary requests; default 20
//!       "maxErrorRate": 0.05,           // in [0, 1]; default 0.05
//!       "maxP99LatencyMs": null,        // default none
//!       "maxErrorRateOverStable": 2.0,  // canary rate > stable rate × this (and > stable + 0.01) fails; default 2; null = off
//!       "maxP99OverStable": null        // canary p99 > stable p99 × this fails; default none
//!     }
//!   }
//! }
//! ```
//!
//! Canary steps: `{"weight": w}` with `w` in 1..=100, strictly increasing
//! from step to step, the last step `{"weight": 100}`; `{"pause": s}`
//! waits `s` seconds, `{"pause": null}` waits for `promote`. At most 32
//! steps. The default steps are the ones shown above.
//!
//! `upgradeStrategy` applies to rolling deployments only; with
//! `blueGreen` or `canary` it must be absent or Marathon's default.

use std::time::Duration;

use berth_scheduler_core::error::quoted;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Fraction;
use super::parse::{MAX_SECONDS, field};
use super::read::{self, Ctx, Obj, item};

/// A ratio of at least 1, in milli-units (`2.0` is `2000`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ratio(pub u32);

impl Ratio {
    /// As `f64`, for rendering.
    pub fn to_f64(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

/// Most canary steps.
pub const MAX_STEPS: usize = 32;

/// `deployment`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentSettings {
    /// `strategy`, with its own settings.
    pub strategy: Strategy,
    /// `minHealthySeconds`.
    pub min_healthy: Duration,
    /// `progressDeadlineSeconds`; `None` for 0 (no deadline).
    pub progress_deadline: Option<Duration>,
    /// `autoRevert`.
    pub auto_revert: bool,
}

impl Default for DeploymentSettings {
    fn default() -> Self {
        DeploymentSettings {
            strategy: Strategy::Rolling,
            min_healthy: Duration::ZERO,
            progress_deadline: Some(Duration::from_secs(600)),
            auto_revert: true,
        }
    }
}

/// How a new version replaces the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// `rolling`, after `upgradeStrategy`.
    Rolling,
    /// `blueGreen`.
    BlueGreen(BlueGreen),
    /// `canary`.
    Canary(Canary),
}

impl Strategy {
    /// The name in the definition.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen(_) => "blueGreen",
            Strategy::Canary(_) => "canary",
        }
    }
}

/// `blueGreen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlueGreen {
    /// `previewPort`.
    pub preview_port: Option<u16>,
    /// `keepOldSeconds`.
    pub keep_old: Duration,
}

impl Default for BlueGreen {
    fn default() -> Self {
        BlueGreen {
            preview_port: None,
            keep_old: Duration::from_secs(300),
        }
    }
}

/// One canary step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanaryStep {
    /// Send this percentage of requests to the new version.
    Weight(u8),
    /// Wait this long, or (`None`) until promoted.
    Pause(Option<Duration>),
}

/// `canary`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    /// `steps`.
    pub steps: Vec<CanaryStep>,
    /// `analysis`.
    pub analysis: Analysis,
}

impl Default for Canary {
    fn default() -> Self {
        let pause = CanaryStep::Pause(Some(Duration::from_secs(60)));
        Canary {
            steps: vec![
                CanaryStep::Weight(10),
                pause,
                CanaryStep::Weight(50),
                pause,
                CanaryStep::Weight(100),
            ],
            analysis: Analysis::default(),
        }
    }
}

/// `analysis`: when a canary is worse than allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// `intervalSeconds`.
    pub interval: Duration,
    /// `minRequests`.
    pub min_requests: u64,
    /// `maxErrorRate`.
    pub max_error_rate: Fraction,
    /// `maxP99LatencyMs`.
    pub max_p99_latency: Option<Duration>,
    /// `maxErrorRateOverStable`.
    pub max_error_rate_over_stable: Option<Ratio>,
    /// `maxP99OverStable`.
    pub max_p99_over_stable: Option<Ratio>,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval: Duration::from_secs(30),
            min_requests: 20,
            max_error_rate: Fraction::from_ppm(50_000),
            max_p99_latency: None,
            max_error_rate_over_stable: Some(Ratio(2000)),
            max_p99_over_stable: None,
        }
    }
}

fn secs(ctx: &mut Ctx, v: &Value, p: &str) -> Option<Duration> {
    read::secs(ctx, v, p, MAX_SECONDS)
}

/// `deployment`.
pub(super) fn parse(ctx: &mut Ctx, v: &Value, path: &str) -> Option<DeploymentSettings> {
    let mut o = Obj::new(ctx, v, path)?;
    let d = DeploymentSettings::default();
    let name = field(&mut o, ctx, "strategy", read::string);
    let min_healthy = field(&mut o, ctx, "minHealthySeconds", secs).unwrap_or(d.min_healthy);
    let progress_deadline = match field(&mut o, ctx, "progressDeadlineSeconds", secs) {
        None => d.progress_deadline,
        Some(s) if s.is_zero() => None,
        Some(s) => Some(s),
    };
    let auto_revert = field(&mut o, ctx, "autoRevert", read::boolean).unwrap_or(true);
    let bg = o.get("blueGreen");
    let canary = o.get("canary");
    let strategy = match name.as_deref() {
        None | Some("rolling") => Strategy::Rolling,
        Some("blueGreen") => Strategy::BlueGreen(
            bg.as_ref()
                .and_then(|(v, p)| blue_green(ctx, v, p))
                .unwrap_or_default(),
        ),
        Some("canary") => Strategy::Canary(
            canary
                .as_ref()
                .and_then(|(v, p)| parse_canary(ctx, v, p))
                .unwrap_or_default(),
        ),
        Some(other) => {
            ctx.err(
                &format!("{}/strategy", o.path()),
                format!("{} is not rolling, blueGreen or canary", quoted(other)),
            );
            Strategy::Rolling
        }
    };
    for (given, key) in [(&bg, "blueGreen"), (&canary, "canary")] {
        if let Some((_, p)) = given
            && strategy.name() != key
            && name
                .as_deref()
                .is_none_or(|n| ["rolling", "blueGreen", "canary"].contains(&n))
        {
            ctx.err(p, format!("applies only with \"strategy\": \"{key}\""));
        }
    }
    o.finish(ctx);
    Some(DeploymentSettings {
        strategy,
        min_healthy,
        progress_deadline,
        auto_revert,
    })
}

fn blue_green(ctx: &mut Ctx, v: &Value, path: &str) -> Option<BlueGreen> {
    let mut o = Obj::new(ctx, v, path)?;
    let d = BlueGreen::default();
    let b = BlueGreen {
        preview_port: field(&mut o, ctx, "previewPort", |c, v, p| {
            read::int(c, v, p, 1, 65535).and_then(|x| u16::try_from(x).ok())
        }),
        keep_old: field(&mut o, ctx, "keepOldSeconds", secs).unwrap_or(d.keep_old),
    };
    o.finish(ctx);
    Some(b)
}

fn parse_canary(ctx: &mut Ctx, v: &Value, path: &str) -> Option<Canary> {
    let mut o = Obj::new(ctx, v, path)?;
    let d = Canary::default();
    let c = Canary {
        steps: field(&mut o, ctx, "steps", steps).unwrap_or(d.steps),
        analysis: field(&mut o, ctx, "analysis", analysis).unwrap_or(d.analysis),
    };
    o.finish(ctx);
    Some(c)
}

fn steps(ctx: &mut Ctx, v: &Value, path: &str) -> Option<Vec<CanaryStep>> {
    let items = read::array(ctx, v, path, MAX_STEPS)?;
    let before = ctx.errors.len();
    let mut out = Vec::new();
    let mut last_weight = 0u8;
    for (i, it) in items.iter().enumerate() {
        let p = item(path, i);
        let Some(mut s) = Obj::new(ctx, it, &p) else {
            continue;
        };
        let weight = s.get_raw("weight");
        let pause = s.get_raw("pause");
        s.finish(ctx);
        match (weight, pause) {
            (Some((w, wp)), None) => {
                let Some(w) = read::int(ctx, w, &wp, 1, 100).and_then(|w| u8::try_from(w).ok())
                else {
                    continue;
                };
                if w <= last_weight {
                    ctx.err(
                        &wp,
                        format!("{w} must be greater than the weight before it ({last_weight})"),
                    );
                }
                last_weight = last_weight.max(w);
                out.push(CanaryStep::Weight(w));
            }
            (None, Some((Value::Null, _))) => out.push(CanaryStep::Pause(None)),
            (None, Some((s, sp))) => {
                if let Some(d) = secs(ctx, s, &sp) {
                    out.push(CanaryStep::Pause(Some(d)));
                }
            }
            _ => ctx.err(
                &p,
                "a step is {\"weight\": 1..100} or {\"pause\": seconds or null}",
            ),
        }
    }
    if ctx.errors.len() != before {
        return None;
    }
    if out.last() != Some(&CanaryStep::Weight(100)) {
        ctx.err(path, "the last step must be {\"weight\": 100}");
        return None;
    }
    Some(out)
}

fn ratio(ctx: &mut Ctx, v: &Value, p: &str) -> Option<Ratio> {
    let f = read::number(ctx, v, p)?;
    if !(1.0..=1000.0).contains(&f) {
        ctx.err(p, format!("{f} is not in [1, 1000]"));
        return None;
    }
    Some(Ratio((f * 1000.0).round() as u32))
}

/// An optional field where `null` turns a default off: absent gives
/// `default`, `null` gives `None`.
fn nullable<T>(
    o: &mut Obj<'_>,
    ctx: &mut Ctx,
    key: &'static str,
    default: Option<T>,
    f: impl FnOnce(&mut Ctx, &Value, &str) -> Option<T>,
) -> Option<T> {
    match o.get_raw(key) {
        None => default,
        Some((Value::Null, _)) => None,
        Some((v, p)) => f(ctx, v, &p),
    }
}

fn analysis(ctx: &mut Ctx, v: &Value, path: &str) -> Option<Analysis> {
    let mut o = Obj::new(ctx, v, path)?;
    let d = Analysis::default();
    let a = Analysis {
        interval: field(&mut o, ctx, "intervalSeconds", |c, v, p| {
            read::int(c, v, p, 1, MAX_SECONDS).map(Duration::from_secs)
        })
        .unwrap_or(d.interval),
        min_requests: field(&mut o, ctx, "minRequests", |c, v, p| {
            read::int(c, v, p, 0, 1_000_000_000)
        })
        .unwrap_or(d.min_requests),
        max_error_rate: field(&mut o, ctx, "maxErrorRate", read::fraction)
            .unwrap_or(d.max_error_rate),
        max_p99_latency: nullable(
            &mut o,
            ctx,
            "maxP99LatencyMs",
            d.max_p99_latency,
            |c, v, p| read::int(c, v, p, 1, 3_600_000).map(Duration::from_millis),
        ),
        max_error_rate_over_stable: nullable(
            &mut o,
            ctx,
            "maxErrorRateOverStable",
            d.max_error_rate_over_stable,
            ratio,
        ),
        max_p99_over_stable: nullable(
            &mut o,
            ctx,
            "maxP99OverStable",
            d.max_p99_over_stable,
            ratio,
        ),
    };
    o.finish(ctx);
    Some(a)
}
