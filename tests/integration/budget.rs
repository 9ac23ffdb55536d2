//! The shared rate budget (issue 14): host ledgers drawn from by four budgets and by two
//! processes stay within one rate together, credentials do not share, garbage and locks of
//! killed processes stall nobody, the secret is never written; a real `redis-server` on a
//! loopback port shares the budget between two clients, is refused when unreachable at the
//! start and lost when killed mid-run. Child processes are this test binary itself, running
//! the ignored helper test [`child_helper`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imkit_batch::Exit;
use imkit_batch::budget::{Budget, BudgetError, BudgetScope, Draw, Gcra, LedgerKey};

const BASE_URL: &str = "https://imkit.example.test";
/// The pace of the sharing tests: 50/s, burst 4.
const RATE: u32 = 50;
const BURST: u32 = 4;

fn gcra() -> Gcra {
    Gcra::new(Duration::from_secs(1) / RATE, BURST)
}

/// One request per 10 s: a second draw within a test's lifetime is always refused, however
/// loaded the machine, so a refusal is the proof of a shared state.
fn slow() -> Gcra {
    Gcra::new(Duration::from_secs(10), 1)
}

fn key(secret: &str) -> LedgerKey {
    LedgerKey::new(BASE_URL, &[secret])
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Draws greedily from `b` from wall time `start_us` to `end_us`; the times of the grants.
async fn draw_between(b: &Budget, start_us: u64, end_us: u64) -> Vec<u64> {
    tokio::time::sleep(Duration::from_micros(start_us.saturating_sub(now_us()))).await;
    let mut grants = Vec::new();
    loop {
        b.acquire().await.expect("draw");
        let t = now_us();
        if t >= end_us {
            return grants;
        }
        grants.push(t);
    }
}

/// Checks that the grants of every participant together hold at most the rate and the
/// burst in any one-second window (and one more for the time between a grant and its
/// timestamp), that each participant had a share, and that together they got close to the
/// rate; returns the achieved rate.
fn assert_shared_within_rate(what: &str, parts: &[Vec<u64>]) -> f64 {
    for (i, p) in parts.iter().enumerate() {
        // Fairness is not promised (whoever takes the lock first wins a slot), but each
        // draws from the same budget all along.
        assert!(
            p.len() >= 3,
            "{what}: participant {i} got only {} grants",
            p.len()
        );
    }
    let mut all: Vec<u64> = parts.iter().flatten().copied().collect();
    all.sort_unstable();
    let most = (0..all.len())
        .map(|i| {
            all[i..]
                .iter()
                .take_while(|&&t| t < all[i] + 1_000_000)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        most <= (RATE + BURST + 1) as usize,
        "{what}: {most} grants in one second at {RATE}/s, burst {BURST}"
    );
    let span = (all[all.len() - 1] - all[0]) as f64 / 1e6;
    let achieved = (all.len() - 1) as f64 / span;
    eprintln!(
        "BUDGET {what}: {} grants ({}) in {span:.3}s = {achieved:.1}/s at {RATE}/s; most in 1s: {most}",
        all.len(),
        parts
            .iter()
            .map(|p| p.len().to_string())
            .collect::<Vec<_>>()
            .join(" + ")
    );
    assert!(
        achieved >= 0.9 * f64::from(RATE),
        "{what}: only {achieved:.1}/s together at {RATE}/s"
    );
    achieved
}

/// This test binary, running only the helper test in `mode`.
fn child(mode: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    let mut c = Command::new(exe);
    c.args([
        "--exact",
        "budget::child_helper",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("IMKIT_BUDGET_CHILD", mode)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().expect("spawn the test binary")
}

/// A child process that is killed if the test ends (or fails) before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the other tests run in a child process (`IMKIT_BUDGET_CHILD`): `draw` opens the
/// host budget in `$IMKIT_BUDGET_DIR`, says so, reads two wall times from its standard
/// input, draws between them and prints each grant;
/// `hold` locks the file `$IMKIT_BUDGET_FILE`, says so and sleeps until it is killed.
#[tokio::test]
#[ignore = "a helper: other tests run it in a child process"]
async fn child_helper() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    // Written straight to the descriptor (`println!` may be captured by the harness), each
    // on a line of its own (the harness has written `test NAME ... ` without a newline).
    let say = |line: &str| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "\n{line}")
            .and_then(|()| out.flush())
            .unwrap();
    };
    match var("IMKIT_BUDGET_CHILD").as_str() {
        "draw" => {
            let dir = PathBuf::from(var("IMKIT_BUDGET_DIR"));
            let b = Budget::on_host(&dir, &key(&var("IMKIT_BUDGET_SECRET")), gcra()).unwrap();
            say("READY");
            let mut times = String::new();
            std::io::stdin().read_line(&mut times).unwrap();
            let (start, end) = times.trim().split_once(' ').unwrap();
            let (start, end) = (start.parse().unwrap(), end.parse().unwrap());
            for t in draw_between(&b, start, end).await {
                say(&format!("GRANT {t}"));
            }
        }
        "hold" => {
            let f = std::fs::File::open(var("IMKIT_BUDGET_FILE")).unwrap();
            f.lock().unwrap();
            say("LOCKED");
            std::thread::sleep(Duration::from_secs(60));
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_host_budgets_on_one_credential_share_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("sk_test_four_budgets");
    let start = now_us() + 50_000;
    let end = start + 1_000_000;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        // Each its own open of the file, as four runs would have.
        let b = Budget::on_host(dir.path(), &k, gcra()).unwrap();
        tasks.spawn(async move { draw_between(&b, start, end).await });
    }
    let parts = tasks.join_all().await;
    assert_shared_within_rate("four budgets, one process", &parts);
    let info = Budget::on_host(dir.path(), &k, gcra()).unwrap().info();
    assert_eq!(info.scope, BudgetScope::Host);
    assert!(info.shared());
    assert_eq!(info.burst, BURST);
    assert!((info.per_second - f64::from(RATE)).abs() < 1e-9);
}

#[tokio::test]
async fn a_run_in_another_process_shares_the_host_budget() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sk_test_two_processes";
    let mut other = KillOnDrop(child(
        "draw",
        &[
            ("IMKIT_BUDGET_DIR", dir.path().display().to_string()),
            ("IMKIT_BUDGET_SECRET", secret.to_string()),
        ],
    ));
    let mut lines = BufReader::new(other.0.stdout.take().unwrap()).lines();
    let ready = lines.by_ref().map_while(Result::ok).any(|l| l == "READY");
    assert!(ready, "the child opened its budget");
    // Both start together, however long the child took to start.
    let start = now_us() + 50_000;
    let end = start + 1_000_000;
    let mut stdin = other.0.stdin.take().unwrap();
    writeln!(stdin, "{start} {end}").unwrap();
    drop(stdin);
    let here = Budget::on_host(dir.path(), &key(secret), gcra()).unwrap();
    let mine = draw_between(&here, start, end).await;
    let theirs: Vec<u64> = lines
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("GRANT ")?.parse().ok())
        .collect();
    assert!(other.0.wait().unwrap().success());
    assert_shared_within_rate("two processes", &[mine, theirs]);
}

