use super::*;

#[test]
fn the_position_file_sits_next_to_the_log() {
    assert_eq!(
        position_path(Path::new("/d/logs/7/0-1.log")),
        Path::new("/d/logs/7/0-1.log.pos")
    );
}

#[test]
fn positions_stored_before_the_script_start_mark_still_read() {
    let old = r#"{"len":5,"stdout":5,"stderr":0,"stdout_done":false,"stderr_done":false}"#;
    let pos: Position = serde_json::from_str(old).unwrap();
    assert_eq!(
        pos,
        Position {
            len: 5,
            stdout: 5,
            ..Position::default()
        }
    );
    assert!(!pos.script_started);
}

#[tokio::test]
async fn a_log_is_cut_back_to_its_position_and_a_bad_position_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs").join("0-1.log");
    // Nothing yet: an empty log, from the start.
    let sink = open_sink(&log).await.unwrap();
    assert_eq!(sink.pos, Position::default());
    drop(sink);
    // Bytes written after the position was stored are dropped.
    std::fs::write(&log, b"one\ntwo\nthree\n").unwrap();
    let pos = Position {
        len: 8,
        stdout: 8,
        ..Position::default()
    };
    write_position(&log, &pos).await.unwrap();
    assert_eq!(read_position(&log).unwrap(), Some(pos));
    let mut sink = open_sink(&log).await.unwrap();
    assert_eq!(sink.pos, pos);
    sink.write(b"drei\n", 0, 14, false).await.unwrap();
    sink.write(b"", 1, 0, true).await.unwrap();
    assert_eq!(std::fs::read(&log).unwrap(), b"one\ntwo\ndrei\n");
    let stored = read_position(&log).unwrap().unwrap();
    assert_eq!(
        stored,
        Position {
            len: 13,
            stdout: 14,
            stderr: 0,
            stdout_done: false,
            stderr_done: true,
            gave_up: false,
            script_started: false,
        }
    );
    drop(sink);
    // A position longer than the log (or unreadable): from the start.
    std::fs::write(&log, b"x").unwrap();
    assert_eq!(open_sink(&log).await.unwrap().pos, Position::default());
    std::fs::write(position_path(&log), b"{not json").unwrap();
    assert!(matches!(
        read_position(&log),
        Err(CollectError::Position { .. })
    ));
    let sink = open_sink(&log).await.unwrap();
    assert_eq!(sink.pos, Position::default());
    assert_eq!(std::fs::read(&log).unwrap(), b"");
}

fn quick_retry(tries: u32) -> LogRetry {
    LogRetry {
        tries,
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

fn source(path: &Path, agent: &str) -> LogSource {
    LogSource {
        agent: agent.into(),
        framework_id: "fw".into(),
        task: "ci-1-0-1".into(),
        secrets: Vec::new(),
        path: path.to_path_buf(),
    }
}

#[tokio::test]
async fn a_collection_that_keeps_failing_gives_up_and_the_log_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0-1.log");
    // Half a line collected; bytes past the position (written by a
    // process killed before it stored the position) go.
    std::fs::write(&log, b"step one\nstep tw-and-more").unwrap();
    let pos = Position {
        len: 16,
        stdout: 16,
        ..Position::default()
    };
    write_position(&log, &pos).await.unwrap();
    assert!(!is_whole(&log));
    // No master to ask: the agent's address is never known.
    let agents = AgentBook::new(Vec::new());
    let outcome = follow(
        &source(&log, "agent-7"),
        &agents,
        quick_retry(3),
        &Notify::new(),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(outcome, Outcome::GaveUp);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text,
        "step one\nstep tw\n[berth] the rest of this log could not be collected: the address of agent \"agent-7\" is not known\n"
    );
    let stored = read_position(&log).unwrap().unwrap();
    assert!(stored.gave_up && stored.is_done());
    assert_eq!(stored.len, text.len() as u64);
    assert!(is_whole(&log));
    // Given up is final: a later collection adds nothing.
    agents.insert("agent-7", "127.0.0.1:1");
    let again = follow(
        &source(&log, "agent-7"),
        &agents,
        quick_retry(3),
        &Notify::new(),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(again, Outcome::Done);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), text);
}

