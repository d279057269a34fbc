//! Marathon fields berth does not act on.
//!
//! - **Read-only** fields that Marathon's GET /v2/apps adds ([`READ_ONLY`]:
//!   `version`, `versionInfo`, `tasksStaged`, `tasks`, …) are ignored on
//!   input, as Marathon ignores them, so that what a Marathon user
//!   exported deploys. (A PUT whose body is `{"version": …}` is Marathon's
//!   rollback request; that is the API's concern, not the definition's.)
//! - **Unsupported** fields are accepted only with Marathon's default value
//!   (`"requirePorts": false`, `"gpus": 0`, `"fetch": []`, `null`, …);
//!   any other value is refused with the field's path and "not supported
//!   by berth". Nothing that would change behaviour is dropped.

use serde_json::Value;

use super::super::read::{Ctx, Obj, kind};

/// Read-only fields of Marathon's app JSON, ignored on input.
pub const READ_ONLY: &[&str] = &[
    "version",
    "versionInfo",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
    "tasksStats",
    "readinessCheckResults",
];

/// `null`, `[]` or `{}`.
pub(super) fn is_empty_or_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// `null` or `false`.
pub(super) fn is_false(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false))
}

/// `null` or the number zero.
fn is_zero(v: &Value) -> bool {
    v.is_null() || v.as_f64() == Some(0.0)
}

/// `null`, `""` or `"//cmd"` (Marathon's default executor).
fn is_default_executor(v: &Value) -> bool {
    matches!(v, Value::Null) || matches!(v.as_str(), Some("" | "//cmd"))
}

/// Refuses `key` of `o` unless `is_default` holds for its value.
pub(super) fn refuse_unless(
    o: &mut Obj<'_>,
    ctx: &mut Ctx,
    key: &'static str,
    is_default: fn(&Value) -> bool,
) {
    if let Some((v, p)) = o.get_raw(key)
        && !is_default(v)
    {
        ctx.err(
            &p,
            format!(
                "{key} is not supported by berth (only its default is accepted; got {})",
                kind(v)
            ),
        );
    }
}

/// The top-level Marathon fields berth ignores or refuses.
pub(super) fn top_level(o: &mut Obj<'_>, ctx: &mut Ctx) {
    for key in READ_ONLY {
        let _ = o.get_raw(key);
    }
    refuse_unless(o, ctx, "residency", Value::is_null);
    refuse_unless(o, ctx, "secrets", is_empty_or_null);
    refuse_unless(o, ctx, "fetch", is_empty_or_null);
    refuse_unless(o, ctx, "uris", is_empty_or_null);
    refuse_unless(o, ctx, "storeUrls", is_empty_or_null);
    refuse_unless(o, ctx, "ipAddress", Value::is_null);
    refuse_unless(o, ctx, "gpus", is_zero);
    refuse_unless(o, ctx, "executor", is_default_executor);
    refuse_unless(o, ctx, "executorResources", Value::is_null);
    refuse_unless(o, ctx, "check", Value::is_null);
    refuse_unless(o, ctx, "resourceLimits", is_empty_or_null);
    refuse_unless(o, ctx, "tty", is_false);
}
