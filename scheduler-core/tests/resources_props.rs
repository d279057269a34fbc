//! Property tests of the resource arithmetic and text form.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use berth_scheduler_core::{Allocated, PortRanges, Resources, Scalar};
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        (0..10_000u64).prop_map(|m| Scalar::from_milli(m).unwrap()),
        (0..=Scalar::MAX_MILLI).prop_map(|m| Scalar::from_milli(m).unwrap()),
    ]
}

fn ports() -> impl Strategy<Value = PortRanges> {
    prop::collection::vec((0..200u64, 0..20u64), 0..5).prop_map(|v| {
        let ranges: Vec<(u64, u64)> = v.into_iter().map(|(b, len)| (b, b + len)).collect();
        PortRanges::from_ranges(&ranges).unwrap()
    })
}

fn resources() -> impl Strategy<Value = Resources> {
    (scalar(), scalar(), scalar(), scalar(), ports()).prop_map(|(cpus, mem, disk, gpus, ports)| {
        Resources {
            cpus,
            mem,
            disk,
            gpus,
            ports,
        }
    })
}

fn port_set(p: &PortRanges) -> BTreeSet<u16> {
    p.ranges().iter().flat_map(|&(b, e)| b..=e).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn text_round_trip(r in resources()) {
        let text = r.to_string();
        let back: Resources = text.parse().unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn serde_round_trip(r in resources()) {
        let json = serde_json::to_string(&r).unwrap();
        prop_assert_eq!(serde_json::from_str::<Resources>(&json).unwrap(), r);
    }

    #[test]
    fn add_then_sub_is_identity(a in resources(), b in resources()) {
        // Ports of a sum are a union, so only disjoint ports round-trip.
        let b = Resources { ports: b.ports.checked_sub(&b.ports.intersection(&a.ports)).unwrap(), ..b };
        if let Ok(sum) = a.checked_add(&b) {
            prop_assert!(sum.contains(&a) && sum.contains(&b));
            prop_assert_eq!(sum.checked_sub(&b).unwrap(), a);
        }
    }

    #[test]
    fn port_ops_match_sets(a in ports(), b in ports(), n in 0..50u64) {
        let (sa, sb) = (port_set(&a), port_set(&b));
        prop_assert_eq!(port_set(&a.union(&b)), sa.union(&sb).copied().collect::<BTreeSet<_>>());
        prop_assert_eq!(port_set(&a.intersection(&b)), sa.intersection(&sb).copied().collect::<BTreeSet<_>>());
        prop_assert_eq!(port_set(&a.difference(&b)), sa.difference(&sb).copied().collect::<BTreeSet<_>>());
        prop_assert_eq!(a.contains(&b), sb.is_subset(&sa));
        prop_assert_eq!(a.count(), sa.len() as u64);
        match a.take_first(n) {
            Some(t) => prop_assert_eq!(port_set(&t), sa.iter().copied().take(n as usize).collect::<BTreeSet<_>>()),
            None => prop_assert!(sa.len() < n as usize),
        }
        // Ranges stay sorted, disjoint and coalesced.
        for w in a.union(&b).ranges().windows(2) {
            prop_assert!(u32::from(w[0].1) + 1 < u32::from(w[1].0));
        }
    }

    #[test]
    fn take_preserves_total(res in resources(), unres in resources(), want in resources()) {
        let mut a = Allocated { unreserved: unres, reserved: res };
        let before = a.clone();
        match a.take(&want) {
            Some(got) => {
                prop_assert_eq!(got.total(), want);
                prop_assert!(before.reserved.contains(&got.reserved));
                prop_assert!(before.unreserved.contains(&got.unreserved));
                prop_assert_eq!(a.reserved.checked_add(&got.reserved).unwrap().cpus, before.reserved.cpus);
            }
            None => {
                prop_assert!(!before.total().contains(&want));
                prop_assert_eq!(a, before);
            }
        }
    }

    #[test]
    fn from_f64_never_panics(v in any::<f64>()) {
        if let Ok(s) = Scalar::from_f64("cpus", v) {
            prop_assert!(s.milli() <= Scalar::MAX_MILLI);
            prop_assert!(v >= 0.0 && v.is_finite());
        }
    }
}
