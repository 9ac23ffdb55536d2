//! The pacing benchmark (issue 14): how close `run` gets to a server's per-credential limit,
//! and how many of its requests that server answers 429, when `--rate` equals the limit,
//! when it asks twice the limit, when several runs on one host share one credential, and
//! when two runs share it through Redis only. Prints one table; never fails on a figure.
//!
//! ```sh
//! cargo run --release --example pacing_bench
//! cargo run --release --example pacing_bench -- --bin /other/build/imkit-batch --rounds 2
//! cargo run --release --example pacing_bench -- --extra   # instead: 3x, and 2x over 1,500 ops
//! ```
//!
//! It builds the release binary first (`cargo build --release --bin imkit-batch`, when run
//! through `cargo run` and no `--bin` is given), starts the sandbox in this process with a
//! limit of `--limit` requests per second per credential, once as a fixed window and once
//! as a token bucket of `--burst`, and runs that binary against it, each run a separate
//! process with its own manifest of freezes and journal, all runs of a scenario started
//! together on the same client key and token. The host scenarios give every run one
//! `XDG_RUNTIME_DIR` (so they find one ledger); the Redis scenario gives each run its own
//! and `--budget redis://...` (a `redis-server` on a free loopback port), so only Redis
//! can share. A binary without `--budget` runs that scenario unshared, and says so.
//!
//! Figures: `achieved` is the accepted requests (answered 200) of the scenario, less one,
//! over the time from its first request to its last accepted one, as the sandbox logged
//! them; `429s` is the share of all its requests that the limit refused.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use imkit_batch::sandbox::{self, DEFAULT_OWNER, SandboxConfig, SandboxCredentials};
use imkit_batch::units::Rate;

/// The limiter of one half of the table.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Fixed,
    Bucket(u32),
}

impl Kind {
    fn label(self) -> String {
        match self {
            Kind::Fixed => "fixed window".into(),
            Kind::Bucket(b) => format!("token bucket, burst {b}"),
        }
    }
}

/// Where the runs of a scenario share their budget.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sharing {
    Host,
    Redis,
}

struct Scenario {
    name: &'static str,
    runs: usize,
    /// `--rate` of each run, in multiples of the limit.
    times_limit: u32,
    sharing: Sharing,
    /// Ops of the scenario, when not `--ops`.
    ops: Option<usize>,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "rate = limit",
        runs: 1,
        times_limit: 1,
        sharing: Sharing::Host,
        ops: None,
    },
    Scenario {
        name: "rate = 2x limit",
        runs: 1,
        times_limit: 2,
        sharing: Sharing::Host,
        ops: None,
    },
    Scenario {
        name: "2 runs on one host, rate = limit each",
        runs: 2,
        times_limit: 1,
        sharing: Sharing::Host,
        ops: None,
    },
    Scenario {
        name: "4 runs on one host, rate = limit each",
        runs: 4,
        times_limit: 1,
        sharing: Sharing::Host,
        ops: None,
    },
    Scenario {
        name: "2 runs through Redis, own runtime dirs",
        runs: 2,
        times_limit: 1,
        sharing: Sharing::Redis,
        ops: None,
    },
];

/// With `--extra`, instead: asking more than twice the limit, and a run long enough to
/// measure the limit it asks twice of.
const EXTRA: [Scenario; 2] = [
    Scenario {
        name: "rate = 3x limit",
        runs: 1,
        times_limit: 3,
        sharing: Sharing::Host,
        ops: None,
    },
    Scenario {
        name: "rate = 2x limit, 1,500 ops",
        runs: 1,
        times_limit: 2,
        sharing: Sharing::Host,
        ops: Some(1500),
    },
];

