//! A host that never answers: the client tells a request that never reached the server (DNS,
//! a refused connection, TLS) from one that may have (a timeout or a reset after connecting,
//! a body cut short); the binary stops such a run early with exit 3 and every op pending,
//! and a later run against a live server completes the job; a server that answered and then
//! drops connections is a flaky network, never a reason to stop.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};

use imkit_batch::api::{ApiClient, ClientOptions, Reach, UnreachedKind};
use imkit_batch::journal::Journal;
use imkit_batch::op::Op;
use imkit_batch::sandbox::SandboxConfig;
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::util::{self, Sandbox, api_credentials, exec, freeze_job, journal_of, run_cmd};

fn client(base: &str, timeout: Duration) -> ApiClient {
    let options = ClientOptions {
        timeout,
        connect_timeout: timeout,
        pool_size: 1,
    };
    ApiClient::new(&Url::parse(base).unwrap(), api_credentials(), options).unwrap()
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A peer on a loopback port that reads each request's head and then does `then` with the
/// connection: answers bytes, closes it, or holds it.
async fn peer(then: Then) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                match then {
                    Then::Close => return,
                    Then::Blurt(bytes) => {
                        let _ = s.write_all(bytes).await;
                        let _ = s.shutdown().await;
                        return;
                    }
                    _ => {}
                }
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                match then {
                    Then::Answer(bytes) => {
                        let _ = s.write_all(bytes).await;
                        let _ = s.shutdown().await;
                    }
                    Then::Hold => std::future::pending::<()>().await,
                    Then::Close | Then::Blurt(_) => {}
                }
            });
        }
    });
    addr
}

#[derive(Clone, Copy)]
enum Then {
    Answer(&'static [u8]),
    /// Writes these bytes at once, without reading anything.
    Blurt(&'static [u8]),
    /// Closes the connection at once, before reading anything.
    Close,
    Hold,
}

fn unreached_kind(reach: &Reach) -> Option<UnreachedKind> {
    match reach {
        Reach::Unreached(u) => Some(u.kind),
        _ => None,
    }
}

/// What never reached the server (DNS, refused, TLS) is told apart, from the error chain's
/// types, from what may have (a timeout after sending, a reset after connecting) and from an
/// answer (a body cut short after the status line is still an answer).
#[tokio::test]
async fn connect_failures_are_told_apart_from_requests_that_may_have_arrived() {
    let op = Op::freeze("r");
    let short = Duration::from_secs(5);

    let closed = closed_port();
    let a = client(&format!("http://{closed}"), short).send(&op).await;
    match &a.reach {
        Reach::Unreached(u) => {
            assert_eq!(u.kind, UnreachedKind::Refused);
            assert_eq!(u.host, closed.to_string());
        }
        r => panic!("{r:?}"),
    }
    match &a.outcome {
        imkit_batch::api::Outcome::Transient { reason, status, .. } => {
            assert_eq!(*status, None);
            assert_eq!(
                reason,
                &format!("cannot reach {closed}: connection refused")
            );
        }
        o => panic!("{o:?}"),
    }

    // `.invalid` never resolves (RFC 2606).
    let a = client("https://api.invalid", short).send(&op).await;
    match &a.reach {
        Reach::Unreached(u) => {
            assert_eq!(u.kind, UnreachedKind::Dns, "{u:?}");
            assert_eq!(u.host, "api.invalid");
        }
        r => panic!("{r:?}"),
    }

    // TLS spoken to a plain HTTP server, and to one that closes during the handshake.
    let plain = peer(Then::Blurt(
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
    ))
    .await;
    let tls = client(&format!("https://localhost:{}", plain.port()), short);
    assert_eq!(
        unreached_kind(&tls.send(&op).await.reach),
        Some(UnreachedKind::Tls)
    );
    let closing = peer(Then::Close).await;
    let tls = client(&format!("https://localhost:{}", closing.port()), short);
    assert_eq!(
        unreached_kind(&tls.send(&op).await.reach),
        Some(UnreachedKind::Tls)
    );

    // A connect that never completes (a listener whose accept queue is full drops the SYN)
    // ends as a connect timeout, under the request's own timeout.
    let full = tokio::net::TcpSocket::new_v4().unwrap();
    full.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = full.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap();
    let _queued = tokio::net::TcpStream::connect(full_addr).await.unwrap();
    let a = client(&format!("http://{full_addr}"), Duration::from_millis(500))
        .send(&op)
        .await;
    assert_eq!(
        unreached_kind(&a.reach),
        Some(UnreachedKind::ConnectTimeout),
        "{a:?}"
    );

    // A reset after connecting, and a timeout after sending: the request may have arrived.
    let a = client(&format!("http://{closing}"), short).send(&op).await;
    assert_eq!(a.reach, Reach::NoAnswer, "{a:?}");
    let holding = peer(Then::Hold).await;
    let a = client(&format!("http://{holding}"), Duration::from_millis(300))
        .send(&op)
        .await;
    assert_eq!(a.reach, Reach::NoAnswer, "{a:?}");

    // An answer, whole or cut short.
    let cut = peer(Then::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"RC\":0,",
    ))
    .await;
    let a = client(&format!("http://{cut}"), short).send(&op).await;
    assert_eq!(a.reach, Reach::Answered, "{a:?}");
    let ok = peer(Then::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{\"RC\":0}",
    ))
    .await;
    let a = client(&format!("http://{ok}"), short).send(&op).await;
    assert_eq!(a.reach, Reach::Answered, "{a:?}");
}

/// A sandbox served on `addr` (a port the test chose) on its own runtime, until dropped.
struct SandboxOn {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: tokio::runtime::Runtime,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl SandboxOn {
    fn start(addr: SocketAddr, config: SandboxConfig) -> SandboxOn {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind(addr)).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(imkit_batch::sandbox::run(listener, config, async move {
            let _ = rx.await;
        }));
        SandboxOn {
            stop: Some(tx),
            rt,
            task: Some(task),
        }
    }
}

impl Drop for SandboxOn {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = self.rt.block_on(t);
        }
    }
}

