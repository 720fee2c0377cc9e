//! Operation sequences on a real queue checked against the reference model
//! of `tests/common/model.rs` (the same model as the property test).
//!
//! Input: byte 0 picks one or two lanes and the index size; then three bytes
//! per operation (kind and handle, length, commit flag).

#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../tests/common/mod.rs"]
mod common;

use common::model::{MAX, Op, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let lanes = 1 + usize::from(shape & 1);
    let slots = [2, 4, 8, 64][usize::from(shape >> 1) % 4];
    let ops: Vec<Op> = rest
        .chunks_exact(3)
        .take(300)
        .map(|c| {
            let h = usize::from(c[0] >> 4) % 3;
            let len = (usize::from(c[1]) * 3) % (MAX + 1);
            match c[0] % 5 {
                0 => Op::Send { h, len },
                1 => Op::Reserve {
                    h,
                    len,
                    commit: c[2] & 1 == 1,
                },
                2 => Op::Recv { h },
                3 => Op::Hold { h },
                _ => Op::Release { h },
            }
        })
        .collect();
    if let Err(e) = run(lanes, slots, &ops) {
        panic!("diverged from the reference: {e}\nops: {ops:?}");
    }
});
