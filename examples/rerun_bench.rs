//! End-to-end figures of the binary on a big finished job (not a test: prints, never fails
//! on timing). Build the binary in release first, then:
//!
//! ```text
//! cargo build --release --bin imkit-batch
//! cargo run --release --example rerun_bench [-- OPS DIR]
//! ```
//!
//! Writes an OPS-row freeze list (default 200,000), completes it once with `run --sandbox`
//! (the in-process emulator, high rate), then times, as separate processes, what an operator
//! runs on the finished job: `run` again (must send nothing and exit 0: manifest load and
//! checksum, lock, journal checks, counts), `status`, `status --json`, `report -o FILE` and
//! `report --format json -o FILE`; and prints the journal's bytes per op.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    // target/release/examples/rerun_bench -> target/release/imkit-batch
    let exe = std::env::current_exe().expect("own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    dir.join("imkit-batch")
}

/// Runs the binary; returns the wall time, or exits if it fails.
fn timed(bin: &Path, args: &[&str], want: i32) -> Duration {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the binary");
    let d = t.elapsed();
    if out.status.code() != Some(want) {
        eprintln!(
            "{} {args:?} exited {:?} (wanted {want}):\n{}",
            bin.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::process::exit(1);
    }
    d
}

/// Best and median of `n` runs.
fn figure(bin: &Path, label: &str, args: &[&str], n: usize) {
    let mut v: Vec<Duration> = (0..n).map(|_| timed(bin, args, 0)).collect();
    v.sort();
    println!(
        "{label:<34} best {:>8.1} ms, median {:>8.1} ms ({n} runs)",
        v[0].as_secs_f64() * 1000.0,
        v[n / 2].as_secs_f64() * 1000.0
    );
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ops: usize = args
        .first()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(200_000);
    let base = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("rerun-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bin = bin();
    if !bin.exists() {
        eprintln!(
            "{} not found: run `cargo build --release --bin imkit-batch` first",
            bin.display()
        );
        std::process::exit(2);
    }

    let manifest = dir.join("freeze.csv");
    {
        let mut w = BufWriter::new(std::fs::File::create(&manifest)?);
        writeln!(w, "room")?;
        for i in 0..ops {
            writeln!(w, "room-{i:07}-tw")?;
        }
        w.flush()?;
    }
    let m = manifest.to_str().expect("utf-8 path");
    // A rehearsal (`--sandbox`) keeps its own journal beside the manifest.
    let journal = format!("{m}.sandbox.journal");
    let run = [
        "run",
        m,
        "--sandbox",
        "--action",
        "freeze",
        "--progress",
        "never",
        "-q",
    ];
    let first = [&run[..], &["--rate", "100000/s", "--concurrency", "64"]].concat();
    let d = timed(&bin, &first, 0);
    println!(
        "first run (import + {ops} ops vs in-process sandbox): {:.2} s",
        d.as_secs_f64()
    );
    let size = std::fs::metadata(&journal)?.len();
    println!(
        "journal: {size} bytes for {ops} ops = {:.1} bytes/op",
        size as f64 / ops as f64
    );
    figure(&bin, "re-run of the finished job", &run, 7);
    figure(&bin, "status", &["status", &journal], 5);
    figure(&bin, "status --json", &["status", &journal, "--json"], 5);
    let csv = dir.join("report.csv");
    let csv = csv.to_str().expect("utf-8 path");
    figure(
        &bin,
        "report -o FILE (csv)",
        &["report", &journal, "-o", csv],
        3,
    );
    let json = dir.join("report.json");
    let json = json.to_str().expect("utf-8 path");
    figure(
        &bin,
        "report --format json -o FILE",
        &["report", &journal, "--format", "json", "-o", json],
        3,
    );
    println!("files left in {}", dir.display());
    Ok(())
}
