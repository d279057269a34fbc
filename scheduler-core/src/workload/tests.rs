use super::*;

fn r(s: &str) -> Resources {
    s.parse().unwrap()
}

#[test]
fn mesos_multi_framework_matches_the_benchmark() {
    let w = mesos_multi_framework(1);
    assert_eq!(w.nodes.len(), 80);
    assert!(
        w.nodes
            .iter()
            .all(|n| n.resources() == r("cpus:64;mem:488000"))
    );
    assert_eq!(w.tasks.len(), 4 * 4_000 + 500 * 5 + 50 * 20);
    // 16,000 × (0.07, 400) + 2,500 × (0.1, 4,000) + 1,000 × (1, 1,000).
    assert_eq!(w.total_demand(), r("cpus:2370;mem:17400000"));
    // The first round: 100 tasks of each Marathon, one per Jenkins, five
    // per Spark dispatcher.
    assert_eq!(w.tasks[0].id.as_str(), "marathon-1-0000");
    assert_eq!(w.tasks[99].id.as_str(), "marathon-1-0099");
    assert_eq!(w.tasks[100].id.as_str(), "marathon-2-0000");
    assert_eq!(w.tasks[400].id.as_str(), "jenkins-1-0000");
    assert_eq!(w.tasks[401].id.as_str(), "jenkins-2-0000");
    assert_eq!(w.tasks[900].id.as_str(), "spark-1-0000");
    assert_eq!(w.tasks[904].id.as_str(), "spark-1-0004");
    assert_eq!(w.tasks[905].id.as_str(), "spark-2-0000");
    assert_eq!(w.tasks[1150].id.as_str(), "marathon-1-0100");
    assert_eq!(w.tasks[400].resources(), r("cpus:0.1;mem:4000"));
    assert!(w.check_ids().is_ok());

    let big = mesos_multi_framework(3);
    assert_eq!(big.nodes.len(), 240);
    assert_eq!(big.tasks.len(), 3 * w.tasks.len());
    assert_eq!(big.total_demand(), r("cpus:7110;mem:52200000"));
    assert!(big.check_ids().is_ok());
    assert_eq!(mesos_multi_framework(0), w);
}

#[test]
fn heterogeneous_is_deterministic() {
    let a = heterogeneous(50, 500, 5);
    assert_eq!(a, heterogeneous(50, 500, 5));
    assert_ne!(a, heterogeneous(50, 500, 6));
    assert_eq!(a.nodes.len(), 50);
    assert_eq!(a.tasks.len(), 500);
    assert!(a.check_ids().is_ok());
    // A prefix of a longer workload draws the same nodes.
    assert_eq!(heterogeneous(50, 10, 5).nodes, a.nodes);
}