struct Args {
    bin: Option<PathBuf>,
    limit: u32,
    ops: usize,
    burst: u32,
    rounds: u32,
    concurrency: u32,
    extra: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        bin: None,
        limit: 20,
        ops: 300,
        burst: 5,
        rounds: 1,
        concurrency: 8,
        extra: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => a.bin = Some(PathBuf::from(value()?)),
            "--limit" => a.limit = value()?.parse()?,
            "--ops" => a.ops = value()?.parse()?,
            "--burst" => a.burst = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--extra" => a.extra = true,
            _ => bail!(
                "usage: pacing_bench [--bin PATH] [--limit PER_SECOND] [--ops N] [--burst N] \
                 [--rounds N] [--concurrency N] [--extra]"
            ),
        }
    }
    Ok(a)
}

/// The binary to measure: `--bin`, else this build's release binary (built first when run
/// through cargo).
fn binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(b) = &args.bin {
        return Ok(b.clone());
    }
    if let Some(cargo) = std::env::var_os("CARGO") {
        let ok = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--bin", "imkit-batch"])
            .status()
            .context("cargo build")?
            .success();
        if !ok {
            bail!("cargo build --release --bin imkit-batch failed");
        }
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?;
    Ok(dir.join("imkit-batch"))
}

/// A `redis-server` on a free loopback port, without persistence; killed on drop.
struct Redis {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let dir = tempfile::tempdir().ok()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = Redis {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one scenario measured.
struct Measured {
    accepted: u64,
    requests: u64,
    limited: u64,
    span: Duration,
    exits: Vec<i32>,
    /// The first run's `pace` lines from its summary, if the binary prints them.
    pace: Vec<String>,
    note: &'static str,
}

/// Everything a scenario's runs need to know.
struct Setup<'a> {
    bin: &'a Path,
    args: &'a Args,
    kind: Kind,
    redis: Option<&'a Redis>,
    has_budget_flag: bool,
    creds: &'a SandboxCredentials,
}

/// Writes run `k`'s manifest of `n` freezes and returns its path and rooms.
fn manifest(dir: &Path, k: usize, n: usize) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let rooms: Vec<String> = (0..n).map(|i| format!("run{k}-room-{i}")).collect();
    let mut text = String::from("action,room\n");
    for r in &rooms {
        text.push_str("freeze,");
        text.push_str(r);
        text.push('\n');
    }
    let path = dir.join(format!("run{k}.csv"));
    std::fs::write(&path, text)?;
    Ok((path, rooms))
}

/// Starts one run of the binary against `base`.
fn start_run(s: &Setup, sc: &Scenario, manifest: &Path, base: &str, runtime: &Path) -> Child {
    let rate = format!("{}/s", s.args.limit * sc.times_limit);
    let mut cmd = Command::new(s.bin);
    cmd.arg("run")
        .arg(manifest)
        .args(["--base-url", base, "--rate", &rate])
        .args(["--concurrency", &s.args.concurrency.to_string()])
        .args(["--progress", "never"])
        .env("XDG_RUNTIME_DIR", runtime)
        .env("IMKIT_CLIENT_KEY", &s.creds.client_key)
        .env("IMKIT_TOKEN", &s.creds.token)
        .env("IMKIT_API_KEY", &s.creds.api_key)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if sc.sharing == Sharing::Redis
        && s.has_budget_flag
        && let Some(r) = s.redis
    {
        cmd.args(["--budget", &r.url]);
    }
    cmd.spawn().expect("cannot start the binary")
}

