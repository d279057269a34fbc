use super::*;

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[test]
fn deterministic_per_seed() {
    for preset in TracePreset::ALL {
        let config = TraceConfig::new(preset, 200, 7);
        let a = trace_like(&config);
        assert_eq!(a, trace_like(&config), "{preset}");
        let other = trace_like(&TraceConfig { seed: 8, ..config });
        assert_ne!(a, other, "{preset}");
        assert_eq!(a.nodes.len(), 200);
        assert!(a.check_ids().is_ok(), "{preset}");
    }
}

#[test]
fn fills_the_lower_bound_to_the_target() {
    use crate::placement::lower_bound;
    for preset in TracePreset::ALL {
        for fill in [0.5, 0.9] {
            let w = trace_like(&TraceConfig {
                fill,
                ..TraceConfig::new(preset, 1_000, 3)
            });
            let caps: Vec<_> = w.nodes.iter().map(Node::resources).collect();
            let bound = lower_bound(&caps, &w.total_demand()).expect("fits in the cluster");
            // Stops at the first task that would pass the target; a task is
            // far smaller than a node.
            let want = (fill * 1_000.0) as usize;
            assert!(
                (want - 1..=want).contains(&bound),
                "{preset} fill {fill}: bound {bound}"
            );
            if preset == TracePreset::Alibaba {
                // Identical nodes: `fill` of the capacity in the most
                // demanded dimension.
                let (d, c) = (w.total_demand(), w.total_capacity());
                let cpu = d.cpus.milli() as f64 / c.cpus.milli() as f64;
                let mem = d.mem.milli() as f64 / c.mem.milli() as f64;
                let most = cpu.max(mem);
                assert!(
                    (fill - 0.01..=fill).contains(&most),
                    "{preset} fill {fill}: cpu {cpu:.3}, mem {mem:.3}"
                );
            }
            if fill == 0.9 {
                // 300,000 to 500,000 tasks on 10,000 nodes.
                let tasks_per_node = w.tasks.len() as f64 / 1_000.0;
                assert!(
                    (30.0..=50.0).contains(&tasks_per_node),
                    "{preset}: {tasks_per_node} tasks per node"
                );
            }
        }
    }
}

#[test]
fn machine_shares_match_the_preset() {
    for preset in TracePreset::ALL {
        let w = trace_like(&TraceConfig::new(preset, 20_000, 1));
        let units = preset.units();
        let total: f64 = preset.machines().iter().map(|m| m.share).sum();
        for m in preset.machines() {
            let (cpus, mem_gib) = (
                (m.cpus * units.cpus).round() as u64,
                (m.mem * units.mem_gib).round() as u64,
            );
            let shape = format!("c{cpus}m{mem_gib}");
            let count = w
                .nodes
                .iter()
                .filter(|n| n.attributes.get("shape") == Some(&shape))
                .count();
            let share = count as f64 / w.nodes.len() as f64;
            let want = m.share / total;
            // Binomial: four standard deviations, plus a little.
            let tolerance = 4.0 * (want * (1.0 - want) / 20_000.0).sqrt() + 1e-3;
            assert!(
                (share - want).abs() <= tolerance,
                "{preset} {shape}: {share:.4} of nodes, want {want:.4}"
            );
            let node = w.nodes.iter().find(|n| n.attributes["shape"] == shape);
            if let Some(n) = node {
                assert_eq!(n.cpus, Scalar::from_units(cpus));
                assert_eq!(n.mem, Scalar::from_units(mem_gib * 1024));
            }
        }
    }
    // The Google 2011 majority shape, 0.5 / 0.5, is 32 cpus and 128 GiB.
    let w = trace_like(&TraceConfig::new(TracePreset::Google, 1_000, 1));
    let majority = w
        .nodes
        .iter()
        .filter(|n| n.attributes["shape"] == "c32m128")
        .count();
    assert!((480..=590).contains(&majority), "{majority}");
    let alibaba = trace_like(&TraceConfig::new(TracePreset::Alibaba, 100, 1));
    assert!(
        alibaba
            .nodes
            .iter()
            .all(|n| n.cpus == Scalar::from_units(96))
    );
}

