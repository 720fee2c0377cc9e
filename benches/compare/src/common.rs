//! What every cell shares: pinning, peak RSS, the payload fill and checks,
//! the peer process and its control pipe, and the three measurement loops
//! (one-way receiver, one-way sender, ping-pong) written once over two small
//! traits that each transport implements.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::RawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// The error type of the cell processes: any error ends the cell loudly.
pub type Res<T> = Result<T, Box<dyn Error>>;

/// The stop marker every transport sends after the last message: a message
/// of one byte (every measured size is at least 8 bytes).
pub const STOP: [u8; 1] = [0xff];

/// A message above this size is written from one chunk of this size that
/// the sender fills, written again and again (shmq's stream fragment size):
/// the same work for every transport that takes a message in pieces.
pub const CHUNK: usize = 256 << 10;

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is a plain bit set for which all-zeroes is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let cpu = cpu % online_cpus();
    // SAFETY: CPU_SET writes one bit inside `set`; `cpu` is below the number
    // of CPUs, far below the set's 1024 bits.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given; pid 0 = the
    // calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        eprintln!("warning: sched_setaffinity(cpu {cpu}) failed");
    }
}

/// CPUs online on the machine (not narrowed by this process's affinity,
/// which the peer inherits from the pinned main process).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf reads a system value and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 { 1 } else { n as usize }
}

/// Peak resident set of this process, KiB: `VmHWM` of /proc/self/status.
/// Not `getrusage`'s `ru_maxrss`, which Linux carries over from the parent
/// across `exec`, so a peer would report at least its spawner's peak.
pub fn max_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The byte every position of message `seq` holds (never 0, period 251, so
/// a lost, repeated or reordered message fails the check).
#[inline]
pub fn pattern(seq: u64) -> u8 {
    (seq % 251) as u8 + 1
}

/// The sender's fill, the same for every transport: every byte of the
/// message is written with `pattern(seq)`.
#[inline]
pub fn fill(buf: &mut [u8], seq: u64) {
    buf.fill(pattern(seq));
}

/// Copy-out check: the length, the first, middle and last byte (the copy
/// itself has read every byte).
#[inline]
pub fn check_copy(buf: &[u8], size: usize, seq: u64) -> Res<()> {
    let p = pattern(seq);
    if buf.len() != size || buf[0] != p || buf[size / 2] != p || buf[size - 1] != p {
        return Err(mismatch(buf, size, seq));
    }
    Ok(())
}

/// Zero-copy read: the wrapping sum of every 8-byte word (then of the tail
/// bytes), so every byte of the message is loaded in place.
#[inline]
pub fn sum_words(buf: &[u8]) -> u64 {
    let mut words = buf.chunks_exact(8);
    let mut acc = 0u64;
    for w in &mut words {
        acc = acc.wrapping_add(u64::from_ne_bytes(w.try_into().unwrap()));
    }
    for &b in words.remainder() {
        acc = acc.wrapping_add(u64::from(b));
    }
    acc
}

/// What `sum_words` gives for a message of `size` bytes of `pattern(seq)`.
/// Distinct for every pattern at every size up to 2^56 words: the word
/// count times an odd constant times a pattern difference below 256 is
/// never a multiple of 2^64.
pub fn expected_sum(size: usize, seq: u64) -> u64 {
    let p = pattern(seq);
    let word = u64::from_ne_bytes([p; 8]);
    ((size / 8) as u64)
        .wrapping_mul(word)
        .wrapping_add((size % 8) as u64 * u64::from(p))
}

/// Zero-copy check: reads every byte in place and compares the sum, and
/// the first and last byte.
#[inline]
pub fn check_in_place(buf: &[u8], size: usize, seq: u64) -> Res<()> {
    let p = pattern(seq);
    if buf.len() != size
        || buf[0] != p
        || buf[size - 1] != p
        || sum_words(buf) != expected_sum(size, seq)
    {
        return Err(mismatch(buf, size, seq));
    }
    Ok(())
}

fn mismatch(buf: &[u8], size: usize, seq: u64) -> Box<dyn Error> {
    format!(
        "payload mismatch at message {seq}: expected {size} bytes of {:#04x}, got {} bytes starting {:?}",
        pattern(seq),
        buf.len(),
        &buf[..buf.len().min(16)]
    )
    .into()
}

/// Whether a received message is the stop marker.
#[inline]
pub fn is_stop(msg: &[u8], size: usize) -> bool {
    msg.len() == 1 && size != 1 && msg[0] == STOP[0]
}

/// The sending end of a transport, as the measurement loops use it.
pub trait TxEnd {
    /// Sends message `seq` of `size` bytes, every byte written with `fill`.
    fn send(&mut self, size: usize, seq: u64) -> Res<()>;
    /// Sends the stop marker.
    fn stop(&mut self) -> Res<()>;
}

/// The receiving end of a transport.
pub trait RxEnd {
    /// Receives the next message and checks it is message `seq` of `size`
    /// bytes (copy-out or in place, per the transport's mode). `Ok(false)`
    /// for the stop marker.
    fn recv(&mut self, size: usize, seq: u64) -> Res<bool>;
}

/// How often the one-way loops look at the clock: about every 64 KiB of
/// payload, at least every 256 messages.
pub fn stride(size: usize) -> u64 {
    (65_536 / size.max(1)).clamp(1, 256) as u64
}

/// Result of a one-way run, measured by the receiver.
#[derive(Debug, Clone, Copy)]
pub struct OneWay {
    /// Messages received in all (stop marker not counted).
    pub received: u64,
    /// Messages inside the timed window (the first ~10 % dropped).
    pub timed: u64,
    /// Seconds of the timed window.
    pub secs: f64,
}

/// The one-way receiver: receives until the stop marker, checking every
/// message; times from the first clock mark at or after 10 % of the
/// messages to the stop marker.
pub fn oneway_receive<R: RxEnd>(rx: &mut R, size: usize) -> Res<OneWay> {
    let stride = stride(size);
    let mut marks: Vec<(u64, Instant)> = Vec::with_capacity(1 << 16);
    let mut n = 0u64;
    while rx.recv(size, n)? {
        n += 1;
        if n.is_multiple_of(stride) {
            marks.push((n, Instant::now()));
        }
    }
    let end = Instant::now();
    if n < 10 {
        return Err(format!("only {n} messages arrived: too few to time").into());
    }
    let (from, t0) = marks
        .iter()
        .copied()
        .find(|&(c, _)| c >= n / 10 && c < n)
        .ok_or("no clock mark inside the run")?;
    Ok(OneWay {
        received: n,
        timed: n - from,
        secs: (end - t0).as_secs_f64(),
    })
}

/// The one-way sender: sends for at least `secs` and `min` messages, then
/// the stop marker. Returns the number sent.
///
/// With `SHMQ_COMPARE_INJECT_LOSS` set, message 10 is never sent (the
/// sequence skips it): a test that the receiver's checks fail the cell.
pub fn oneway_send<T: TxEnd>(tx: &mut T, size: usize, secs: f64, min: u64) -> Res<u64> {
    let stride = stride(size);
    let limit = Duration::from_secs_f64(secs);
    let skip = std::env::var_os("SHMQ_COMPARE_INJECT_LOSS").map_or(u64::MAX, |_| 10);
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        if n == skip {
            n += 1;
        }
        tx.send(size, n)?;
        n += 1;
        if n.is_multiple_of(stride) && n >= min && start.elapsed() >= limit {
            break;
        }
    }
    tx.stop()?;
    Ok(n)
}