#[test]
fn heterogeneous_distributions_are_roughly_right() {
    let w = heterogeneous(2_000, 40_000, 3);
    let n = w.tasks.len() as f64;
    let cpus: Vec<f64> = w.tasks.iter().map(|t| t.cpus.to_f64()).collect();
    let mem: Vec<f64> = w.tasks.iter().map(|t| t.mem.to_f64() / 1024.0).collect();
    let mean_cpu = cpus.iter().sum::<f64>() / n;
    let mean_mem = mem.iter().sum::<f64>() / n;
    assert!((0.7..0.92).contains(&mean_cpu), "mean cpu {mean_cpu}");
    assert!((3.3..4.4).contains(&mean_mem), "mean mem {mean_mem} GiB");
    // A heavy share of tiny tasks.
    let tiny = cpus.iter().filter(|c| **c < 0.1).count() as f64 / n;
    assert!((0.27..0.37).contains(&tiny), "tiny {tiny}");
    // Bounds.
    assert!(cpus.iter().all(|c| (0.01..=16.0).contains(c)));
    assert!(mem.iter().all(|m| (8.0 / 1024.0..=96.0).contains(m)));
    // Medians well below means: skewed.
    let mut sorted = cpus.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(sorted[sorted.len() / 2] < 0.6 * mean_cpu);
    // Little cpu–memory correlation among the regular tasks (ρ = 0.2 on
    // the underlying normals).
    let pairs: Vec<(f64, f64)> = cpus
        .iter()
        .zip(&mem)
        .filter(|(_, m)| **m > 0.5)
        .map(|(c, m)| (c.ln(), m.ln()))
        .collect();
    let k = pairs.len() as f64;
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / k,
        pairs.iter().map(|p| p.1).sum::<f64>() / k,
    );
    let cov: f64 = pairs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let vx: f64 = pairs.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let vy: f64 = pairs.iter().map(|(_, y)| (y - my).powi(2)).sum();
    let rho = cov / (vx * vy).sqrt();
    assert!((0.05..0.35).contains(&rho), "rho {rho}");
    // Machine mix: 25% have 64 cpus, 10% have 8.
    let share = |c: u64| {
        w.nodes
            .iter()
            .filter(|x| x.cpus == Scalar::from_units(c))
            .count() as f64
            / 2_000.0
    };
    assert!((0.22..0.28).contains(&share(64)), "{}", share(64));
    assert!((0.08..0.12).contains(&share(8)), "{}", share(8));
    // 25 tasks per node fill roughly 60% of cpu and 55% of memory.
    let full = heterogeneous(2_000, 50_000, 3);
    let (d, c) = (full.total_demand(), full.total_capacity());
    let u = d.cpus.to_f64() / c.cpus.to_f64();
    assert!((0.55..0.68).contains(&u), "cpu {u}");
    let u = d.mem.to_f64() / c.mem.to_f64();
    assert!((0.48..0.62).contains(&u), "mem {u}");
    // About 2% constrained, arrivals in order, durations positive.
    let constrained = w.tasks.iter().filter(|t| !t.constraints.is_empty()).count() as f64 / n;
    assert!((0.015..0.025).contains(&constrained), "{constrained}");
    assert!(w.tasks.windows(2).all(|p| p[0].arrival <= p[1].arrival));
    assert!(
        w.tasks
            .iter()
            .all(|t| t.duration >= Some(Duration::from_secs(1)))
    );
    // Every node has a zone and a shape.
    assert!(w.nodes.iter().all(|n| n.attributes.contains_key("zone")
        && n.attributes["shape"] == format!("c{}m{}", n.cpus, n.mem.milli() / 1_024_000)));
}

#[test]
fn heterogeneous_config_knobs() {
    let mut c = HeterogeneousConfig::new(10, 200, 1);
    c.mean_interarrival = None;
    c.zone_equals = 0.0;
    c.zone_not_equals = 1.0;
    c.zones = 1;
    let w = heterogeneous_with(&c);
    assert!(
        w.tasks
            .iter()
            .all(|t| t.arrival.is_none() && t.duration.is_none())
    );
    assert!(w.tasks.iter().all(|t| t.constraints
        == [Constraint {
            attribute: "zone".into(),
            op: ConstraintOp::NotEquals,
            value: "z0".into()
        }]));
}

#[test]
fn json_round_trip() {
    let w = heterogeneous(20, 100, 9);
    let json = w.to_json();
    assert_eq!(Workload::from_json(&json).unwrap(), w);
    let m = mesos_multi_framework(1);
    assert_eq!(Workload::from_json(&m.to_json()).unwrap(), m);
}

#[test]
fn csv_round_trip() {
    let w = heterogeneous(20, 100, 9);
    let (nodes, tasks) = w.to_csv();
    assert_eq!(Workload::from_csv(&nodes, &tasks).unwrap(), w);
}

