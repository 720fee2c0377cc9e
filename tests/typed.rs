//! Typed messages (design.md §6.9): plain-old-data values through
//! `zerocopy`'s traits, serde values in postcard's format, and every way a
//! message can fail to be the type asked for: a typed error that gives the
//! message back, never a panic.

// the serde half needs the feature (`bash scripts/test` builds them all)
#![cfg(all(not(loom), feature = "serde"))]

mod common;

use std::time::Duration;

use common::{TempName, child_role, spawn_role, wait_or_kill};
use proptest::prelude::*;
use shmq::{Config, Invalid, Queue, RecvValueError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    side: u32,
}

/// A type aligned to a whole cache line, as the arena's payloads are.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Debug, Clone, Copy, PartialEq)]
#[repr(C, align(64))]
struct Line {
    words: [u64; 8],
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Step {
    actor: u32,
    seq: u64,
    reward: f32,
    done: bool,
    obs: Vec<f32>,
    tag: String,
}

fn queue(tag: &str) -> (TempName, Queue) {
    let name = TempName::new(tag);
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16)).unwrap();
    (name, q)
}

fn step(i: u64, floats: usize) -> Step {
    Step {
        actor: (i % 7) as u32,
        seq: i,
        reward: i as f32 * 0.5,
        done: i.is_multiple_of(3),
        obs: (0..floats).map(|k| (k as f32) * 0.25 + i as f32).collect(),
        tag: format!("step-{i}"),
    }
}

#[test]
fn plain_values_and_slices_cross_as_their_bytes() {
    let (_n, q) = queue("typed-pod");
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let t = Tick {
        seq: 7,
        price: 101.25,
        qty: 3,
        side: 1,
    };
    tx.send_value(&t).unwrap();
    tx.send_value(&t).unwrap();
    tx.send_value(&[1u32, 2, 3, 4][..]).unwrap();
    let line = Line {
        words: [1, 2, 3, 4, 5, 6, 7, 8],
    };
    tx.send_value(&line).unwrap();
    assert_eq!(rx.recv_value::<Tick>().unwrap(), t);
    assert_eq!(*rx.recv_ref::<Tick>().unwrap(), t);
    let s = rx.recv_ref::<[u32]>().unwrap();
    assert_eq!(&*s, &[1, 2, 3, 4]);
    assert_eq!(s.message().len(), 16);
    drop(s);
    // read in place: the arena's payloads are 64-byte aligned
    let l = rx.recv_ref::<Line>().unwrap();
    assert_eq!(*l, line);
    assert_eq!(std::ptr::from_ref::<Line>(&l) as usize % 64, 0);
}

#[test]
fn a_message_of_the_wrong_size_is_an_error_that_gives_it_back() {
    let (_n, q) = queue("typed-size");
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    tx.send(b"seven b").unwrap();
    tx.send(&[0u8; 10]).unwrap();
    tx.send(b"after").unwrap();
    match rx.recv_value::<Tick>() {
        Err(RecvValueError::Invalid(m, Invalid::Size { len: 7, type_name })) => {
            assert_eq!(&**m, b"seven b", "the message is given back whole");
            assert!(type_name.ends_with("Tick"), "{type_name}");
        }
        other => panic!("{other:?}"),
    }
    // 10 bytes are not a whole number of u32s
    let e = rx.recv_ref::<[u32]>().unwrap_err();
    assert!(
        matches!(e, RecvValueError::Invalid(ref m, Invalid::Size { len: 10, .. }) if m.len() == 10),
        "{e:?}"
    );
    assert!(e.to_string().contains("10-byte"), "{e}");
    // the queue goes on
    let mut buf = Vec::new();
    rx.recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"after");
    drop(tx);
    assert!(rx.recv_value::<Tick>().unwrap_err().is_disconnected());
}

#[test]
fn a_send_value_that_fails_gives_the_value_back() {
    let (_n, q) = queue("typed-too-large");
    let tx = q.sender().unwrap();
    let big = vec![7u64; q.capacity_bytes()]; // streamed, but no receiver ever reads it
    drop(q.receiver().unwrap()); // a receiver came and went: disconnected
    let e = tx.send_value(&big[..]).unwrap_err();
    assert!(e.is_disconnected(), "{e:?}");
    assert_eq!(e.into_inner().len(), big.len());
}

