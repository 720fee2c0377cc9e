//! What the bridge tests share: a `nats-server` of their own, bridge
//! processes, and checksummed messages that say who sent them and when.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set in CI: a missing `nats-server` fails the tests instead of skipping.
const REQUIRE: &str = "SHMQ_REQUIRE_NATS";

/// A `nats-server` with JetStream on a free loopback port, storing in a
/// directory of its own; killed (and the directory removed) on drop.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: PathBuf,
    extra: Vec<String>,
    /// The network namespace it runs in (`None`: this one).
    netns: Option<String>,
    log: PathBuf,
}

impl NatsServer {
    /// Starts one, or returns `None` after saying why the test is skipped.
    pub fn start(tag: &str, extra: &[&str]) -> Option<Self> {
        Self::start_in(tag, extra, None)
    }

    /// [`start`](Self::start) inside network namespace `netns`,
    /// listening on every address there.
    pub fn start_in(tag: &str, extra: &[&str], netns: Option<&str>) -> Option<Self> {
        let Some(bin) = nats_server_binary() else {
            let why = "nats-server is not installed (apt-get install nats-server)";
            assert!(std::env::var_os(REQUIRE).is_none(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let _ = bin;
        let port = free_port();
        let store = std::env::temp_dir().join(format!("shmq-nats-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        let log = store.with_extension("log");
        let mut s = Self {
            child: None,
            port,
            store,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            netns: netns.map(str::to_owned),
            log,
        };
        s.restart();
        Some(s)
    }

    /// The URL bridges on this host connect to.
    pub fn url(&self) -> String {
        self.url_at("127.0.0.1")
    }

    /// Its URL at address `addr`.
    pub fn url_at(&self, addr: &str) -> String {
        format!("nats://{addr}:{}", self.port)
    }

    /// Kills it with SIGKILL (its file store stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again), on the same port and store, and waits until it
    /// accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
        let bin = nats_server_binary().expect("checked");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns])
                    .arg(bin)
                    .args(["-a", "0.0.0.0"]);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.args(["-a", "127.0.0.1"]);
                c
            }
        };
        let child = cmd
            .args(["-js", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .arg("-l")
            .arg(&self.log)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("Server is ready")
        {
            assert!(
                Instant::now() < until,
                "nats-server did not start:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
        let _ = std::fs::remove_file(&self.log);
    }
}

fn nats_server_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// A `shmq bridge` process, its JSON log in a file; killed on drop.
pub struct Bridge {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Bridge {
    /// `shmq bridge ARGS... --json --status-every 0.5`.
    pub fn start(tag: &str, args: &[&str]) -> Self {
        Self::start_with_env(tag, args, &[])
    }

    /// [`start`](Self::start) with more environment variables.
    pub fn start_with_env(tag: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(tag, args, env, None)
    }

    /// [`start_with_env`](Self::start_with_env) inside network namespace
    /// `netns` (through `ip netns exec`, which execs it: same pid).
    pub fn start_in(tag: &str, args: &[&str], env: &[(&str, &str)], netns: Option<&str>) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("shmq-bridge-{tag}-{}-{n}.log", std::process::id()));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_shmq")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_shmq")),
        };
        let child = cmd
            .arg("bridge")
            .args(args)
            .args(["--json", "--status-every", "0.5"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start shmq bridge");
        Self {
            child: Some(child),
            log,
        }
    }

    /// Every JSON event it logged so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The log as text, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it logged an event whose `msg` contains `what`.
    pub fn wait_for(&self, what: &str, limit: Duration) {
        let until = Instant::now() + limit;
        while !self
            .events()
            .iter()
            .any(|e| e["msg"].as_str().is_some_and(|m| m.contains(what)))
        {
            assert!(
                Instant::now() < until,
                "bridge never said `{what}`:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and its exit status (within `limit`, else it is killed and
    /// the test fails).
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        wait_within(&mut c, limit)
            .unwrap_or_else(|| panic!("bridge ignored SIGTERM:\n{}", self.log_text()))
    }

    /// Waits for it to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        wait_within(&mut c, limit)
            .unwrap_or_else(|| panic!("bridge did not exit:\n{}", self.log_text()))
    }
}

fn wait_within(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > until {
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A queue name private to this test process.
pub fn queue_name(tag: &str) -> String {
    format!("shmq-bridge-test-{tag}-{}", std::process::id())
}

/// Message `seq` of `producer`: a header (producer, seq, checksum) and
/// `len` bytes derived from both.
pub fn message(producer: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + len);
    m.extend_from_slice(&producer.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&[0; 8]);
    let mut x = u64::from(producer) << 40 ^ seq ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.push(x as u8);
    }
    let sum = fnv(&m[20..]);
    m[12..20].copy_from_slice(&sum.to_le_bytes());
    m
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// What a consumer saw: every message checked, duplicates and order
/// breaks counted.
#[derive(Debug, Default)]
pub struct Tally {
    seen: HashMap<(u32, u64), u32>,
    last: HashMap<u32, u64>,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Tally {
    /// Checks and counts one message (panics on a corrupt one).
    pub fn add(&mut self, m: &[u8]) {
        assert!(m.len() >= 20, "a message of {} bytes", m.len());
        let producer = u32::from_le_bytes(m[0..4].try_into().unwrap());
        let seq = u64::from_le_bytes(m[4..12].try_into().unwrap());
        let sum = u64::from_le_bytes(m[12..20].try_into().unwrap());
        assert_eq!(fnv(&m[20..]), sum, "message {producer}/{seq} corrupt");
        let n = self.seen.entry((producer, seq)).or_insert(0);
        *n += 1;
        if *n > 1 {
            self.duplicates += 1;
            return;
        }
        let last = self.last.entry(producer).or_insert(0);
        if seq < *last {
            self.out_of_order += 1;
        }
        *last = (*last).max(seq);
    }

    /// Distinct messages seen.
    pub fn distinct(&self) -> usize {
        self.seen.len()
    }

    /// The messages of `producers` × `0..per` never seen.
    pub fn missing(&self, producers: u32, per: u64) -> Vec<(u32, u64)> {
        (0..producers)
            .flat_map(|p| (0..per).map(move |s| (p, s)))
            .filter(|k| !self.seen.contains_key(k))
            .collect()
    }
}

/// Three "hosts" as network namespaces (`scripts/netns-hosts`): A
/// (producers, push), S (the server), C (pull, consumers). Removed on drop.
pub struct Hosts {
    prefix: String,
}

impl Hosts {
    /// Creates them, or returns `None` after saying why (not root, no
    /// `ip`), for the caller to fall back to loopback.
    pub fn up() -> Option<Self> {
        // interface names are at most 15 bytes: "sq" + pid + "-as"
        let prefix = format!("sq{}", std::process::id());
        let out = Command::new("bash")
            .arg(script())
            .args(["up", &prefix])
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { prefix }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED PART: no network namespaces ({}): hosts fall back to loopback, links are not cut",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                let _ = Command::new("bash")
                    .arg(script())
                    .args(["down", &prefix])
                    .status();
                None
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED PART: no network namespaces ({e}): hosts fall back to loopback, links are not cut"
                );
                None
            }
        }
    }

    /// The namespace of host `h` (`a`, `s` or `c`).
    pub fn ns(&self, h: char) -> String {
        format!("{}-{h}", self.prefix)
    }

    /// Takes the link between S and `side` (`a` or `c`) down.
    pub fn cut(&self, side: char) {
        self.link("cut", side);
    }

    /// Brings it up again.
    pub fn mend(&self, side: char) {
        self.link("mend", side);
    }

    fn link(&self, what: &str, side: char) {
        let ok = Command::new("bash")
            .arg(script())
            .args([what, &self.prefix, &side.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "netns-hosts {what} {side}");
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.prefix])
            .status();
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/netns-hosts")
}