/// Ping-pong, the timing side: round trips each timed on its own, for at
/// least `secs` and `min` round trips (at most `max`), then the stop
/// marker. Returns the round-trip times in ns, the warm-up dropped.
pub fn pingpong<T: TxEnd, R: RxEnd>(
    tx: &mut T,
    rx: &mut R,
    size: usize,
    secs: f64,
    min: u64,
    max: u64,
) -> Res<Vec<u64>> {
    pingpong_fanout(tx, rx, size, (secs, min, max), 1)
}

/// [`pingpong`] to `replies` echo peers (a fan-out): each round trip ends
/// with the last of the `replies` echoes of its message. `(secs, min,
/// max)` as `pingpong`'s.
pub fn pingpong_fanout<T: TxEnd, R: RxEnd>(
    tx: &mut T,
    rx: &mut R,
    size: usize,
    (secs, min, max): (f64, u64, u64),
    replies: usize,
) -> Res<Vec<u64>> {
    let limit = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut rtts = Vec::with_capacity(max.min(1 << 20) as usize);
    let mut seq = 0u64;
    while seq < max && (seq < min || start.elapsed() < limit) {
        let t = Instant::now();
        tx.send(size, seq)?;
        for _ in 0..replies {
            if !rx.recv(size, seq)? {
                return Err("the echo side sent the stop marker".into());
            }
        }
        rtts.push(t.elapsed().as_nanos() as u64);
        seq += 1;
    }
    tx.stop()?;
    drop_warm_up(&mut rtts);
    Ok(rtts)
}

/// Drops the warm-up of a round-trip series: the first 10 %, and at least
/// the first 16 round trips (the large sizes make few round trips).
pub fn drop_warm_up(rtts: &mut Vec<u64>) {
    let warm = (rtts.len() / 10).max(16).min(rtts.len().saturating_sub(1));
    rtts.drain(..warm);
}

/// Ping-pong, the echo side: answers each message with a fresh message of
/// the same sequence number (written in full) until the stop marker.
/// Returns the number echoed.
pub fn echo<T: TxEnd, R: RxEnd>(tx: &mut T, rx: &mut R, size: usize) -> Res<u64> {
    let mut seq = 0u64;
    while rx.recv(size, seq)? {
        tx.send(size, seq)?;
        seq += 1;
    }
    Ok(seq)
}

/// p50, p99, p99.9 of round-trip times (ns); sorts in place.
pub fn percentiles(v: &mut [u64]) -> (u64, u64, u64) {
    v.sort_unstable();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99), at(0.999))
}