#[test]
fn json_example_from_the_docs() {
    let json = r#"{
      "nodes": [
        {"id": "n1", "cpus": 32, "mem": 131072, "disk": 1048576,
         "attributes": {"zone": "z1", "rack": "r7"}},
        {"id": "n2", "cpus": 8, "mem": 32768}
      ],
      "tasks": [
        {"id": "web-1", "cpus": 0.5, "mem": 512},
        {"id": "db-1", "cpus": 4, "mem": 16384, "disk": 20480,
         "arrival": 12.5, "duration": 3600,
         "constraints": [{"attribute": "zone", "op": "==", "value": "z1"},
                         {"attribute": "rack", "op": "!=", "value": "r3"}]}
      ]
    }"#;
    let w = Workload::from_json(json).unwrap();
    assert_eq!(w.nodes[1].disk, Scalar::ZERO);
    assert!(w.nodes[1].attributes.is_empty());
    assert_eq!(w.tasks[0].arrival, None);
    let db = &w.tasks[1];
    assert_eq!(db.resources(), r("cpus:4;mem:16384;disk:20480"));
    assert_eq!(db.arrival, Some(Time::from_millis(12_500)));
    assert_eq!(db.duration, Some(Duration::from_secs(3600)));
    assert_eq!(db.constraints[0].to_string(), "zone == z1");
    assert!(db.constraints[0].matches(&w.nodes[0].attributes));
    assert!(db.constraints[1].matches(&w.nodes[0].attributes));
    assert!(!db.constraints[0].matches(&w.nodes[1].attributes));
    // != holds for a node without the attribute.
    assert!(db.constraints[1].matches(&w.nodes[1].attributes));
}

#[test]
fn csv_example_from_the_docs() {
    let nodes = "\
# the cluster
id,cpus,mem,disk,attributes
n1,32,131072,1048576,zone=z1;rack=r7
n2,8,32768,,
";
    let tasks = "\
id,cpus,mem,disk,arrival,duration,constraints
web-1,0.5,512,,,,
db-1,4,16384,20480,12.5,3600,zone==z1;rack!=r3
\"quoted,id\",1,1,0,,,
";
    let w = Workload::from_csv(nodes, tasks).unwrap();
    assert_eq!(w.nodes.len(), 2);
    assert_eq!(w.nodes[0].attributes["rack"], "r7");
    assert_eq!(w.tasks[1].constraints.len(), 2);
    assert_eq!(w.tasks[1].constraints[1].op, ConstraintOp::NotEquals);
    assert_eq!(w.tasks[2].id.as_str(), "quoted,id");
    // Columns in another order, optional ones left out.
    let w2 = Workload::from_csv("mem,id,cpus\n1024,a,2\n", "cpus,mem,id\n1,2,t\n").unwrap();
    assert_eq!(w2.nodes[0].resources(), r("cpus:2;mem:1024"));
    assert_eq!(w2.tasks[0].resources(), r("cpus:1;mem:2"));
}

fn json_err(input: &str) -> WorkloadError {
    Workload::from_json(input).unwrap_err()
}