async fn run_scenario(s: &Setup<'_>, sc: &Scenario) -> Measured {
    let dir = tempfile::tempdir().expect("temp dir");
    let per_run = (sc.ops.unwrap_or(s.args.ops) / sc.runs).max(1);
    let mut cfg = SandboxConfig::new(s.creds.clone());
    cfg.rate_limit = Some(Rate {
        count: s.args.limit,
        per: Duration::from_secs(1),
    });
    cfg.rate_limit_burst = match s.kind {
        Kind::Fixed => None,
        Kind::Bucket(b) => Some(b),
    };
    cfg.log_capacity = sc.ops.unwrap_or(s.args.ops) * 4 + 1000;
    let mut manifests = Vec::new();
    for k in 0..sc.runs {
        let (path, rooms) = manifest(dir.path(), k, per_run).expect("manifest");
        for r in rooms {
            cfg.add_room(r, DEFAULT_OWNER, &[]);
        }
        manifests.push(path);
    }
    let sb = sandbox::spawn(cfg).await.expect("sandbox");
    let base = sb.base_url();
    let children: Vec<Child> = manifests
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let runtime = match sc.sharing {
                Sharing::Host => dir.path().join("runtime"),
                Sharing::Redis => dir.path().join(format!("runtime-{k}")),
            };
            std::fs::create_dir_all(&runtime).expect("runtime dir");
            start_run(s, sc, m, &base, &runtime)
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("join");
    let log = sb.log(usize::MAX);
    let first = log.iter().map(|e| e.at_ms).min().unwrap_or(0);
    let last = log
        .iter()
        .filter(|e| e.status == Some(200))
        .map(|e| e.at_ms)
        .max()
        .unwrap_or(first);
    let stderr = String::from_utf8_lossy(&outputs[0].stderr).to_string();
    let m = Measured {
        accepted: log.iter().filter(|e| e.status == Some(200)).count() as u64,
        requests: sb.requests_total(),
        limited: sb.stats().rate_limited,
        span: Duration::from_millis(last.saturating_sub(first)),
        exits: outputs
            .iter()
            .map(|o| o.status.code().unwrap_or(-1))
            .collect(),
        pace: stderr
            .lines()
            .filter(|l| l.trim_start().starts_with("pace"))
            .map(|l| l.trim().to_string())
            .collect(),
        note: if sc.sharing == Sharing::Redis && (!s.has_budget_flag || s.redis.is_none()) {
            " (unshared: no --budget or no redis-server)"
        } else {
            ""
        },
    };
    let _ = sb.shutdown().await;
    m
}

fn print_row(kind: Kind, sc: &Scenario, limit: u32, m: &Measured) {
    let secs = m.span.as_secs_f64();
    let achieved = if secs > 0.0 {
        m.accepted.saturating_sub(1) as f64 / secs
    } else {
        0.0
    };
    let share = if m.requests > 0 {
        100.0 * m.limited as f64 / m.requests as f64
    } else {
        0.0
    };
    println!(
        "| {} | {}{} | {} | {:.1}s | {achieved:.2}/s | {:.3} | {} of {} ({share:.1}%) | {:?} |",
        kind.label(),
        sc.name,
        m.note,
        m.accepted,
        secs,
        achieved / f64::from(limit),
        m.limited,
        m.requests,
        m.exits,
    );
    for p in &m.pace {
        println!("|   | {p} | | | | | | |");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let bin = binary(&args)?;
    let help = Command::new(&bin)
        .args(["run", "--help"])
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let has_budget_flag = String::from_utf8_lossy(&help.stdout).contains("--budget");
    let redis = Redis::start();
    if redis.is_none() {
        eprintln!("redis-server not found or did not start: the Redis row runs unshared");
    }
    let creds = SandboxCredentials::generate();
    println!(
        "pacing_bench: {} ({}), limit {}/s per credential, {} ops per scenario (split between \
         its runs), --concurrency {}, {} round(s)",
        bin.display(),
        if has_budget_flag {
            "with --budget"
        } else {
            "without --budget"
        },
        args.limit,
        args.ops,
        args.concurrency,
        args.rounds
    );
    println!();
    println!("| limiter | scenario | accepted | span | achieved | of limit | 429s | exits |");
    println!("|---|---|---|---|---|---|---|---|");
    let started = Instant::now();
    for _ in 0..args.rounds {
        for kind in [Kind::Fixed, Kind::Bucket(args.burst)] {
            let setup = Setup {
                bin: &bin,
                args: &args,
                kind,
                redis: redis.as_ref(),
                has_budget_flag,
                creds: &creds,
            };
            let scenarios: &[Scenario] = if args.extra { &EXTRA } else { &SCENARIOS };
            for sc in scenarios {
                let m = run_scenario(&setup, sc).await;
                print_row(kind, sc, args.limit, &m);
            }
        }
    }
    println!();
    println!("total {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}
