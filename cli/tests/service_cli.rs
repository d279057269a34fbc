//! `berth service`'s client commands through the real binary against one
//! `berth dev` (process instances, no Docker): each command's effect is
//! read back from the framework. `plan` shows a change and makes none,
//! `scale` changes the instance count, `restart` replaces every instance,
//! `update --wait` exits 0 once deployed, `rollback` returns to a kept
//! version (and refuses an unknown one at `/version`, changing nothing),
//! `deployments` lists a canary paused for `promote`, `promote` lets it
//! finish, and `deployments cancel` drops another one, the app back at its
//! version before with its instance. `list` and `deployments` are read as
//! tables too, and `show` as text.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

const APP: &str = "/cli/app";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `berth ARGS` that must succeed.
fn ok(dev: &berth_tests::BerthDev, args: &[&str]) -> Output {
    let out = dev.berth(args);
    assert!(
        out.status.success(),
        "berth {args:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// `berth ARGS --json`, parsed.
fn json_of(dev: &berth_tests::BerthDev, args: &[&str]) -> Value {
    let out = ok(dev, &[args, &["--json"]].concat());
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The app's definition at `cmd` with `instances`, plus `extra` fields,
/// written to `dir/name.json`; its path.
fn write_app(dir: &Path, name: &str, cmd: &str, instances: u32, extra: Value) -> String {
    let mut app = json!({"id": APP, "cmd": cmd, "cpus": 0.05, "mem": 16, "instances": instances});
    if let (Value::Object(a), Value::Object(e)) = (&mut app, extra) {
        a.extend(e);
    }
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, app.to_string()).expect("write the app");
    path.display().to_string()
}

/// The app as `berth service show --json` has it.
fn show(dev: &berth_tests::BerthDev) -> Value {
    json_of(dev, &["service", "show", APP])
}

/// What a change would change of the app: its definition's version, its
/// kept versions, command and instance count.
fn definition(dev: &berth_tests::BerthDev) -> Value {
    let app = show(dev);
    json!([
        app["version"],
        app["versions"],
        app["cmd"],
        app["instances"]
    ])
}

/// The app's running instances' ids.
fn instance_ids(dev: &berth_tests::BerthDev) -> BTreeSet<String> {
    let tasks = json_of(dev, &["service", "instances", APP]);
    tasks["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect()
}

/// Polls `f` every 200 ms until it gives a value, for at most `limit`.
fn until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_service_command_does_what_it_says() {
    let mut dev =
        berth_tests::BerthDev::start(BERTH, "cpus:2;mem:1024;disk:1000;ports:[31000-31100]", None);
    let dir = tempfile::tempdir().expect("tempdir");
    let wait = ["--wait", "--timeout", "60"];

    let v1 = write_app(dir.path(), "v1", "sleep 100001", 1, json!({}));
    ok(&dev, &[&["service", "add", &v1][..], &wait].concat());
    assert_eq!(instance_ids(&dev).len(), 1);

    // plan: the change shown, nothing made.
    let v2 = write_app(dir.path(), "v2", "sleep 100002", 2, json!({}));
    let before = definition(&dev);
    let plan = ok(&dev, &["service", "plan", &v2]);
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("the plan is JSON");
    assert_eq!(plan["effect"], "restart", "{plan}");
    let changed: Vec<&str> = plan["changedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        changed.contains(&"cmd") && changed.contains(&"instances"),
        "{plan}"
    );
    assert_eq!(definition(&dev), before, "plan changed the app");
    assert_eq!(
        json_of(&dev, &["service", "deployments"]),
        json!([]),
        "plan started a deployment"
    );

    // scale: the instance count changes, the instance there stays.
    let first = instance_ids(&dev);
    ok(&dev, &[&["service", "scale", APP, "3"][..], &wait].concat());
    let scaled = instance_ids(&dev);
    assert_eq!(scaled.len(), 3, "{scaled:?}");
    assert!(first.is_subset(&scaled), "scaling replaced {first:?}");
    assert_eq!(show(&dev)["instances"], 3);

    // list as a table.
    let out = ok(&dev, &["service", "list"]);
    let table = text(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["APP", "RUNNING", "HEALTHY", "VERSION", "DEPLOYMENT"],
        "{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let listed = json_of(&dev, &["service", "list"]);
    let healthy = listed["apps"][0]["tasksHealthy"].to_string();
    let version = show(&dev)["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        row,
        [APP, "3/3", healthy.as_str(), version.as_str(), "-"],
        "{table}"
    );

    // show as text: the app's main fields, then its kept versions.
    let app = show(&dev);
    let out = ok(&dev, &["service", "show", APP]);
    let shown = text(&out.stdout);
    let lines: Vec<&str> = shown.lines().map(str::trim_end).collect();
    let versions: Vec<&str> = app["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(versions.len(), 2, "{app}");
    assert_eq!(
        lines,
        [
            format!("ID          {APP}"),
            format!("VERSION     {}", version),
            "RUNS        sleep 100001".to_owned(),
            format!("INSTANCES   3 (3 running, {healthy} healthy)"),
            "RESOURCES   cpus 0.05, mem 16 MB".to_owned(),
            "STRATEGY    rolling".to_owned(),
            "DEPLOYMENT  -".to_owned(),
            format!("VERSIONS    {}", versions[0]),
            format!("            {}", versions[1]),
        ],
        "{shown}"
    );

    // restart: every instance replaced, as many as before.
    ok(&dev, &[&["service", "restart", APP][..], &wait].concat());
    let restarted = instance_ids(&dev);
    assert_eq!(restarted.len(), 3, "{restarted:?}");
    assert!(
        restarted.is_disjoint(&scaled),
        "{scaled:?} -> {restarted:?}"
    );

    // update --wait: exit 0 once the new definition runs.
    let out = ok(&dev, &[&["service", "update", &v2][..], &wait].concat());
    assert!(
        text(&out.stderr).contains("succeeded"),
        "{}",
        text(&out.stderr)
    );
    let app = show(&dev);
    assert_eq!(
        (app["cmd"].clone(), app["instances"].clone()),
        (json!("sleep 100002"), json!(2))
    );
    assert_eq!(instance_ids(&dev).len(), 2);

    // rollback to an unknown version: refused at /version, nothing changes.
    let before = show(&dev);
    let kept = definition(&dev);
    let out = dev.berth(&["service", "rollback", APP, "2001-01-01T00:00:00.000Z"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("/version: "),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(definition(&dev), kept, "a refused rollback changed the app");
    assert_eq!(json_of(&dev, &["service", "deployments"]), json!([]));

    // rollback to the first version: its definition again, as a new version.
    let first_version = before["versions"]
        .as_array()
        .and_then(|v| v.last())
        .and_then(Value::as_str)
        .expect("the first version")
        .to_owned();
    ok(
        &dev,
        &[&["service", "rollback", APP, &first_version][..], &wait].concat(),
    );
    let app = show(&dev);
    assert_eq!(
        (app["cmd"].clone(), app["instances"].clone()),
        (json!("sleep 100001"), json!(1))
    );
    assert_ne!(
        app["version"],
        json!(first_version),
        "a rollback is a new version"
    );
    assert_eq!(instance_ids(&dev).len(), 1);

    // A canary that waits for promote: listed by `deployments` while it
    // waits, finished by `promote`.
    let canary = write_app(
        dir.path(),
        "canary",
        "sleep 100003",
        1,
        json!({"deployment": {"strategy": "canary", "canary": {
            "steps": [{"weight": 50}, {"pause": null}, {"weight": 100}]}}}),
    );
    let out = ok(&dev, &["service", "update", &canary]);
    let dep = text(&out.stdout)
        .strip_prefix("deployment ")
        .map(|d| d.trim().to_owned())
        .unwrap_or_else(|| panic!("no deployment: {}", text(&out.stdout)));
    let listed = until(Duration::from_secs(60), "the canary paused", || {
        let d = json_of(&dev, &["service", "deployments"]);
        d.as_array()
            .and_then(|d| d.first())
            .filter(|d| d["berth"]["state"] == "Paused")
            .cloned()
    });
    assert_eq!(listed["id"], json!(dep), "{listed}");
    let out = ok(&dev, &["service", "deployments"]);
    let table = text(&out.stdout);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        (
            row.first().copied(),
            row.get(1).copied(),
            row.get(2).copied(),
            row.last().copied()
        ),
        (
            Some(dep.as_str()),
            Some(APP),
            Some("canary"),
            Some("Paused")
        ),
        "{table}"
    );
    ok(&dev, &["service", "promote", APP]);
    until(Duration::from_secs(60), "the canary finished", || {
        (json_of(&dev, &["service", "deployments"]) == json!([])).then_some(())
    });
    assert_eq!(show(&dev)["cmd"], "sleep 100003");
    let running = until(Duration::from_secs(20), "one canary instance", || {
        let ids = instance_ids(&dev);
        (ids.len() == 1).then_some(ids)
    });
    assert_eq!(running.len(), 1);

    // `deployments cancel APP` on a canary paused for promote: the app is
    // back at the exact version it had, on the same instance.
    let before = show(&dev);
    let next = write_app(
        dir.path(),
        "canary2",
        "sleep 100004",
        1,
        json!({"deployment": {"strategy": "canary", "canary": {
            "steps": [{"weight": 50}, {"pause": null}, {"weight": 100}]}}}),
    );
    ok(&dev, &["service", "update", &next]);
    until(Duration::from_secs(60), "the second canary paused", || {
        let d = json_of(&dev, &["service", "deployments"]);
        (d[0]["berth"]["state"] == "Paused").then_some(())
    });
    assert_eq!(show(&dev)["cmd"], "sleep 100004");
    assert_eq!(instance_ids(&dev).len(), 2, "the old instance and a canary");
    let out = ok(
        &dev,
        &[&["service", "deployments", "cancel", APP][..], &wait].concat(),
    );
    let said = text(&out.stderr);
    assert!(
        said.contains("cancelled") && said.contains("succeeded"),
        "{said}"
    );
    let after = show(&dev);
    assert_eq!(
        (&after["version"], &after["cmd"]),
        (&before["version"], &json!("sleep 100003")),
        "not the version before the canary"
    );
    until(Duration::from_secs(20), "only the old instance", || {
        (instance_ids(&dev) == running).then_some(())
    });
    assert_eq!(json_of(&dev, &["service", "deployments"]), json!([]));
    // Nothing to cancel now.
    let out = dev.berth(&["service", "deployments", "cancel", APP]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no running deployment"),
        "{}",
        text(&out.stderr)
    );

    ok(&dev, &["service", "remove", APP]);
    assert!(dev.terminate().success());
}