#[test]
fn json_errors_name_the_line_and_field() {
    let cases: &[(&str, usize, &str)] = &[
        ("{\"nodes\": [", 1, "EOF"),
        (
            "{\n\"nodes\": [{\"id\": \"a\", \"cpus\": -1, \"mem\": 1}]}",
            2,
            "field \"cpus\": resource \"cpus\" must not be negative",
        ),
        (
            "{\"nodes\": [],\n \"tasks\": [{\"id\": \"t\", \"cpus\": 1}]}",
            2,
            "missing field `mem`",
        ),
        (
            "{\"nodes\": [{\"id\": \"a\", \"cpus\": 1, \"mem\": 1, \"gpu\": 1}]}",
            1,
            "unknown field `gpu`",
        ),
        (
            "{\"nodes\": [{\"id\": \"a b\", \"cpus\": 1, \"mem\": 1}]}",
            1,
            "whitespace",
        ),
        (
            "{\"nodes\": [{\"id\": \"a\", \"cpus\": \"4\", \"mem\": 1}]}",
            1,
            "field \"cpus\": invalid type: string",
        ),
        (
            "{\"nodes\": [{\"id\": \"a\", \"cpus\": 1e300, \"mem\": 1}]}",
            1,
            "absurdly large",
        ),
        (
            "{\"nodes\": [], \"tasks\": [{\"id\": \"t\", \"cpus\": 1, \"mem\": 1,\n \"arrival\": -5}]}",
            2,
            "arrival must not be negative",
        ),
        (
            "{\"nodes\": [], \"tasks\": [{\"id\": \"t\", \"cpus\": 1, \"mem\": 1,\n\n \"constraints\": [{\"attribute\": \"z\", \"op\": \"~=\", \"value\": \"a\"}]}]}",
            3,
            "unknown variant `~=`",
        ),
        ("{\"tasks\": []}", 1, "missing field `nodes`"),
        ("[]", 1, "invalid length 0"),
    ];
    for (input, line, needle) in cases {
        match json_err(input) {
            WorkloadError::Json {
                line: l, message, ..
            } => {
                assert_eq!(l, *line, "{input}: {message}");
                assert!(message.contains(needle), "{input}: {message}");
            }
            other => panic!("{input}: {other:?}"),
        }
    }
    let e = json_err("{\n\"nodes\": [{\"id\": \"a\", \"cpus\": -1, \"mem\": 1}]}");
    assert!(
        e.to_string().starts_with("workload JSON, line 2 column"),
        "{e}"
    );
    assert_eq!(
        json_err(
            r#"{"nodes": [{"id": "a", "cpus": 1, "mem": 1}, {"id": "a", "cpus": 1, "mem": 1}]}"#
        )
        .to_string(),
        "duplicate node id \"a\" (nodes #1 and #2, counting from 1)"
    );
    assert!(matches!(
        json_err(
            r#"{"nodes": [], "tasks": [{"id": "t", "cpus": 1, "mem": 1}, {"id": "t", "cpus": 1, "mem": 1}]}"#
        ),
        WorkloadError::DuplicateId {
            kind: "task",
            second: 2,
            ..
        }
    ));
}

fn csv_err(nodes: &str, tasks: &str) -> (String, usize, Option<String>, String) {
    match Workload::from_csv(nodes, tasks).unwrap_err() {
        WorkloadError::Csv {
            file,
            line,
            column,
            message,
        } => (file.to_owned(), line, column, message),
        other => panic!("{other:?}"),
    }
}

/// `(nodes.csv, tasks.csv, file, line, column, part of the message)`.
type CsvCase<'a> = (&'a str, &'a str, &'a str, usize, Option<&'a str>, &'a str);

