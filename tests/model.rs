//! Model-based property test: random operation sequences on a real queue,
//! checked step by step against the reference in `common/model.rs`.

#![cfg(not(loom))]

mod common;

use common::model::{MAX, Op, run};
use proptest::prelude::*;

fn op(max: usize) -> impl Strategy<Value = Op> {
    let len = prop_oneof![3 => 0..=128usize, 1 => 0..=max];
    prop_oneof![
        4 => (0..3usize, len.clone()).prop_map(|(h, len)| Op::Send { h, len }),
        2 => (0..3usize, len, any::<bool>())
            .prop_map(|(h, len, commit)| Op::Reserve { h, len, commit }),
        3 => (0..3usize).prop_map(|h| Op::Recv { h }),
        2 => (0..3usize).prop_map(|h| Op::Hold { h }),
        1 => (0..3usize).prop_map(|h| Op::Release { h }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1024),
        ..ProptestConfig::default()
    })]

    #[test]
    fn one_lane_matches_the_reference(
        slots in prop_oneof![Just(2usize), Just(4), Just(64)],
        ops in prop::collection::vec(op(MAX), 1..200),
    ) {
        run(1, slots, &ops).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn two_lanes_match_the_reference(
        slots in prop_oneof![Just(4usize), Just(64)],
        ops in prop::collection::vec(op(MAX), 1..200),
    ) {
        run(2, slots, &ops).map_err(TestCaseError::fail)?;
    }
}