#[tokio::test]
async fn different_credentials_do_not_share() {
    let dir = tempfile::tempdir().unwrap();
    let a = Budget::on_host(dir.path(), &key("sk_test_a"), slow()).unwrap();
    let other_key = Budget::on_host(dir.path(), &key("sk_test_b"), slow()).unwrap();
    let other_url = Budget::on_host(
        dir.path(),
        &LedgerKey::new("https://elsewhere.example.test", &["sk_test_a"]),
        slow(),
    )
    .unwrap();
    let same = Budget::on_host(dir.path(), &key("sk_test_a"), slow()).unwrap();
    assert_eq!(a.draw().await.unwrap(), Draw::Granted);
    assert!(
        matches!(same.draw().await.unwrap(), Draw::Wait(_)),
        "a is spent"
    );
    assert_eq!(other_key.draw().await.unwrap(), Draw::Granted);
    assert_eq!(other_url.draw().await.unwrap(), Draw::Granted);
    assert_ne!(a.info().ledger, other_key.info().ledger);
    assert_ne!(a.info().ledger, other_url.info().ledger);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

/// The one ledger file in `dir`.
fn ledger_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[tokio::test]
async fn the_secret_is_in_neither_the_file_name_nor_its_content() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("imkit-batch");
    let secret = "sk_live_DO_NOT_WRITE_ME_4f1c9a";
    let b = Budget::on_host(&dir, &key(secret), gcra()).unwrap();
    for _ in 0..3 {
        b.acquire().await.unwrap();
    }
    let file = ledger_file(&dir);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let content = std::fs::read(&file).unwrap();
    for needle in [secret, "DO_NOT_WRITE", "imkit.example"] {
        assert!(!name.contains(needle), "{name}");
        assert!(
            !String::from_utf8_lossy(&content).contains(needle),
            "{content:?}"
        );
    }
    assert!(name.starts_with(key(secret).id()), "{name}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(b.info().ledger, file.display().to_string());
}

#[tokio::test]
async fn garbage_in_the_ledger_is_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let b = Budget::on_host(dir.path(), &key("sk_test_garbage"), slow()).unwrap();
    b.acquire().await.unwrap();
    let file = ledger_file(dir.path());
    let good = std::fs::read(&file).unwrap();
    let far_ahead = String::from_utf8(good.clone())
        .unwrap()
        .replace(|c: char| c.is_ascii_digit(), "9");
    let mut torn = good.clone();
    torn.truncate(good.len() / 2);
    let mut long = good.clone();
    long.extend_from_slice(b"and the rest of a longer record");
    for garbage in [
        Vec::new(),
        torn,
        long,
        b"\x00\xff garbage".to_vec(),
        far_ahead.into_bytes(),
    ] {
        std::fs::write(&file, &garbage).unwrap();
        let t = Instant::now();
        assert_eq!(b.draw().await.unwrap(), Draw::Granted, "after {garbage:?}");
        assert!(t.elapsed() < Duration::from_millis(500));
        let now = std::fs::read(&file).unwrap();
        assert_eq!(now.len(), good.len(), "rewritten whole: {now:?}");
        assert!(
            matches!(b.draw().await.unwrap(), Draw::Wait(_)),
            "state again"
        );
    }
}

