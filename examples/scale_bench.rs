//! The scale figures of issue 15 in one run (not a test: prints a table, never fails on a
//! timing). Build the binary and the examples in release first, then:
//!
//! ```text
//! cargo build --release --bin imkit-batch --examples
//! cargo run --release --example scale_bench [-- --full] [--ops N] [--throughput-ops N]
//!                                           [--repeat R] [--dir DIR]
//! ```
//!
//! Starts `imkit-batch sandbox` as separate processes and measures, each figure with its own
//! child process (wall time, CPU time and peak RSS from `/usr/bin/time` when present, else by
//! polling `/proc/PID`):
//! - throughput: `run --base-url` of THROUGHPUT_OPS freezes (default 20,000) against a
//!   sandbox answering after 20 ms, at concurrency 64 and 256: ops/s and CPU-seconds per
//!   10,000 ops of the runner and of `oha` (a raw HTTP load generator, same server, same
//!   concurrency, when it is on PATH; `cargo install oha` installs it), their ratios, and the
//!   bound concurrency / answer time with the share of it reached;
//! - `validate` of 1,000,000 freeze rows and of 1,000,000 update rows (five fields): time and
//!   peak RSS;
//! - a run of OPS freezes (default 200,000; `--full`: 1,000,000), then of OPS updates of
//!   the same rooms (five fields each), against a sandbox without
//!   latency, concurrency 64: time and the runner's peak RSS;
//! - the sandbox's memory per seeded room: its RSS once seeded with OPS rooms (from
//!   `--seed`) minus its RSS seeded with one room, divided by OPS - 1; and its RSS after the
//!   OPS-op run;
//! - the same OPS freezes as a rehearsal (`run --sandbox`, the sandbox in the runner's
//!   process): time and peak RSS;
//! - the re-run of a finished 200,000-op job (`examples/rerun_bench`, run as a child).
//!
//! The manifests come from `examples/gen_manifest`. Files go to DIR (default: the temp
//! dir) and are removed at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Credentials the benchmark's sandboxes accept and its runs send.
const ENV: [(&str, &str); 3] = [
    ("IMKIT_CLIENT_KEY", "bench-ck"),
    ("IMKIT_TOKEN", "bench-tok"),
    ("IMKIT_API_KEY", "bench-ak"),
];
/// The latency of the throughput sandbox.
const LATENCY_MS: u64 = 20;
const CONCURRENCIES: [u64; 2] = [64, 256];

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Opts {
    ops: u64,
    throughput_ops: u64,
    repeat: usize,
    dir: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: scale_bench [--full] [--ops N] [--throughput-ops N] [--repeat R] [--dir DIR]"
    );
    std::process::exit(2);
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        ops: 200_000,
        throughput_ops: 20_000,
        repeat: 1,
        dir: std::env::temp_dir(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || {
            args.next()
                .and_then(|v| v.replace('_', "").parse::<u64>().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--full" => o.ops = 1_000_000,
            "--ops" => o.ops = num(),
            "--throughput-ops" => o.throughput_ops = num(),
            "--repeat" => o.repeat = num().max(1) as usize,
            "--dir" => o.dir = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    if o.ops < 2 || o.throughput_ops == 0 {
        usage();
    }
    o
}

/// What one child process cost.
#[derive(Clone, Copy)]
struct Cost {
    wall: f64,
    /// User + system CPU seconds.
    cpu: f64,
    /// Peak resident set, KiB.
    max_rss_kib: u64,
}

/// Runs `cmd` to its end and measures it; an exit other than 0 is an error.
fn measure(cmd: &mut Command) -> Res<Cost> {
    let time = Path::new("/usr/bin/time");
    if time.exists() {
        measure_with_time(time, cmd)
    } else {
        measure_by_polling(cmd)
    }
}

fn describe(cmd: &Command) -> String {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

/// Under GNU time: wall, user + sys and wait4's `ru_maxrss`, written to a file.
fn measure_with_time(time: &Path, cmd: &mut Command) -> Res<Cost> {
    let out = tempfile::NamedTempFile::new()?;
    let mut t = Command::new(time);
    t.arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(out.path())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(ENV)
        .env_remove("RUST_LOG")
        .env_remove("IMKIT_BASE_URL")
        .stdout(Stdio::null());
    let out_err = t.output()?;
    if !out_err.status.success() {
        let stderr = String::from_utf8_lossy(&out_err.stderr).into_owned();
        return Err(format!(
            "{} exited with {}:\n{stderr}",
            describe(cmd),
            out_err.status
        )
        .into());
    }
    let text = std::fs::read_to_string(out.path())?;
    let line = text.lines().last().unwrap_or_default();
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let [wall, user, sys, rss] = f[..] else {
        return Err(format!("cannot read /usr/bin/time's output {text:?}").into());
    };
    Ok(Cost {
        wall,
        cpu: user + sys,
        max_rss_kib: rss as u64,
    })
}

/// Without GNU time: polls `/proc/PID/stat` (CPU ticks, taken as 1/100 s) and VmHWM every
/// 5 ms until the child ends (so the last few milliseconds of CPU may be missing).
fn measure_by_polling(cmd: &mut Command) -> Res<Cost> {
    let started = Instant::now();
    let mut child = cmd
        .envs(ENV)
        .env_remove("RUST_LOG")
        .env_remove("IMKIT_BASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let (mut cpu, mut rss) = (0.0, 0);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()));
        if let Some(ticks) = stat.ok().as_deref().and_then(cpu_ticks) {
            cpu = ticks as f64 / 100.0;
        }
        rss = rss.max(proc_kib(child.id(), "VmHWM").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    };
    if !status.success() {
        return Err(format!("{} exited with {status}", describe(cmd)).into());
    }
    Ok(Cost {
        wall: started.elapsed().as_secs_f64(),
        cpu,
        max_rss_kib: rss,
    })
}

/// utime + stime of a `/proc/PID/stat` line (fields 14 and 15, after the command's `)`).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A `Vm...:` line of `/proc/PID/status`, in KiB.
fn proc_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `target/release/examples/scale_bench` -> `target/release/NAME`.
fn release_bin(name: &str) -> Res<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory")?;
    let path = if name == "imkit-batch" {
        dir.join(name)
    } else {
        dir.join("examples").join(name)
    };
    if !path.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release --bin imkit-batch --examples` first",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// A sandbox process of this benchmark; killed when dropped.
struct Sandbox {
    child: Child,
    addr: String,
    /// From the start to the first answer (the seeded world is built by then).
    ready_after: Duration,
}

impl Sandbox {
    fn start(bin: &Path, seed: &Path, latency_ms: u64) -> Res<Sandbox> {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["sandbox", "--listen", "127.0.0.1:0", "--action", "freeze"])
            .arg("--seed")
            .arg(seed)
            .arg("--latency")
            .arg(format!("{latency_ms}ms"))
            .envs(ENV)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next().transpose()? else {
                return Err("the sandbox ended before listening".into());
            };
            if let Some(url) = line.split("listening on http://").nth(1) {
                break url.trim().to_owned();
            }
        };
        // Keep reading what it prints, so that it never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let mut sb = Sandbox {
            child,
            addr,
            ready_after: Duration::ZERO,
        };
        http(&sb.addr, "GET /_sandbox/stats", "")?;
        sb.ready_after = started.elapsed();
        Ok(sb)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn rss_kib(&self) -> u64 {
        proc_kib(self.child.id(), "VmRSS").unwrap_or(0)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request (`METHOD /path`) with the API key; Ok when answered 200.
fn http(addr: &str, request: &str, body: &str) -> Res<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(1800)))?;
    write!(
        s,
        "{request} HTTP/1.0\r\nIM-API-KEY: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        ENV[2].1,
        body.len()
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    if !answer.starts_with(b"HTTP/1.1 200") && !answer.starts_with(b"HTTP/1.0 200") {
        let head = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
        return Err(format!("{request}: {head}").into());
    }
    Ok(())
}

/// The median time of one freeze answered by the sandbox (21 requests, one at a time).
fn answer_time(addr: &str) -> Res<Duration> {
    let mut v = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        http(addr, "PUT /rooms/room-0000000-tw", r#"{"status":0}"#)?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(v[10])
}

/// Writes an N-row manifest with `gen_manifest` (room column only, or `--updates`).
fn generate(dir: &Path, rows: u64, updates: bool) -> Res<PathBuf> {
    let name = if updates { "upd" } else { "rooms" };
    let path = dir.join(format!("{name}-{rows}.csv"));
    if path.exists() {
        return Ok(path);
    }
    let mut c = Command::new(release_bin("gen_manifest")?);
    c.arg(rows.to_string()).arg(&path).stdout(Stdio::null());
    if updates {
        c.arg("--updates");
    }
    if !c.status()?.success() {
        return Err("gen_manifest failed".into());
    }
    Ok(path)
}

/// A `run` of a freeze list (or of a manifest with an action column, `freezes` false)
/// against `url`: the runner's cost.
fn runner(
    bin: &Path,
    manifest: &Path,
    url: &str,
    concurrency: u64,
    dir: &Path,
    freezes: bool,
) -> Res<Cost> {
    let journal = dir.join(format!("run-{concurrency}-{}.journal", nanos()));
    let mut c = Command::new(bin);
    c.arg("run").arg(manifest);
    if freezes {
        c.args(["--action", "freeze"]);
    }
    c.args(["--base-url", url, "--rate", "100000/s"])
        .args(["--progress", "never", "-q", "--concurrency"])
        .arg(concurrency.to_string())
        .arg("--journal")
        .arg(&journal);
    let cost = measure(&mut c);
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", journal.display()));
    }
    cost
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// oha sending `n` freezes of one room at `concurrency`; `None` when oha is not on PATH.
fn oha(url: &str, n: u64, concurrency: u64) -> Res<Option<Cost>> {
    let found = Command::new("oha")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return Ok(None);
    }
    let mut c = Command::new("oha");
    c.args([
        "--no-tui",
        "-n",
        &n.to_string(),
        "-c",
        &concurrency.to_string(),
    ])
    .args(["-m", "PUT", "-d", r#"{"status":0}"#])
    .args(["-H", &format!("IM-API-KEY: {}", ENV[2].1)])
    .args(["-H", "content-type: application/json"])
    .arg(format!("{url}/rooms/room-0000000-tw"));
    measure(&mut c).map(Some)
}

/// One throughput row: the runner and oha at one concurrency.
struct Throughput {
    concurrency: u64,
    ops: u64,
    runner: Cost,
    oha: Option<Cost>,
    /// concurrency / answer time, ops/s.
    bound: f64,
}

fn per_10k(c: &Cost, ops: u64) -> f64 {
    c.cpu / ops as f64 * 10_000.0
}

fn rate(c: &Cost, ops: u64) -> f64 {
    ops as f64 / c.wall
}

fn throughput(bin: &Path, o: &Opts, answer: Duration) -> Res<Vec<Throughput>> {
    let manifest = generate(&o.dir, o.throughput_ops, false)?;
    let sb = Sandbox::start(bin, &manifest, LATENCY_MS)?;
    let mut rows = Vec::new();
    for _ in 0..o.repeat {
        for concurrency in CONCURRENCIES {
            let runner = runner(bin, &manifest, &sb.url(), concurrency, &o.dir, true)?;
            let oha = oha(&sb.url(), o.throughput_ops, concurrency)?;
            rows.push(Throughput {
                concurrency,
                ops: o.throughput_ops,
                runner,
                oha,
                bound: concurrency as f64 / answer.as_secs_f64(),
            });
        }
    }
    Ok(rows)
}

fn print_throughput(rows: &[Throughput], answer: Duration) {
    println!(
        "\nThroughput: `run --base-url` of {} freezes vs oha, sandbox --latency {LATENCY_MS}ms \
         (one answer alone: {:.2} ms)\n",
        rows.first().map_or(0, |r| r.ops),
        answer.as_secs_f64() * 1000.0
    );
    println!(
        "| concurrency | runner ops/s | runner CPU-s/10k | oha req/s | oha CPU-s/10k \
         | ops/s ratio | CPU ratio | bound c/latency | runner share of bound |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (ops, cpu) = (rate(&r.runner, r.ops), per_10k(&r.runner, r.ops));
        let cells = match &r.oha {
            Some(h) => {
                let (hops, hcpu) = (rate(h, r.ops), per_10k(h, r.ops));
                format!(
                    "{hops:.0} | {hcpu:.2} | {:.3} | {:.2}",
                    ops / hops,
                    cpu / hcpu
                )
            }
            None => " |  |  | ".to_owned(),
        };
        let share = ops / r.bound;
        let bound = if share >= 0.9 { "bound" } else { "not bound" };
        println!(
            "| {} | {ops:.0} | {cpu:.2} | {cells} | {:.0}/s | {:.1}% ({bound}) |",
            r.concurrency,
            r.bound,
            share * 100.0
        );
    }
    if rows.iter().any(|r| r.oha.is_none()) {
        println!("\n(oha is not on PATH: `cargo install oha` installs it; its cells are empty)");
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `validate` of 1,000,000 freeze rows and of 1,000,000 update rows.
fn validate_figures(bin: &Path, o: &Opts, out: &mut Vec<(String, String)>) -> Res<()> {
    for updates in [false, true] {
        let m = generate(&o.dir, 1_000_000, updates)?;
        let mut c = Command::new(bin);
        c.arg("validate").arg(&m);
        if !updates {
            c.args(["--action", "freeze"]);
        }
        let cost = measure(&mut c)?;
        let what = if updates {
            "update rows (5 fields)"
        } else {
            "freezes"
        };
        out.push((
            format!("`validate` of 1,000,000 {what}"),
            format!("{:.2} s, peak {:.1} MiB", cost.wall, mib(cost.max_rss_kib)),
        ));
    }
    Ok(())
}

/// The sandbox's bytes per seeded room, and the OPS-op run against it.
fn run_figures(bin: &Path, o: &Opts, out: &mut Vec<(String, String)>) -> Res<()> {
    let one = generate(&o.dir, 1, false)?;
    let empty = Sandbox::start(bin, &one, 0)?.rss_kib();
    let rooms = generate(&o.dir, o.ops, false)?;
    let sb = Sandbox::start(bin, &rooms, 0)?;
    let seeded = sb.rss_kib();
    out.push((
        format!("sandbox seeded with {} rooms (`--seed`)", o.ops),
        format!(
            "ready in {:.1} s, RSS {:.1} MiB (1 room: {:.1} MiB): {:.0} bytes a room",
            sb.ready_after.as_secs_f64(),
            mib(seeded),
            mib(empty),
            seeded.saturating_sub(empty) as f64 * 1024.0 / (o.ops - 1) as f64
        ),
    ));
    let cost = runner(bin, &rooms, &sb.url(), 64, &o.dir, true)?;
    out.push((
        format!("run of {} freezes, concurrency 64, no latency", o.ops),
        format!(
            "{:.1} s ({:.0} ops/s), {:.2} CPU-s/10k, runner peak RSS {:.1} MiB; sandbox RSS \
             after it {:.1} MiB",
            cost.wall,
            rate(&cost, o.ops),
            per_10k(&cost, o.ops),
            mib(cost.max_rss_kib),
            mib(sb.rss_kib())
        ),
    ));
    // The same rooms updated, five fields each (the sandbox's rooms are those of the run
    // above: `gen_manifest` names them alike).
    let updates = generate(&o.dir, o.ops, true)?;
    let cost = runner(bin, &updates, &sb.url(), 64, &o.dir, false)?;
    out.push((
        format!(
            "run of {} updates (5 fields), concurrency 64, no latency",
            o.ops
        ),
        format!(
            "{:.1} s ({:.0} ops/s), {:.2} CPU-s/10k, runner peak RSS {:.1} MiB",
            cost.wall,
            rate(&cost, o.ops),
            per_10k(&cost, o.ops),
            mib(cost.max_rss_kib),
        ),
    ));
    drop(sb);
    // The rehearsal: the same job with the sandbox in the runner's process.
    let journal = o.dir.join("rehearsal.journal");
    let mut c = Command::new(bin);
    c.arg("run")
        .arg(&rooms)
        .args(["--sandbox", "--action", "freeze", "--rate", "100000/s"])
        .args([
            "--progress",
            "never",
            "-q",
            "--concurrency",
            "64",
            "--journal",
        ])
        .arg(&journal);
    let cost = measure(&mut c)?;
    out.push((
        format!("`run --sandbox` of {} freezes, concurrency 64", o.ops),
        format!(
            "{:.1} s, peak RSS {:.1} MiB",
            cost.wall,
            mib(cost.max_rss_kib)
        ),
    ));
    Ok(())
}

/// `rerun_bench 200000`: its line on the re-run of the finished job.
fn rerun(o: &Opts) -> Res<(String, String)> {
    let dir = o.dir.join(format!("scale-rerun-{}", std::process::id()));
    let out = Command::new(release_bin("rerun_bench")?)
        .arg("200000")
        .arg(&dir)
        .output()?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("re-run of the finished job"))
        .ok_or_else(|| format!("rerun_bench printed no re-run line:\n{text}"))?;
    let value = line.trim_start_matches("re-run of the finished job").trim();
    Ok((
        "re-run of a finished 200,000-op job (`rerun_bench`)".into(),
        value.to_owned(),
    ))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> Res<()> {
    let mut o = parse_opts();
    o.dir = o.dir.join(format!("scale-bench-{}", std::process::id()));
    std::fs::create_dir_all(&o.dir)?;
    let bin = release_bin("imkit-batch")?;
    let started = Instant::now();
    println!("scale_bench: load average {} at the start", loadavg());
    let answer = {
        let one = generate(&o.dir, 1, false)?;
        let sb = Sandbox::start(&bin, &one, LATENCY_MS)?;
        answer_time(&sb.addr)?
    };
    let result = (|| -> Res<()> {
        let rows = throughput(&bin, &o, answer)?;
        let mut other = Vec::new();
        validate_figures(&bin, &o, &mut other)?;
        run_figures(&bin, &o, &mut other)?;
        other.push(rerun(&o)?);
        print_throughput(&rows, answer);
        println!("\n| figure | value |\n|---|---|");
        for (k, v) in other {
            println!("| {k} | {v} |");
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&o.dir);
    println!(
        "\nscale_bench: {:.0} s in all; load average {} at the end",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    result
}
