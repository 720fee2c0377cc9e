//! The wait of an async task (design.md §5.4): a task announces itself on
//! a futex word (`announce_sleeper`, the first half of `Ring::park`),
//! re-checks, and hands the epoch it read to a waker thread (a reactor
//! shard) that already sleeps on the word; the shard wakes the task when
//! the word's epoch differs from the task's (`registration_due`). A lost
//! wake-up is a loom deadlock: the task waits for its waker for ever.
//!
//! The shard here is the reactor's loop reduced to one word that it watches
//! from the start (the case where a registration wakes nobody): under its
//! lock it loads the epoch, fires a due registration, and otherwise sleeps
//! on the word at the epoch it loaded (the modelled futex).

#![cfg(loom)]

use std::time::Duration;

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use loom_tests::check;
use shmq::__loom::{
    WaitWord, announce_sleeper, futex_wait, futex_wake, registration_due, wake_word,
    withdraw_sleeper,
};

/// The reactor's table, for one word: the task's registration, whether it
/// was fired (its waker called), and the end of the model.
#[derive(Default)]
struct Table {
    registered: Option<u32>,
    woken: bool,
    quit: bool,
}

#[derive(Default)]
struct World {
    word: WaitWord,
    /// The message the task waits for (a publish, Release).
    published: AtomicU32,
    table: Mutex<Table>,
    /// The task's waker.
    waker: Condvar,
}

/// The shard: fire the registration once its word moved, else sleep on the
/// word at the epoch just loaded.
fn shard(w: &World) {
    loop {
        let t = w.table.lock().unwrap();
        if t.quit {
            return;
        }
        let cur = w.word.epoch.load(Ordering::Acquire);
        if let Some(e) = t.registered
            && registration_due(e, cur, Duration::ZERO, Duration::ZERO)
        {
            let mut t = t;
            t.woken = true;
            w.waker.notify_all();
            return;
        }
        drop(t);
        let _ = futex_wait(&w.word.epoch, cur, Duration::MAX);
    }
}

/// The task: announce, re-check, register (as `reactor::register`: not if
/// the word moved since the task read it), wait for the waker, and poll
/// again until it finds the message.
fn task(w: &World) {
    loop {
        let e = announce_sleeper(&w.word);
        if w.published.load(Ordering::Acquire) == 1 {
            withdraw_sleeper(&w.word);
            // end the shard, which may sleep on the word
            w.table.lock().unwrap().quit = true;
            w.word.epoch.fetch_add(1, Ordering::Release);
            futex_wake(&w.word.epoch, u32::MAX);
            return;
        }
        let mut t = w.table.lock().unwrap();
        if w.word.epoch.load(Ordering::Acquire) != e {
            // `Registered::Moved`: look again
            drop(t);
            withdraw_sleeper(&w.word);
            continue;
        }
        t.registered = Some(e);
        while !t.woken {
            t = w.waker.wait(t).unwrap();
        }
        drop(t);
        withdraw_sleeper(&w.word);
        // the next poll finds the message the wake-up was for
        assert_eq!(w.published.load(Ordering::Acquire), 1, "woken for nothing");
        return;
    }
}

/// One execution: a shard, a publisher, and the task on this thread;
/// `before_publish` runs on this thread after the shard starts.
fn run(before_publish: fn(&World)) {
    let w = Arc::new(World::default());
    let s = {
        let w = Arc::clone(&w);
        thread::spawn(move || shard(&w))
    };
    before_publish(&w);
    let p = {
        let w = Arc::clone(&w);
        thread::spawn(move || {
            w.published.store(1, Ordering::Release);
            wake_word(&w.word, 1);
        })
    };
    task(&w);
    p.join().unwrap();
    s.join().unwrap();
}

#[test]
fn a_registered_task_is_woken_by_the_publish_it_waits_for() {
    check("task_wait", || run(|_| {}));
}

#[test]
fn a_task_registered_after_the_epoch_moved_is_still_woken() {
    // An earlier bump the shard may or may not have slept through before
    // the task reads the epoch and registers; the publish must reach it.
    check("task_wait_late", || {
        run(|w| {
            w.word.epoch.fetch_add(1, Ordering::Release);
        })
    });
}
