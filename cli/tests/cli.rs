//! Tests of the real `berth` binary: `berth dev` as a child process, then
//! admin commands and `berth run` against it.
//!
//! Covered: `berth run` and its exit codes, admin commands with ids as
//! unique prefixes, task times, output into a closed pipe, malformed
//! arguments, a `berth run` that fits nowhere shown by `berth task pending`
//! (with a drained agent), `berth framework teardown` of an SDK framework,
//! daemons refused beyond loopback and warned with `--insecure`, every
//! `--help`, and a SIGKILLed master losing no acknowledged state.

use berth_tests::{ChildProcess, free_port};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// `berth dev` as a child process (killed on drop), with this file's
/// helpers.
struct Dev(berth_tests::BerthDev);

impl std::ops::Deref for Dev {
    type Target = berth_tests::BerthDev;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Dev {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Dev {
    fn start() -> Self {
        Dev(berth_tests::BerthDev::start(
            BERTH,
            "cpus:2;mem:1024;disk:1000;ports:[31000-31100]",
            None,
        ))
    }

    /// `berth ARGS` whose stdout is a pipe already closed by its reader
    /// (as in `berth ARGS | head -0`): it writes only after a round trip
    /// to the master, so every write meets a closed pipe.
    fn berth_into_closed_pipe(&self, args: &[&str]) -> Output {
        let mut child = Command::new(BERTH)
            .args(args)
            .env("BERTH_MASTER", &self.master)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth runs");
        drop(child.stdout.take());
        child.wait_with_output().expect("berth ends")
    }

    /// `berth ARGS --json`, parsed.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.berth(&[args, &["--json"]].concat());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The column names of a table's first line.
fn header(table: &str) -> Vec<&str> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

#[test]
fn dev_runs_a_command_and_reports_its_exit_code() {
    let mut dev = Dev::start();

    let out = dev.berth(&["run", "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(text(&out.stdout), "hi\n", "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));

    let out = dev.berth(&["run", "--", "echo", "hello"]);
    assert_eq!(text(&out.stdout), "hello\n");
    assert!(out.status.success());

    let out = dev.berth(&["run", "--", "sh", "-c", "echo to-stderr >&2"]);
    assert_eq!(
        text(&out.stderr)
            .lines()
            .filter(|l| *l == "to-stderr")
            .count(),
        1,
        "{}",
        text(&out.stderr)
    );

    // The admin commands see the agent, with its address, and the finished
    // tasks. `--master` may come before the subcommand.
    let out = Command::new(BERTH)
        .args(["--master", &dev.master, "node", "list"])
        .env_remove("BERTH_MASTER")
        .output()
        .expect("berth runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let nodes = text(&out.stdout);
    assert_eq!(
        header(&nodes),
        [
            "ID", "HOSTNAME", "ADDRESS", "STATE", "TASKS", "USED", "TOTAL"
        ]
    );
    let agent = &dev.json(&["node", "list"])[0];
    let address = agent["address"].as_str().expect("the agent's address");
    assert!(address.starts_with("127.0.0.1:"), "{agent}");
    let row = nodes.lines().nth(1).expect("the agent's row");
    assert!(
        row.contains(address) && row.contains("ACTIVE") && row.contains("cpus:2;mem:1024"),
        "{nodes}"
    );
    let out = Command::new(BERTH)
        .args(["--json", "--master", &dev.master, "node", "list"])
        .env_remove("BERTH_MASTER")
        .output()
        .expect("berth runs");
    let before: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(before[0]["id"], agent["id"]);

    let out = dev.berth(&["task", "list", "--all"]);
    let tasks = text(&out.stdout);
    assert!(
        tasks.contains("FINISHED") && tasks.contains("FAILED"),
        "{tasks}"
    );
    assert_eq!(
        header(&tasks),
        [
            "ID",
            "FRAMEWORK",
            "AGENT",
            "STATE",
            "EXIT",
            "STARTED",
            "DURATION",
            "RESOURCES",
            "PORTS"
        ]
    );
    assert!(
        tasks.lines().skip(1).all(|l| l.contains("s ago ")),
        "every task ran: {tasks}"
    );
    // Their times: launched, first running, ended, and how long they ran.
    for task in dev
        .json(&["task", "list", "--all"])
        .as_array()
        .expect("tasks")
    {
        let time = |key: &str| {
            task[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key}: {task}"))
        };
        let (launched, running, ended) =
            (time("launched_at"), time("running_at"), time("ended_at"));
        assert!(launched > 1.6e9, "{task}");
        // The agent's clock (running, ended) is this machine's too.
        assert!(launched - 1.0 <= running && running <= ended, "{task}");
        assert!(ended < launched + 60.0, "{task}");
        let duration = task["duration_seconds"].as_f64().expect("duration");
        assert!((duration - (ended - running)).abs() < 1e-6, "{task}");
    }
    let failed_id = tasks
        .lines()
        .find(|l| l.contains("FAILED"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a failed task row")
        .to_string();
    let out = dev.berth(&["task", "log", &failed_id]);
    assert_eq!(text(&out.stdout), "hi\n");
    // A unique prefix of an id names the task; an ambiguous one lists the
    // candidates; an unknown one says so.
    let out = dev.berth(&["task", "log", &failed_id[..failed_id.len() - 1]]);
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    let out = dev.berth(&["task", "log", "run-"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("\"run-\" is the start of 3 task ids: ") && err.contains(&failed_id),
        "{err}"
    );
    let out = dev.berth(&["task", "log", "nosuchtask"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no task \"nosuchtask\""),
        "{}",
        text(&out.stderr)
    );
    let out = dev.berth(&["task", "log", &failed_id, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--json does not apply"));

    // A reader that goes away (`| head`) ends a command quietly with 0.
    for args in [
        &["state", "--json"][..],
        &["state"],
        &["task", "list", "--all"],
        &["task", "list", "--all", "--json"],
        &["node", "list"],
        &["framework", "list", "--json"],
        &["role", "list"],
        &["master", "members"],
        &["task", "log", &failed_id],
    ] {
        let out = dev.berth_into_closed_pipe(args);
        assert_eq!(
            (out.status.code(), text(&out.stderr)),
            (Some(0), String::new()),
            "{args:?}"
        );
    }

    // A secret reaches the command and is masked in its output: in what
    // `berth run` streams and in the sandbox the agent serves.
    let secret = "hunter2-secret-99";
    let out = dev.berth(&[
        "run",
        "--name",
        "secret",
        "--secret",
        &format!("TOKEN={secret}"),
        "--",
        "sh",
        "-c",
        "echo \"token $TOKEN ${#TOKEN}\"; echo \"err $TOKEN\" >&2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "token [MASKED] 17\n");
    assert!(
        text(&out.stderr).contains("err [MASKED]"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains(secret));
    let tasks = text(&dev.berth(&["task", "list", "--all"]).stdout);
    let secret_id = tasks
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|id| id.starts_with("secret-"))
        .expect("the secret task's row")
        .to_string();
    let out = dev.berth(&["task", "log", &secret_id, "--stderr"]);
    assert_eq!(text(&out.stdout), "err [MASKED]\n");

    let out = dev.berth(&["state", "--json"]);
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("state is JSON");
    assert_eq!(state["agents"].as_array().map(Vec::len), Some(1));
    // berth dev's own service and job frameworks stay; berth run's are
    // gone.
    let mut names: Vec<&str> = state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["jobs", "service"],
        "berth run tears its framework down"
    );

    let status = dev.terminate();
    assert!(
        status.success(),
        "berth dev exits 0 on SIGTERM, got {status:?}"
    );
}

#[test]
fn malformed_arguments_get_specific_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--cpus", "-1", "--", "true"], "negative"),
        (&["run", "--cpus", "NaN", "--", "true"], "finite"),
        (&["run", "--mem", "1e300", "--", "true"], "large"),
        (
            &["run", "--mem", "0", "--", "true"],
            "mem must be more than 0",
        ),
        (
            &["run", "--cpus", "0", "--", "true"],
            "cpus must be more than 0",
        ),
        (
            &[
                "run",
                "--image",
                "berth/busybox:latest",
                "--mem",
                "2",
                "--",
                "true",
            ],
            "a container task needs at least 6",
        ),
        (&["run"], "required"),
        (&["agent", "--resources", "cpus:x"], "cpus"),
        (&["agent", "--resources", "bogus:1"], "unknown resource"),
        (&["agent", "--reserve", "cpus:1"], "ROLE=RESOURCES"),
        (&["master", "--agent-ping-timeout", "-3"], "positive"),
        (&["master", "--listen", "nowhere"], "invalid"),
        (&["task", "log"], "required"),
        (&["run", "--secret", "T=short", "--", "true"], "at least 8"),
        (
            &["run", "--secret", "BAD NAME=long-enough", "--", "true"],
            "is not a variable name",
        ),
        (
            &["run", "--secret", "NOVALUE", "--", "true"],
            "is not NAME=VALUE",
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(BERTH)
            .args(*args)
            .output()
            .expect("berth runs");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} does not mention {needle:?}"
        );
    }
    // A master that is not there is a plain error, not a hang or a panic.
    let out = Command::new(BERTH)
        .args(["node", "list", "--master", "127.0.0.1:1"])
        .output()
        .expect("berth runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach the cluster"),
        "{}",
        text(&out.stderr)
    );
    // `berth run` against a cluster that is down fails within 5 s, with
    // berth's own exit code and the OS's reason.
    let started = Instant::now();
    let out = Command::new(BERTH)
        .args(["run", "--master", "127.0.0.1:1", "--", "true"])
        .output()
        .expect("berth runs");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Connection refused"),
        "{}",
        text(&out.stderr)
    );
}

fn spawn(args: &[String]) -> ChildProcess {
    ChildProcess(
        Command::new(BERTH)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth starts"),
    )
}

/// SIGKILL the master while `berth run` has a task running: the restarted
/// master still knows the framework and the task, the agent and the
/// framework reconnect, and the task's result reaches `berth run`.
#[test]
fn sigkilled_master_loses_no_acknowledged_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master_addr = format!("127.0.0.1:{}", free_port());
    let master_args: Vec<String> = vec![
        "master".into(),
        "--listen".into(),
        master_addr.clone(),
        "--data-dir".into(),
        dir.path().join("master").display().to_string(),
        "--agent-ping-interval".into(),
        "0.2".into(),
    ];
    let mut master = spawn(&master_args);
    let _agent = spawn(&[
        "agent".into(),
        "--master".into(),
        master_addr.clone(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--work-dir".into(),
        dir.path().join("agent").display().to_string(),
        "--resources".into(),
        "cpus:2;mem:1024".into(),
    ]);
    let admin = |args: &[&str]| {
        Command::new(BERTH)
            .args(args)
            .env("BERTH_MASTER", &master_addr)
            .output()
            .expect("berth runs")
    };
    let wait_for = |what: &str, args: &[&str], needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = admin(args);
            if out.status.success() && text(&out.stdout).contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(
        "agent registration",
        &["node", "list", "--json"],
        "\"connected\": true",
    );

    let run = Command::new(BERTH)
        .args([
            "run",
            "--master",
            &master_addr,
            "--",
            "sh",
            "-c",
            "sleep 4; echo done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth run starts");
    wait_for("the task to run", &["task", "list"], "RUNNING");

    master.0.kill().expect("SIGKILL the master");
    master.0.wait().expect("reap the master");
    let _master = spawn(&master_args);

    // Right after the restart the registry still has the framework and task.
    wait_for(
        "the restarted master to answer",
        &["framework", "list"],
        "berth-run",
    );
    let out = admin(&["task", "list"]);
    assert!(
        text(&out.stdout).contains("RUNNING"),
        "{}",
        text(&out.stdout)
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut run = run;
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait for berth run") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "berth run did not finish after the master restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = run.wait_with_output().expect("output");
    assert!(status.success(), "berth run failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "done\n");
    wait_for(
        "the task to be listed finished",
        &["task", "list", "--all"],
        "FINISHED",
    );
}

/// `berth run` with a task no agent can hold says why, once, and publishes
/// the task as pending; `berth task pending` shows it with the reason.
/// Interrupted while it waits, `berth run` tears its framework down and the
/// pending task is gone.
#[test]
fn run_that_fits_nowhere_waits_and_shows_as_pending() {
    let dev = Dev::start();
    let mut run = Command::new(BERTH)
        .args(["run", "--mem", "4096", "--name", "toobig", "--", "true"])
        .env("BERTH_MASTER", &dev.master)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth run starts");
    let stderr = run.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let waiting_prefix = "berth: waiting for resources:";
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("berth run says why it waits within 30 s");
        if line.starts_with(waiting_prefix) {
            break line;
        }
    };
    assert_eq!(
        waiting,
        "berth: waiting for resources: no offer fits: 1 short on mem"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let out = dev.berth(&["task", "pending"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let table = text(&out.stdout);
        if table.contains("toobig-") {
            break table;
        }
        assert!(Instant::now() < deadline, "not listed as pending: {table}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        header(&table),
        ["ID", "FRAMEWORK", "RESOURCES", "WAITING", "WHY"]
    );
    let mut lines = table.lines().skip(1);
    let row = lines.next().expect("one pending task");
    assert!(row.starts_with("toobig-"), "{row}");
    assert!(row.contains("cpus:0.1;mem:4096"), "{row}");
    assert!(row.ends_with("no offer fits: 1 short on mem"), "{row}");
    assert_eq!(lines.next(), None, "{table}");

    let out = dev.berth(&["task", "pending", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let entry = &json[0];
    assert_eq!(entry["considered"], 1);
    assert_eq!(entry["fit"], 0);
    assert_eq!(entry["short_on"]["mem"], 1);
    assert_eq!(entry["short_on"]["cpus"], 0);
    assert_eq!(entry["resources"]["mem"], 4096.0);
    assert!(
        entry["framework_name"]
            .as_str()
            .is_some_and(|n| n.starts_with("berth-run")),
        "{entry}"
    );
    let framework = entry["framework_id"].as_str().expect("framework id");
    assert_eq!(entry["draining_agents"], serde_json::json!([]));
    let out = dev.berth(&["task", "pending", "--framework", &framework[..8]]);
    assert!(
        text(&out.stdout).contains("toobig-"),
        "{}",
        text(&out.stderr)
    );
    let out = dev.berth(&["task", "pending", "--framework", "fw-other"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no framework \"fw-other\""),
        "{}",
        text(&out.stderr)
    );

    // A drained agent makes no offers, so the framework's reason cannot
    // mention it: the table names it, with what it leaves unused.
    let agent = dev.json(&["node", "list"])[0]["id"]
        .as_str()
        .expect("agent id")
        .to_string();
    let out = dev.berth(&["node", "drain", &agent[..agent.len() - 2], "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let drained: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        drained,
        serde_json::json!({"agent_id": agent, "state": "DRAINING"})
    );
    let table = text(&dev.berth(&["task", "pending"]).stdout);
    let last = table.lines().last().unwrap_or_default();
    assert!(last.starts_with(&format!("agent {agent} (")), "{table}");
    assert!(
        last.ends_with(&format!(
            "is draining: its free cpus:2;mem:1024;disk:1000;ports:[31000-31100] is offered to no framework (`berth node reactivate {agent}` offers it again)"
        )),
        "{table}"
    );
    let json = dev.json(&["task", "pending"]);
    assert_eq!(json[0]["draining_agents"][0]["id"], agent.as_str());
    assert_eq!(json[0]["draining_agents"][0]["free"]["mem"], 1024.0);
    let out = dev.berth(&["node", "reactivate", &agent]);
    assert_eq!(
        text(&out.stdout),
        format!("agent {agent} is active again\n")
    );
    let table = text(&dev.berth(&["task", "pending"]).stdout);
    assert!(!table.contains("draining"), "{table}");

    // Interrupted while waiting: the framework goes, and its pending task.
    let _ = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "berth run ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    // 128 + SIGINT, as documented: interrupted before the launch.
    assert_eq!(status.code(), Some(130));
    // Everything it said after the waiting line (the reader ends at EOF).
    let rest: Vec<String> = rx.iter().collect();
    assert!(
        !rest.iter().any(|l| l.starts_with(waiting_prefix)),
        "the reason did not change, so it is said once: {rest:?}"
    );
    assert!(
        rest.iter()
            .any(|l| l.contains("interrupted before the task was launched")),
        "{rest:?}"
    );
    let out = dev.berth(&["task", "pending"]);
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "{}",
        text(&out.stdout)
    );
}

/// `berth framework teardown` removes a framework as its own teardown
/// does: its task is killed, it leaves `framework list`, and the framework
/// (an SDK one here) is told it was removed.
#[test]
fn operator_teardown_ends_a_frameworks_tasks_and_tells_it() {
    use berth_sdk::{Event, FrameworkConfig, SdkError};
    let dev = Dev::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (framework, mut events) = runtime.block_on(async {
        let (framework, mut events) = berth_sdk::subscribe(
            vec![dev.master.clone()],
            FrameworkConfig::new("teardown-test"),
        )
        .await
        .expect("subscribes");
        let mut task = berth_sdk::shell_task(
            "sleeper",
            "sleeper",
            format!("echo $$ > {}; exec sleep 120", pid_file.display()),
            "cpus:0.1;mem:32",
        )
        .expect("a task");
        let mut launched = false;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), events.next())
                .await
                .expect("the task runs within 30 s")
                .expect("the stream stays open");
            match event {
                Event::Offers(offers) if !launched => {
                    task.agent_id.clone_from(&offers[0].agent_id);
                    framework
                        .accept(
                            vec![berth_sdk::OfferId::new(offers[0].id.clone()).unwrap()],
                            vec![task.clone()],
                            None,
                        )
                        .await
                        .expect("launched");
                    launched = true;
                }
                Event::Update(status) if status.state() == berth_proto::TaskState::TaskRunning => {
                    break;
                }
                Event::Update(status) => {
                    assert!(!status.state().is_terminal(), "{status:?}");
                }
                _ => {}
            }
        }
        (framework, events)
    });
    let id = framework.id();
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the task wrote its pid")
        .trim()
        .parse()
        .expect("a pid");

    // A prefix names it; with --json the answer is JSON.
    let out = dev.berth(&["framework", "teardown", &id[..10], "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        answer,
        serde_json::json!({"framework_id": id, "torn_down": true})
    );

    runtime.block_on(async {
        let removed = loop {
            match tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("told within 10 s")
            {
                Some(Event::Error(why)) => break why,
                Some(_) => {}
                None => panic!("the stream ended without saying why"),
            }
        };
        assert_eq!(removed, "framework removed: OPERATOR_TEARDOWN");
        let e = framework
            .kill(&berth_sdk::TaskId::new("sleeper").unwrap(), None)
            .await
            .unwrap_err();
        assert!(matches!(e, SdkError::Removed(_)), "{e:?}");
    });

    let frameworks = dev.json(&["framework", "list"]);
    assert!(
        !frameworks.to_string().contains(&id),
        "still listed: {frameworks}"
    );
    let tasks = dev.json(&["task", "list", "--all"]);
    let task = tasks
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == "sleeper"))
        .unwrap_or_else(|| panic!("the task is listed: {tasks}"));
    assert_eq!(task["state"], "TASK_KILLED", "{task}");
    assert_eq!(task["reason"], "OPERATOR_TEARDOWN", "{task}");
    assert!(task["ended_at"].as_f64().is_some_and(|t| t > 0.0), "{task}");
    // The agent killed the process.
    let deadline = Instant::now() + Duration::from_secs(20);
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    while alive() {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Gone: the command says so, the API answers NOT_FOUND.
    let out = dev.berth(&["framework", "teardown", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no framework"),
        "{}",
        text(&out.stderr)
    );
    let code = runtime.block_on(async {
        let mut op =
            berth_proto::operator_client::OperatorClient::connect(format!("http://{}", dev.master))
                .await
                .expect("connects");
        op.teardown_framework(berth_proto::FrameworkRef {
            framework_id: id.clone(),
        })
        .await
        .expect_err("unknown now")
        .code()
    });
    assert_eq!(code, tonic::Code::NotFound);
}

/// Runs `berth ARGS` that must end by itself within 20 s (a daemon that
/// started instead of refusing is killed, and the test fails).
fn bounded(args: &[&str]) -> Output {
    let mut child = Command::new(BERTH)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("{args:?} did not end: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Until berth has authentication, a daemon listens on loopback unless
/// `--insecure` is given, and then says at every start that its API is
/// unauthenticated; its log has no colour codes when stderr is no
/// terminal.
#[test]
fn daemons_listen_beyond_loopback_only_with_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    for args in [
        &["master", "--listen", "0.0.0.0:0", "--data-dir", &data][..],
        &[
            "master",
            "--advertise",
            "192.0.2.1:5050",
            "--data-dir",
            &data,
        ],
        &["agent", "--listen", "0.0.0.0:0", "--work-dir", &data],
        &[
            "agent",
            "--advertise",
            "node-7.example:5051",
            "--work-dir",
            &data,
        ],
        &["dev", "--agent-listen", "[::]:0", "--data-dir", &data],
        &["ci", "serve", "--listen", "0.0.0.0:0", "--data-dir", &data],
        &[
            "ci",
            "serve",
            "--advertise",
            "http://ci.example:5080",
            "--data-dir",
            &data,
        ],
        &["ci", "run", "--listen", "0.0.0.0:0", &data],
        &["router", "--bind", "0.0.0.0"],
        &["router", "--admin", "192.0.2.1:9091"],
    ] {
        let out = bounded(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("berth: refusing to ")
                && err
                    .contains("it is not a loopback address, and berth has no authentication yet")
                && err.contains("add --insecure"),
            "{args:?}: {err}"
        );
        assert!(!dir.path().join("data").exists(), "{args:?} wrote nothing");
    }

    let mut master = Command::new(BERTH)
        .args([
            "master",
            "--listen",
            "0.0.0.0:0",
            "--insecure",
            "--data-dir",
            &data,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("BERTH_LOG")
        .spawn()
        .expect("berth master starts");
    let stderr = master.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    // Up to the first log line of the master library.
    for line in lines.by_ref() {
        let done = line.contains("master starting");
        seen.push(line);
        if done {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let _ = Command::new("kill")
        .args(["-TERM", &master.id().to_string()])
        .status();
    let status = master.wait().expect("wait");
    assert!(status.success(), "{status:?}: {seen:?}");
    assert_eq!(
        seen.first().map(String::as_str),
        Some(
            "berth: WARNING: --insecure: the master API on 0.0.0.0:0 is unauthenticated: anyone who can reach it can run any command as root on every agent"
        ),
        "{seen:?}"
    );
    assert!(seen.last().is_some_and(|l| l.contains("INFO")), "{seen:?}");
    assert!(
        !seen.iter().any(|l| l.contains('\u{1b}')),
        "no colour codes in a pipe: {seen:?}"
    );
}

/// Every subcommand's `--help` works, and every `berth …` command a help
/// text names exists.
#[test]
fn every_help_text_names_real_commands() {
    fn help(path: &[String]) -> String {
        let out = Command::new(BERTH)
            .args(path)
            .arg("--help")
            .output()
            .expect("berth runs");
        assert!(out.status.success(), "{path:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }
    /// The subcommands a help text lists.
    fn subcommands(help: &str) -> Vec<String> {
        help.lines()
            .skip_while(|l| *l != "Commands:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| *name != "help")
            .map(str::to_string)
            .collect()
    }
    let mut known: Vec<Vec<String>> = Vec::new();
    let mut texts: Vec<(Vec<String>, String)> = Vec::new();
    let mut queue = vec![Vec::new()];
    while let Some(path) = queue.pop() {
        let text = help(&path);
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            queue.push(next);
        }
        known.push(path.clone());
        texts.push((path, text));
    }
    assert!(known.len() > 30, "{known:?}");
    assert!(known.contains(&vec!["framework".to_string(), "teardown".to_string()]));
    for (path, text) in &texts {
        for quoted in text.split('`').skip(1).step_by(2) {
            let Some(rest) = quoted.strip_prefix("berth ") else {
                continue;
            };
            let words: Vec<String> = rest
                .split_whitespace()
                .take_while(|w| {
                    w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-')
                })
                .map(str::to_string)
                .collect();
            let named = (1..=words.len())
                .rev()
                .any(|n| known.contains(&words[..n].to_vec()));
            assert!(
                named,
                "`berth {path:?} --help` names `{quoted}`, which does not exist"
            );
        }
    }
    // `berth state` prints a summary unless --json.
    let state = help(&["state".to_string()]);
    assert!(
        state.contains("summary") && state.contains("--json"),
        "{state}"
    );
}

/// `berth run`'s exit codes agree with what the cluster records: a
/// missing program is 127 and a file that is not executable 126, as a
/// shell and `docker run` say; Ctrl-C kills the task, and `berth run`
/// exits with the code its agent reported (143 for the SIGTERM), the one
/// `berth task list` shows.
#[test]
fn berth_runs_exit_codes_agree_with_the_tasks() {
    let dev = Dev::start();
    let out = dev.berth(&["run", "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("not-a-program");
    std::fs::write(&plain, "text").expect("write");
    let out = dev.berth(&["run", "--", plain.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));

    let mut run = Command::new(BERTH)
        .args(["run", "--name", "interrupted", "--", "sleep", "60"])
        .env("BERTH_MASTER", &dev.master)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth run starts");
    // Interrupt it once its task runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = dev.json(&["task", "list"]);
        if tasks
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["state"] == "TASK_RUNNING"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the task never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "berth run ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    let tasks = dev.json(&["task", "list", "--all"]);
    let task = tasks
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "interrupted"))
        .cloned()
        .expect("the interrupted task is listed");
    assert_eq!(task["state"], "TASK_KILLED", "{task}");
    let recorded = task["exit_code"].as_i64().expect("an exit code");
    assert_eq!(recorded, 143, "{task}");
    assert_eq!(status.code().map(i64::from), Some(recorded));
    let mut err = String::new();
    if let Some(mut e) = run.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(err.contains("was killed"), "{err}");
}

/// `berth dev` runs the service framework and its router: an app added
/// with `berth service add --wait` answers on its service port, its
/// instances' output is read with `berth service logs`, a bad
/// definition is refused with its field's path, and the app goes with
/// `berth service remove`.
#[test]
fn berth_dev_serves_apps_through_its_router() {
    if !std::path::Path::new("/usr/bin/busybox").is_file()
        && !std::path::Path::new("/bin/busybox").is_file()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but busybox is not installed"
        );
        eprintln!("skipping: busybox is not installed");
        return;
    }
    let mut dev = Dev::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let app = dir.path().join("site.yaml");
    std::fs::write(
        &app,
        format!(
            "id: /demo/site\ncmd: mkdir -p www && echo hello > www/index.html && echo serving on $PORT0 && echo started && exec busybox httpd -f -vv -p 127.0.0.1:$PORT0 -h www\ncpus: 0.1\nmem: 32\ninstances: 2\nportDefinitions:\n  - port: {port}\nhealthChecks:\n  - protocol: MESOS_HTTP\n    intervalSeconds: 2\n    timeoutSeconds: 1\n    delaySeconds: 1\n"
        ),
    )
    .expect("write the app");
    let path = app.display().to_string();
    let out = dev.berth(&["service", "add", &path, "--wait", "--timeout", "60"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("deployment "),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("succeeded"),
        "{}",
        text(&out.stderr)
    );
    let list = dev.json(&["service", "list"]);
    assert_eq!(list["apps"][0]["id"], "/demo/site");
    assert_eq!(list["apps"][0]["tasksRunning"], 2, "{list}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the router listens");
    std::io::Write::write_all(
        &mut s,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .expect("send");
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).expect("read");
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("hello\n"),
        "{reply:?}"
    );

    service_logs_are_read_from_the_agent(&dev);

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"id": "/demo/bad", "cmd": "true", "cpus": -1, "mem": 32}"#,
    )
    .expect("write");
    let out = dev.berth(&["service", "add", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/cpus"), "{}", text(&out.stderr));

    let out = dev.berth(&["service", "remove", "/demo/site"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = dev.json(&["service", "list"]);
    assert_eq!(list["apps"], serde_json::json!([]));
    assert!(dev.terminate().success());
}

/// `berth service logs` of `/demo/site` (two busybox httpd instances that
/// print two lines, then log requests on stderr with `-vv`): one
/// instance's stdout, its tail, the choice among several said on stderr,
/// an unknown instance refused, and stderr followed as requests come.
fn service_logs_are_read_from_the_agent(dev: &Dev) {
    let tasks = dev.json(&["service", "instances", "/demo/site"]);
    let id = tasks["tasks"][0]["id"]
        .as_str()
        .expect("an instance id")
        .to_owned();
    let port = tasks["tasks"][0]["ports"][0]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("a host port");
    let out = dev.berth(&["service", "logs", "/demo/site", "--instance", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("serving on {port}\nstarted\n"));
    let out = dev.berth(&[
        "service",
        "logs",
        "demo/site",
        "--instance",
        &id,
        "--tail",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "started\n");
    let out = dev.berth(&["service", "logs", "/demo/site"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("serving on "),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("has 2 instances; showing"),
        "{}",
        text(&out.stderr)
    );
    let out = dev.berth(&["service", "logs", "/demo/site", "--instance", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no instance \"nope\""),
        "{}",
        text(&out.stderr)
    );

    // --follow --stderr: a request to this instance shows up as it comes.
    let mut child = Command::new(BERTH)
        .args([
            "service",
            "logs",
            "/demo/site",
            "--instance",
            &id,
            "--stderr",
            "--follow",
        ])
        .env("BERTH_MASTER", &dev.master)
        .env("BERTH_SERVICE", &dev.service)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth runs");
    let child_out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(child_out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    'follow: loop {
        assert!(Instant::now() < deadline, "never followed: {seen:?}");
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = std::io::Write::write_all(
                &mut s,
                b"GET /followed HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            );
            let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
        }
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            let hit = line.ends_with("url:/followed");
            seen.push(line);
            if hit {
                break 'follow;
            }
        }
    }
    assert!(
        child.try_wait().expect("wait").is_none(),
        "--follow keeps reading"
    );
    let _ = child.kill();
    let _ = child.wait();
}