#[test]
fn request_medians_are_the_configured_ones() {
    let w = trace_like(&TraceConfig::new(TracePreset::Google, 2_000, 5));
    let mut cpus: Vec<f64> = w.tasks.iter().map(|t| t.cpus.to_f64()).collect();
    let mut mem: Vec<f64> = w.tasks.iter().map(|t| t.mem.to_f64() / 1024.0).collect();
    // Tasks come in jobs of identical tasks, so the sample is clumpy: 15%.
    let (c, m) = (median(&mut cpus), median(&mut mem));
    assert!((c / 0.64 - 1.0).abs() < 0.15, "cpu median {c}");
    assert!((m / 2.048 - 1.0).abs() < 0.15, "mem median {m}");
    // Requests are capped at a quarter of the 64-cpu / 256 GiB machine.
    assert!(cpus.iter().all(|c| *c <= 16.0) && mem.iter().all(|m| *m <= 64.0));

    let w = trace_like(&TraceConfig::new(TracePreset::Alibaba, 2_000, 5));
    let of = |prefix: &str| -> Vec<&Task> {
        w.tasks
            .iter()
            .filter(|t| t.id.as_str().starts_with(prefix))
            .collect()
    };
    let (containers, batch) = (of("container-"), of("batch-"));
    assert_eq!(containers.len() + batch.len(), w.tasks.len());
    // Containers ask for whole cores, 4 the most common.
    assert!(containers.iter().all(|t| t.cpus.milli() % 1000 == 0));
    let fours = containers
        .iter()
        .filter(|t| t.cpus == Scalar::from_units(4))
        .count();
    let share = fours as f64 / containers.len() as f64;
    assert!(
        (0.3..0.6).contains(&share),
        "{share} of containers at 4 cores"
    );
    let mut batch_cpus: Vec<f64> = batch.iter().map(|t| t.cpus.to_f64()).collect();
    let mut batch_mem: Vec<f64> = batch.iter().map(|t| t.mem.to_f64() / 1024.0).collect();
    let (c, m) = (median(&mut batch_cpus), median(&mut batch_mem));
    assert!((c - 1.0).abs() < 0.15, "batch cpu median {c}");
    assert!((m / 3.5 - 1.0).abs() < 0.15, "batch mem median {m}");
}

#[test]
fn cpu_and_memory_are_correlated_as_configured() {
    // Log-space correlation of the Google class, whose requests are
    // uncapped in the bulk: near ρ = 0.5 (jobs make the sample clumpy).
    let w = trace_like(&TraceConfig::new(TracePreset::Google, 2_000, 9));
    let xs: Vec<(f64, f64)> = w
        .tasks
        .iter()
        .map(|t| (t.cpus.to_f64().ln(), t.mem.to_f64().ln()))
        .collect();
    let n = xs.len() as f64;
    let (mx, my) = (
        xs.iter().map(|p| p.0).sum::<f64>() / n,
        xs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov = xs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>();
    let vx = xs.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
    let vy = xs.iter().map(|p| (p.1 - my).powi(2)).sum::<f64>();
    let rho = cov / (vx * vy).sqrt();
    assert!((0.35..0.65).contains(&rho), "rho {rho}");
}

#[test]
fn presets_parse_and_reject_unknown_names() {
    for p in TracePreset::ALL {
        assert_eq!(p.name().parse::<TracePreset>(), Ok(p));
    }
    let err = "borg".parse::<TracePreset>().unwrap_err();
    assert!(err.contains("google, alibaba, mixed"), "{err}");
}

#[test]
fn normal_cdf_is_accurate() {
    for (z, want) in [
        (0.0, 0.5),
        (1.0, 0.841_344_7),
        (-1.96, 0.024_997_9),
        (3.0, 0.998_650_1),
    ] {
        assert!((normal_cdf(z) - want).abs() < 1e-6, "Φ({z})");
    }
}