#[tokio::test]
async fn an_unreachable_agent_is_asked_again_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0-1.log");
    let agents = AgentBook::new(Vec::new());
    // Nothing listens on port 1.
    agents.insert("agent-7", "127.0.0.1:1");
    let outcome = follow(
        &source(&log, "agent-7"),
        &agents,
        quick_retry(2),
        &Notify::new(),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(outcome, Outcome::GaveUp);
    assert_eq!(agents.address("agent-7").await, None, "forgotten");
    let text = std::fs::read_to_string(&log).unwrap();
    // An empty log needs no newline before the line.
    assert!(
        text.starts_with("[berth] the rest of this log could not be collected: "),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[tokio::test]
async fn a_stopped_collection_does_not_give_up_and_an_unknown_agent_gives_up_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0-1.log");
    let stop = CancellationToken::new();
    stop.cancel();
    let outcome = follow(
        &source(&log, "agent-7"),
        &AgentBook::new(Vec::new()),
        LogRetry {
            tries: 100,
            first_delay: Duration::from_secs(3600),
            max_delay: Duration::from_secs(3600),
        },
        &Notify::new(),
        &stop,
    )
    .await;
    assert_eq!(outcome, Outcome::Stopped);
    assert!(!is_whole(&log), "to be resumed");
    let outcome = follow(
        &source(&log, ""),
        &AgentBook::new(Vec::new()),
        LogRetry::default(),
        &Notify::new(),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(outcome, Outcome::GaveUp);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("could not be collected: the agent the job ran on is not known")
    );
    assert!(is_whole(&log));
}

#[tokio::test]
async fn a_wait_between_tries_ends_when_the_task_has_news() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0-1.log");
    let wake = Notify::new();
    let retry = LogRetry {
        tries: 2,
        first_delay: Duration::from_secs(3600),
        max_delay: Duration::from_secs(3600),
    };
    let agents = AgentBook::new(Vec::new());
    let src = source(&log, "agent-7");
    let stop = CancellationToken::new();
    let followed = follow(&src, &agents, retry, &wake, &stop);
    // Woken, the second try comes at once (and gives up).
    wake.notify_one();
    let outcome = tokio::time::timeout(Duration::from_secs(10), followed)
        .await
        .expect("no hour-long wait");
    assert_eq!(outcome, Outcome::GaveUp);
}

#[test]
fn a_log_is_whole_when_its_position_is_done_or_it_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0-1.log");
    assert!(!is_whole(&log), "nothing collected yet");
    std::fs::write(&log, b"stored by an older berth\n").unwrap();
    assert!(is_whole(&log), "a log without a position");
    let mut pos = Position {
        len: 25,
        stdout: 25,
        stdout_done: true,
        ..Position::default()
    };
    std::fs::write(position_path(&log), serde_json::to_vec(&pos).unwrap()).unwrap();
    assert!(!is_whole(&log), "stderr is still to be read");
    pos.stderr_done = true;
    std::fs::write(position_path(&log), serde_json::to_vec(&pos).unwrap()).unwrap();
    assert!(is_whole(&log));
    // Positions stored before `gave_up` existed still read.
    std::fs::write(
        position_path(&log),
        br#"{"len":3,"stdout":3,"stderr":0,"stdout_done":false,"stderr_done":false}"#,
    )
    .unwrap();
    assert_eq!(read_position(&log).unwrap().map(|p| p.gave_up), Some(false));
    assert!(!is_whole(&log));
}

#[tokio::test]
async fn a_new_collection_stores_its_position_before_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs").join("0-1.log");
    let _sink = open_sink(&log).await.unwrap();
    assert_eq!(read_position(&log).unwrap(), Some(Position::default()));
    assert!(!is_whole(&log), "being collected, not an older berth's log");
}

#[test]
fn collecting_marks_a_task_until_the_guard_drops() {
    let set = Collecting::default();
    let guard = set.start("ci-1-0-1").expect("not collected yet");
    assert!(set.contains("ci-1-0-1"));
    assert!(set.start("ci-1-0-1").is_none(), "one collector per task");
    drop(guard);
    assert!(!set.contains("ci-1-0-1"));
}