/// `status --json` of a journal.
fn status(journal: &std::path::Path) -> serde_json::Value {
    let st = exec(util::imkit(&[
        "status",
        journal.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(st.code, 0, "{st:?}");
    serde_json::from_str(&st.stdout).unwrap()
}

/// A base URL whose port nothing listens on: the run stops within seconds with exit 3, one
/// warning, a message naming the host, the failure and what to check; every op stays
/// pending (none failed); once a server listens there, the next run completes the job.
#[test]
fn a_closed_port_stops_the_run_early_and_a_live_server_then_completes_it() {
    const OPS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", OPS);
    let addr = closed_port();
    let url = format!("http://{addr}");
    let journal = journal_of(&manifest);

    let started = Instant::now();
    let mut child = util::spawn(run_cmd(&url, &manifest, &["--action", "freeze"]));
    let limit = Duration::from_secs(6);
    util::poll_until(limit, "the run to stop", || {
        child.try_wait().unwrap().is_some()
    });
    let r = util::ran(child.wait_with_output().unwrap());
    let took = started.elapsed();
    assert_eq!(r.code, 3, "{r:?}");
    assert!(took < limit, "{took:?}");
    let want = format!(
        "cannot reach {addr}: connection refused; nothing reached the server; {OPS} ops stay pending; check --base-url / IMKIT_BASE_URL, DNS, the network, then run again"
    );
    assert!(r.stderr.contains(&want), "{}", r.stderr);
    assert!(
        r.stderr.contains("run aborted: the API cannot be reached"),
        "{}",
        r.stderr
    );
    // One warning while it retried, not one per attempt or per op.
    let warnings = r.stderr.lines().filter(|l| l.contains("WARN")).count();
    assert_eq!(warnings, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("failed after"), "{}", r.stderr);

    let v = status(&journal);
    assert_eq!(v["counts"]["pending"], OPS, "{v}");
    assert_eq!(v["counts"]["failed"], 0, "{v}");
    assert_eq!(v["counts"]["done"], 0, "{v}");
    let j = Journal::open_read_only(&journal).unwrap();
    assert_eq!(j.counts().unwrap().pending, OPS as u64);
    drop(j);

    // The server comes up at that address: the next run sends every op, once.
    let _sb = SandboxOn::start(addr, config);
    let r = exec(run_cmd(&url, &manifest, &["--action", "freeze"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("run complete: every op done"),
        "{}",
        r.stderr
    );
    let v = status(&journal);
    assert_eq!(v["counts"]["done"], OPS, "{v}");
    assert_eq!(v["counts"]["pending"], 0, "{v}");
}

/// The operator mistyped the base URL: the run stops early with every op pending, and the
/// corrected URL resumes the job (no `--retarget`: nothing answered on the wrong one), every
/// op sent once, the journal now bound to the corrected URL.
#[test]
fn a_corrected_base_url_resumes_a_job_that_never_reached_its_host() {
    const OPS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", OPS);
    let wrong = format!("http://{}", closed_port());
    let r = exec(run_cmd(&wrong, &manifest, &["--action", "freeze"]));
    assert_eq!(r.code, 3, "{r:?}");

    let sb = Sandbox::start(config);
    let r = exec(run_cmd(&sb.url(), &manifest, &["--action", "freeze"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("the job now sends to"), "{}", r.stderr);
    assert_eq!(sb.stats().applied_total, OPS as u64);
    let v = status(&journal_of(&manifest));
    assert_eq!(v["counts"]["done"], OPS, "{v}");

    // Bound to the corrected URL now: the wrong one is refused, as any other target is.
    let r = exec(run_cmd(&wrong, &manifest, &["--action", "freeze"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("cannot be resumed against"),
        "{}",
        r.stderr
    );
}

/// A server that answers and drops connections (before and after applying a change) is a
/// flaky network: retried, never a reason to stop; the job completes.
#[test]
fn a_server_that_answered_then_drops_connections_does_not_stop_the_run() {
    const OPS: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config) = freeze_job(dir.path(), "freeze.csv", OPS);
    config.fault_seed = 11;
    config.faults.drop_before = 0.25;
    config.faults.drop_after = 0.15;
    let sb = Sandbox::start(config);
    let r = exec(run_cmd(
        &sb.url(),
        &manifest,
        &["--action", "freeze", "--max-attempts", "12"],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(sb.faults_total() > 0);
    assert!(!r.stderr.contains("cannot reach"), "{}", r.stderr);
    assert!((0..OPS).all(|i| sb.room_status(&format!("r-{i}")) == Some(0)));
}

/// The rows of a journal being written, or none while it cannot be read yet.
fn rows_now(journal: &std::path::Path) -> Vec<imkit_batch::journal::OpRow> {
    let Ok(j) = Journal::open_read_only(journal) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    let read = j.for_each_op::<imkit_batch::journal::JournalError>(None, |r| {
        rows.push(r);
        Ok(())
    });
    if read.is_err() {
        return Vec::new();
    }
    rows
}

/// A server that answered and then went away (its connections refused for a while) is a
/// flaky network: the refused requests are retried as any transient failure, the run is not
/// stopped, and when the server is back the job completes.
#[test]
fn a_server_that_answered_then_went_away_is_retried_not_given_up() {
    use imkit_batch::journal::OpState;
    const OPS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config) = freeze_job(dir.path(), "freeze.csv", OPS);
    config.latency = Duration::from_millis(10);
    let addr = closed_port();
    let url = format!("http://{addr}");
    let journal = journal_of(&manifest);
    let sb = SandboxOn::start(addr, config.clone());
    let args = [
        "--action",
        "freeze",
        "--concurrency",
        "2",
        "--max-attempts",
        "12",
    ];
    let mut child = util::spawn(run_cmd(&url, &manifest, &args));
    let alive = |child: &mut std::process::Child| {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the run ended ({st}) before the server came back");
        }
    };
    util::poll_until(Duration::from_secs(30), "answered ops", || {
        alive(&mut child);
        rows_now(&journal)
            .iter()
            .filter(|r| r.state == OpState::Done)
            .count()
            >= 5
    });
    drop(sb);
    // The run meets the refusals: an op pending after a refused attempt, more than the
    // early stop's bound of them in all.
    util::poll_until(Duration::from_secs(30), "refused attempts", || {
        alive(&mut child);
        let rows = rows_now(&journal);
        let refused: u32 = rows
            .iter()
            .filter(|r| r.state == OpState::Pending)
            .filter(|r| r.message.as_deref().is_some_and(|m| m.contains("refused")))
            .map(|r| r.attempts)
            .sum();
        refused > 3
    });
    let _back = SandboxOn::start(addr, config);
    let r = util::ran(child.wait_with_output().unwrap());
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !r.stderr.contains("nothing reached the server"),
        "{}",
        r.stderr
    );
    let v = status(&journal);
    assert_eq!(v["counts"]["done"], OPS, "{v}");
}