#[test]
fn csv_errors_name_the_line_and_column() {
    const N: &str = "id,cpus,mem\nn,1,1\n";
    const T: &str = "id,cpus,mem\nt,1,1\n";
    let cases: &[CsvCase<'_>] = &[
        ("", T, "nodes.csv", 1, None, "no header line"),
        (
            "id,cpus\nn,1\n",
            T,
            "nodes.csv",
            1,
            Some("mem"),
            "required column missing",
        ),
        (
            "id,cpus,mem,gpus\n",
            T,
            "nodes.csv",
            1,
            Some("gpus"),
            "unknown column",
        ),
        (
            "id,cpus,mem,cpus\n",
            T,
            "nodes.csv",
            1,
            Some("cpus"),
            "column given twice",
        ),
        (
            "id,cpus,mem\nn,1\n",
            T,
            "nodes.csv",
            2,
            None,
            "expected 3 fields as in the header, found 2",
        ),
        (
            "id,cpus,mem\n\nn,x,1\n",
            T,
            "nodes.csv",
            3,
            Some("cpus"),
            "\"x\" is not a number",
        ),
        (
            "id,cpus,mem\nn,-1,1\n",
            T,
            "nodes.csv",
            2,
            Some("cpus"),
            "must not be negative",
        ),
        (
            "id,cpus,mem\nn,1,\n",
            T,
            "nodes.csv",
            2,
            Some("mem"),
            "required field is empty",
        ),
        (
            "id,cpus,mem\nn/1,1,1\n",
            T,
            "nodes.csv",
            2,
            Some("id"),
            "must not contain '/'",
        ),
        (
            "id,cpus,mem,attributes\nn,1,1,zone\n",
            T,
            "nodes.csv",
            2,
            Some("attributes"),
            "is not key=value",
        ),
        (
            "id,cpus,mem,attributes\nn,1,1,a=1;a=2\n",
            T,
            "nodes.csv",
            2,
            Some("attributes"),
            "given twice",
        ),
        (
            "id,cpus,mem\n\"n,1,1\n",
            T,
            "nodes.csv",
            2,
            None,
            "unterminated quote",
        ),
        (
            "id,cpus,mem\n\"n\"x,1,1\n",
            T,
            "nodes.csv",
            2,
            None,
            "after its closing quote",
        ),
        (
            "id,cpus,mem\nn\"x,1,1\n",
            T,
            "nodes.csv",
            2,
            None,
            "quote inside an unquoted value",
        ),
        (
            N,
            "id,cpus,mem,constraints\nt,1,1,zone=a\n",
            "tasks.csv",
            2,
            Some("constraints"),
            "is not attribute==value",
        ),
        (
            N,
            "id,cpus,mem,constraints\nt,1,1,==a\n",
            "tasks.csv",
            2,
            Some("constraints"),
            "empty attribute name",
        ),
        (
            N,
            "id,cpus,mem,arrival\nt,1,1,inf\n",
            "tasks.csv",
            2,
            Some("arrival"),
            "finite number of seconds",
        ),
        (
            N,
            "id,cpus,mem,duration\nt,1,1,-2\n",
            "tasks.csv",
            2,
            Some("duration"),
            "must not be negative",
        ),
        (
            N,
            "id,cpus,mem\n# comment\nt,1,NaN\n",
            "tasks.csv",
            3,
            Some("mem"),
            "finite number",
        ),
    ];
    for (nodes, tasks, file, line, column, needle) in cases {
        let (f, l, c, m) = csv_err(nodes, tasks);
        assert_eq!(f, *file, "{nodes:?} {tasks:?}: {m}");
        assert_eq!(l, *line, "{nodes:?} {tasks:?}: {m}");
        assert_eq!(c.as_deref(), *column, "{nodes:?} {tasks:?}: {m}");
        assert!(m.contains(needle), "{nodes:?} {tasks:?}: {m}");
    }
    let e = Workload::from_csv("id,cpus,mem\nn,x,1\n", T).unwrap_err();
    assert_eq!(
        e.to_string(),
        "nodes.csv line 2, column \"cpus\": \"x\" is not a number"
    );
    assert!(matches!(
        Workload::from_csv("id,cpus,mem\nn,1,1\nn,2,2\n", T).unwrap_err(),
        WorkloadError::DuplicateId {
            kind: "node",
            first: 1,
            second: 2,
            ..
        }
    ));
}

#[test]
fn errors_quote_long_values_cut_short() {
    const T: &str = "id,cpus,mem\nt,1,1\n";
    let long = "x".repeat(100_000);
    let csv_cases = [
        format!("id,cpus,mem\nn,{long},1\n"),
        format!("id,cpus,mem,attributes\nn,1,1,{long}\n"),
        format!("id,cpus,mem,{long}\n"),
    ];
    for nodes in &csv_cases {
        let message = Workload::from_csv(nodes, T).unwrap_err().to_string();
        assert!(
            message.len() < 300,
            "{} bytes: {}",
            message.len(),
            &message[..300]
        );
        assert!(message.contains("(100000 bytes)"), "{message}");
    }
    let json = format!(r#"{{"nodes": [], "tasks": [], "{long}": 1}}"#);
    let message = Workload::from_json(&json).unwrap_err().to_string();
    assert!(message.len() < 300, "{} bytes", message.len());
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn garbage_never_panics() {
    // Bytes that are not a workload in either form give errors.
    for input in [
        "",
        "\u{0}",
        "{",
        "}",
        "nodes",
        "[1,2,3]",
        "\"",
        "id,cpus,mem\n,,,\n",
    ] {
        assert!(Workload::from_json(input).is_err(), "{input:?}");
        let _ = Workload::from_csv(input, input);
    }
}