/// The peer process of a cell: the same binary, re-executed with
/// `__peer ARGS`. Control goes both ways through its stdio:
///
/// 1. the peer sets up its end and prints `ready`;
/// 2. the main process finishes its own setup (an iceoryx2 subscriber
///    connects to the new publisher) and writes `go`: only then does the
///    peer send;
/// 3. at the end the peer prints `done COUNT RSS_KIB` and waits for its
///    stdin to close, which the main process does once it has received
///    everything (iceoryx2 drops what a publisher that went left
///    undelivered).
///
/// A thread reads the peer's lines; if the peer ends without `done` (it
/// failed: its error is on the shared stderr) the main process exits at
/// once with a failure instead of waiting for a message that never comes.
pub struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdin: Option<ChildStdin>,
    /// Set when this process ends the peer itself (on its own error path),
    /// so the reader thread does not exit first and hide that error.
    closing: Arc<AtomicBool>,
}

impl Peer {
    /// Starts the peer. `keep` are file descriptors it inherits (their
    /// close-on-exec flag is cleared here; the caller closes its copies).
    pub fn spawn(args: &[String], keep: &[RawFd]) -> Res<Self> {
        for &fd in keep {
            // SAFETY: F_SETFD on a descriptor this process owns changes
            // only its close-on-exec flag.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        let mut child = Command::new(std::env::current_exe()?)
            .arg("__peer")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().ok_or("no peer stdout")?);
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let closing = Arc::new(AtomicBool::new(false));
        let ours = Arc::clone(&closing);
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                let last = line.starts_with("done");
                if tx.send(line).is_err() || last {
                    return;
                }
            }
            if !ours.load(Ordering::SeqCst) {
                eprintln!("the peer process ended before it was done");
                std::process::exit(1);
            }
        });
        Ok(Self {
            child,
            lines,
            stdin,
            closing,
        })
    }

    fn line(&mut self) -> Res<String> {
        Ok(self.lines.recv()?.trim().to_string())
    }

    /// Waits for the peer's `ready` line, then lets it start (`go`).
    pub fn ready(&mut self) -> Res<()> {
        self.ready_then(|| Ok(()))
    }

    /// Waits for the peer's `ready` line, runs `prepare`, then lets the
    /// peer start.
    pub fn ready_then(&mut self, prepare: impl FnOnce() -> Res<()>) -> Res<()> {
        match self.line()?.as_str() {
            "ready" => {}
            other => return Err(format!("unexpected line from the peer: {other:?}").into()),
        }
        prepare()?;
        let stdin = self.stdin.as_mut().ok_or("peer stdin closed")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the peer's `done` line and its exit: (count, peak RSS KiB).
    pub fn done(mut self) -> Res<(u64, u64)> {
        let line = self.line()?;
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() != 3 || w[0] != "done" {
            return Err(format!("unexpected line from the peer: {line:?}").into());
        }
        drop(self.stdin.take()); // lets the peer exit
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("the peer process failed: {status}").into());
        }
        Ok((w[1].parse()?, w[2].parse()?))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Only reached with the child still running on an error path.
        self.closing.store(true, Ordering::SeqCst);
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The peer side of the control pipe: `ready`, then waits for `go`.
pub fn peer_ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
}

/// The extra arguments of a fan-out cell's further peers: subscriber (one
/// way) or echo (round trip) number `k`.
pub fn fanout_args(k: usize) -> Vec<String> {
    vec!["fanout".into(), k.to_string()]
}

/// Which further peer of a fan-out cell this process is (from
/// [`fanout_args`]), pinned to CPU `k mod 2` (the main process is on CPU
/// 0 and the first peer on CPU 1: further ones take turns); `None` for
/// the first peer.
pub fn fanout_role(extra: &[String]) -> Res<Option<usize>> {
    match extra {
        [role, k] if role == "fanout" => {
            let k: usize = k.parse()?;
            pin(k % online_cpus().max(1));
            Ok(Some(k))
        }
        [] => Ok(None),
        other => Err(format!("unexpected peer arguments {other:?}").into()),
    }
}

/// Starts the further peers of a fan-out cell (`1..n`) and waits until
/// each is ready (it has subscribed), letting each go at once.
pub fn spawn_fanout(cell_args: impl Fn(&[String]) -> Vec<String>, n: usize) -> Res<Vec<Peer>> {
    let mut peers = Vec::new();
    for k in 1..n {
        let mut p = Peer::spawn(&cell_args(&fanout_args(k)), &[])?;
        p.ready()?;
        peers.push(p);
    }
    Ok(peers)
}

/// The peer's last line: the count and its peak RSS; then waits until the
/// main process closes our stdin (it has received everything).
pub fn peer_done(count: u64) {
    println!("done {count} {}", max_rss_kib());
    let _ = std::io::stdout().flush();
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
}

/// Makes the calling (peer) process die with its parent, so a failed cell
/// leaves no busy-polling orphan behind.
pub fn die_with_parent() {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// Human size: 8 B, 64 KiB, 16 MiB.
pub fn human(n: usize) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}