#[tokio::test]
async fn a_lock_held_by_a_killed_process_does_not_stall_the_next_draw() {
    let dir = tempfile::tempdir().unwrap();
    let b = Budget::on_host(dir.path(), &key("sk_test_killed"), gcra()).unwrap();
    let file = ledger_file(dir.path());
    let mut holder = KillOnDrop(child(
        "hold",
        &[("IMKIT_BUDGET_FILE", file.display().to_string())],
    ));
    let locked = BufReader::new(holder.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "LOCKED");
    assert!(locked, "the child took the lock");
    let pending = tokio::spawn({
        let b = b.clone();
        async move { b.draw().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "the draw waits for the held lock");
    holder.0.kill().unwrap(); // SIGKILL
    holder.0.wait().unwrap();
    let killed = Instant::now();
    let drawn = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("the draw goes on once the holder is dead")
        .unwrap();
    assert_eq!(drawn.unwrap(), Draw::Granted);
    eprintln!(
        "BUDGET lock of a killed process: next draw {:?} after the kill",
        killed.elapsed()
    );
}

#[tokio::test]
async fn an_unusable_host_dir_is_refused_at_the_start() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let link = root.path().join("a-link");
    std::os::unix::fs::symlink(root.path(), &link).unwrap();
    for dir in [file.join("imkit-batch"), link] {
        let e = Budget::on_host(&dir, &key("sk_test_unusable"), gcra()).unwrap_err();
        assert!(matches!(e, BudgetError::Unreachable { .. }), "{e:?}");
        assert_eq!(e.exit(), Exit::Invalid);
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot reach the rate budget at ")
                && msg.ends_with("nothing was sent"),
            "{msg}"
        );
    }
    // Our own directory, open to others: tightened, not refused.
    let open = root.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    Budget::on_host(&open, &key("sk_test_unusable"), gcra()).unwrap();
    let mode = std::fs::metadata(&open).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

/// A `redis-server` on a free loopback port, in a temp dir, without persistence; killed
/// on drop. Also what `run::shared` runs the binary against.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one, or `None` (with a message) where `redis-server` is not installed and
    /// this is not CI; CI installs it (`.ci/run`), so there its absence fails.
    pub(crate) fn start() -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "redis-server is not installed, and CI must have it (.ci/run installs it)"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        // A port taken between the probe and the server's bind: try another.
        let mut last = String::new();
        for _ in 0..3 {
            match RedisServer::try_start() {
                Ok(s) => return Some(s),
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn try_start() -> Result<RedisServer, String> {
        let port = free_port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut s = RedisServer {
            child: Some(child),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if s.pong() {
                return Ok(s);
            }
            if let Some(c) = s.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(format!("exited with {status} on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("no PONG on port {port} within 10s"))
    }

    fn pong(&self) -> bool {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        c.write_all(b"PING\r\n").is_ok() && c.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on (just now).
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redis_clients_share_the_budget() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let secret = "sk_live_REDIS_SECRET_77a0";
    let a = Budget::redis(&server.url(), &key(secret), gcra())
        .await
        .unwrap();
    let b = Budget::redis(&server.url(), &key(secret), gcra())
        .await
        .unwrap();
    let start = now_us() + 50_000;
    let end = start + 1_000_000;
    let (ga, gb) = tokio::join!(draw_between(&a, start, end), draw_between(&b, start, end));
    assert_shared_within_rate("two Redis clients", &[ga, gb]);
    assert_eq!(a.info().scope, BudgetScope::Redis);
    assert_eq!(a.info().ledger, server.url());
    // Another credential has a budget of its own (drawn at one request per 10 s, so a
    // refusal is certain where the state is shared).
    let url = server.url();
    let (kx, ky) = (key("sk_test_x"), key("sk_test_y"));
    let x1 = Budget::redis(&url, &kx, slow()).await.unwrap();
    let x2 = Budget::redis(&url, &kx, slow()).await.unwrap();
    let y = Budget::redis(&url, &ky, slow()).await.unwrap();
    assert_eq!(x1.draw().await.unwrap(), Draw::Granted);
    assert!(
        matches!(x2.draw().await.unwrap(), Draw::Wait(_)),
        "x is shared"
    );
    assert_eq!(y.draw().await.unwrap(), Draw::Granted, "y is not x");
    // What Redis holds: keys named by hashes, a number each, expiring; no secret. (The
    // first credential's key may have expired already, 160 ms after its last grant.)
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let named = |k: &LedgerKey| format!("imkit-batch:budget:{}", k.id());
    for k in &keys {
        assert!(
            [named(&key(secret)), named(&kx), named(&ky)].contains(k) && !k.contains(secret),
            "{k}"
        );
    }
    for k in [named(&kx), named(&ky)] {
        let v: String = redis::cmd("GET")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(v.bytes().all(|c| c.is_ascii_digit()), "{v}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        // Kept while the state matters: the TAT 10 s ahead, and one interval more.
        assert!(ttl > 10_000 && ttl <= 20_001, "{ttl} ms");
    }
}

#[tokio::test]
async fn an_unreachable_redis_at_the_start_is_an_exit_2_error() {
    let port = free_port();
    let url = format!("redis://:pw-SECRET@127.0.0.1:{port}/0");
    let t = Instant::now();
    let e = Budget::redis(&url, &key("sk_test_unreachable"), gcra())
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(matches!(e, BudgetError::Unreachable { .. }), "{e:?}");
    assert_eq!(e.exit(), Exit::Invalid);
    let msg = e.to_string();
    let shown = format!("cannot reach the rate budget at redis://***@127.0.0.1:{port}/0: ");
    assert!(msg.starts_with(&shown), "{msg}");
    assert!(msg.ends_with("; nothing was sent"), "{msg}");
    assert!(!msg.contains("pw-SECRET"), "{msg}");
    eprintln!("BUDGET unreachable Redis: {msg}");
}

#[tokio::test]
async fn a_redis_lost_mid_run_fails_the_next_draw() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let b = Budget::redis(&server.url(), &key("sk_test_lost"), gcra())
        .await
        .unwrap();
    b.acquire().await.unwrap();
    b.acquire().await.unwrap();
    server.kill();
    let t = Instant::now();
    let e = b.acquire().await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(matches!(e, BudgetError::Lost { .. }), "{e:?}");
    assert_eq!(e.exit(), Exit::Stopped);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("lost the rate budget at {}: ", server.url())),
        "{msg}"
    );
    // And it stays lost: no draw is granted without the ledger.
    assert!(b.draw().await.is_err());
    eprintln!("BUDGET Redis killed mid-run: {msg}");
}

/// What one run leaves on a shared ledger for the others: a pause (a server's 429 hint holds
/// every run on the credential back) and the limit it measured; on the host and in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_a_shared_ledger_see_each_others_pause_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sk_test_pause_and_note";
    let host = || Budget::on_host(dir.path(), &key(secret), gcra()).unwrap();
    let mut pairs = vec![(host(), host())];
    let server = RedisServer::start();
    if let Some(server) = &server {
        let (url, k) = (server.url(), key(secret));
        let a = Budget::redis(&url, &k, gcra()).await.unwrap();
        let b = Budget::redis(&url, &k, gcra()).await.unwrap();
        pairs.push((a, b));
    }
    for (a, b) in pairs {
        let scope = a.info().scope;
        assert_eq!(b.shared_limit().await, None, "{scope:?}");
        a.acquire().await.unwrap();
        a.pause(&gcra(), Duration::from_secs(2)).await;
        match b.draw().await.unwrap() {
            Draw::Wait(w) => assert!(
                w > Duration::from_millis(1500) && w <= Duration::from_secs(2),
                "{scope:?}: {w:?}"
            ),
            Draw::Granted => panic!("{scope:?}: granted inside the pause"),
        }
        let me = imkit_batch::budget::new_publisher();
        a.publish_limit(19.5, me).await;
        let seen = b.shared_limit().await.unwrap();
        assert_eq!((seen.per_second, seen.by), (19.5, me), "{scope:?}");
    }
}