#[test]
fn serde_values_cross_small_and_streamed() {
    let (_n, q) = queue("typed-serde");
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let small = step(1, 4);
    tx.send_serde(&small).unwrap();
    assert_eq!(rx.recv_serde::<Step>().unwrap(), small);
    // larger than max_message: streamed while a receiver reads it
    let big = step(2, q.max_message()); // four bytes a float: 4x max_message
    let big2 = big.clone();
    let sender = std::thread::spawn(move || tx.send_serde(&big2).unwrap());
    assert_eq!(rx.recv_serde::<Step>().unwrap(), big);
    sender.join().unwrap();
}

#[test]
fn a_serde_message_that_does_not_decode_is_an_error_that_gives_it_back() {
    let (_n, q) = queue("typed-serde-bad");
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    tx.send(&[0xff; 3]).unwrap(); // a varint that never ends
    tx.send_serde(&(5u32, 6u32)).unwrap(); // decodes as a u32, with bytes left over
    tx.send_serde(&"borrowed").unwrap();
    match rx.recv_serde::<Step>() {
        Err(RecvValueError::Invalid(m, Invalid::Decode(_))) => assert_eq!(&**m, &[0xff; 3]),
        other => panic!("{other:?}"),
    }
    match rx.recv_serde::<u32>() {
        Err(RecvValueError::Invalid(m, Invalid::Size { len, .. })) => assert_eq!(len, m.len()),
        other => panic!("{other:?}"),
    }
    // decoding in place can borrow from the message
    let m = rx.recv_owned().unwrap();
    let s: &str = m.deserialize().unwrap();
    assert_eq!(s, "borrowed");
    assert!(
        m.as_ptr_range().contains(&s.as_ptr()),
        "copied, not borrowed"
    );
}

#[test]
fn typed_messages_cross_processes_to_an_async_receiver() {
    const TEST: &str = "typed_messages_cross_processes_to_an_async_receiver";
    const N: u64 = 20_000;
    if child_role().is_some() {
        let q = Queue::open(&std::env::var("SHMQ_NAME").unwrap()).unwrap();
        let tx = q.sender().unwrap();
        for i in 0..N {
            if i.is_multiple_of(2) {
                let t = Tick {
                    seq: i,
                    price: i as f64 / 4.0,
                    qty: (i % 100) as u32,
                    side: (i % 2) as u32,
                };
                tx.send_value(&t).unwrap();
            } else {
                tx.send_serde(&step(i, (i % 50) as usize)).unwrap();
            }
        }
        return;
    }
    let name = TempName::new("typed-xproc");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 18)).unwrap();
    let rx = q.receiver().unwrap();
    let mut child = spawn_role(TEST, "producer", &[("SHMQ_NAME", name.0.clone())]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..N {
            let m = rx.recv_async().await.unwrap();
            if i.is_multiple_of(2) {
                let t = m.value_ref::<Tick>().unwrap();
                assert_eq!((t.seq, t.qty), (i, (i % 100) as u32));
            } else {
                assert_eq!(m.deserialize::<Step>().unwrap(), step(i, (i % 50) as usize));
            }
        }
    });
    let st = wait_or_kill(&mut child, Duration::from_secs(120), "typed producer");
    assert!(st.success(), "{st}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever bytes arrive, a typed receive returns a value or a typed
    /// error; it never panics or reads out of bounds.
    #[test]
    fn any_bytes_give_a_value_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (_n, q) = queue("typed-any");
        let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
        for _ in 0..4 {
            tx.send(&bytes).unwrap();
        }
        match rx.recv_value::<Tick>() {
            Ok(t) => prop_assert_eq!(t.as_bytes(), &bytes[..]),
            Err(RecvValueError::Invalid(m, Invalid::Size { .. })) => prop_assert_eq!(&**m, &bytes[..]),
            Err(e) => prop_assert!(false, "{e:?}"),
        }
        match rx.recv_ref::<[u32]>() {
            Ok(s) => prop_assert_eq!(s.as_bytes(), &bytes[..]),
            Err(RecvValueError::Invalid(m, Invalid::Size { .. })) => prop_assert_eq!(&**m, &bytes[..]),
            Err(e) => prop_assert!(false, "{e:?}"),
        }
        match rx.recv_serde::<Step>() {
            // (some random bytes are a `Step`: a varint may be spelt two ways,
            // so they need not be what `send_serde` would write)
            Ok(_) => {}
            Err(RecvValueError::Invalid(m, Invalid::Decode(_) | Invalid::Size { .. })) => {
                prop_assert_eq!(&**m, &bytes[..])
            }
            Err(e) => prop_assert!(false, "{e:?}"),
        }
        let m = rx.recv_owned().unwrap();
        let _ = m.deserialize::<(String, Vec<u16>, Option<char>)>();
    }
}
