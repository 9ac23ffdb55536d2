//! Journal figures (not a test: prints, never fails on timing). Run in release:
//!
//! ```text
//! cargo run --release --example journal_bench [-- IMPORT_OPS RERUN_OPS DIR]
//! ```
//!
//! Prints: import time and journal bytes per op for IMPORT_OPS ops (default 1,000,000),
//! the writer's throughput and bytes per op once every op is done, and the time the
//! completed-job path of a re-run takes on a finished RERUN_OPS-op journal (default
//! 200,000): open for run (lock, header + identity + quick_check, checksum) + find zero
//! pending + counts.

use std::path::{Path, PathBuf};
use std::time::Instant;

use imkit_batch::Exit;
use imkit_batch::journal::{JobMeta, Journal, OpRecord, OpState, OpenOptions};
use imkit_batch::manifest::{Format, Location, Manifest, PlannedOp, Settings};
use imkit_batch::op::{Op, RoomFields};

fn manifest(dir: &Path, n: usize) -> Manifest {
    let path = dir.join("bench.csv");
    let ops = (0..n)
        .map(|i| {
            let op = match i % 10 {
                // A realistic mix: mostly freezes, some updates and mutes.
                0 => Op::update(
                    format!("room-{i:07}"),
                    RoomFields {
                        name: Some(format!("Room {i}")),
                        opening: Some(0),
                        ..Default::default()
                    },
                ),
                1 => Op::mute(format!("client-{i:07}"), format!("room-{i:07}")),
                _ => Op::freeze(format!("room-{i:07}")),
            };
            PlannedOp {
                op,
                source: Location {
                    file: 0,
                    line: i as u32 + 2,
                },
            }
        })
        .collect();
    Manifest {
        path: path.clone(),
        format: Format::Csv,
        name: Some("bench".into()),
        checksum: "0".repeat(64),
        window: None,
        settings: Settings::default(),
        ops,
        sources: vec![path],
        warnings: vec![],
    }
}

fn meta(m: &Manifest) -> JobMeta {
    JobMeta {
        manifest_path: m.path.clone(),
        checksum: m.checksum.clone(),
        name: m.name.clone(),
        settings: serde_json::json!({"concurrency": 8, "rate": "800/min"}),
        target: None,
    }
}

fn size(path: &Path) -> u64 {
    let mut total = 0;
    for s in ["", "-wal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(s);
        total += std::fs::metadata(PathBuf::from(p))
            .map(|m| m.len())
            .unwrap_or(0);
    }
    total
}

async fn all_done(j: Journal, n: usize) -> anyhow::Result<f64> {
    let w = j.start_writer()?;
    let t = Instant::now();
    for seq in 0..n as u64 {
        w.record(OpRecord {
            seq,
            state: Some(OpState::Done),
            attempts: 1,
            http_status: Some(200),
            rc: Some(0),
            latency_ms: Some(42),
            ..Default::default()
        })?;
    }
    w.flush().await?;
    let secs = t.elapsed().as_secs_f64();
    w.finish(Exit::Success).await?;
    Ok(secs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let import_n: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let rerun_n: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let base = match args.get(3) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir(),
    };
    let dir = base.join(format!("journal-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // 1. Import.
    let m = manifest(&dir, import_n);
    let path = dir.join("import.journal");
    let t = Instant::now();
    let j = Journal::open_for_run(&path, &m, &meta(&m), OpenOptions::default())?;
    let import = t.elapsed();
    let after_import = size(&path);
    println!(
        "import: {import_n} ops in {:.3} s ({:.0} ops/s); journal {} bytes = {:.1} bytes/op",
        import.as_secs_f64(),
        import_n as f64 / import.as_secs_f64(),
        after_import,
        after_import as f64 / import_n as f64
    );
    let secs = all_done(j, import_n).await?;
    let after_done = size(&path);
    println!(
        "writer: {import_n} outcomes recorded and committed in {secs:.3} s ({:.0} records/s); \
         journal {} bytes = {:.1} bytes/op when all done",
        import_n as f64 / secs,
        after_done,
        after_done as f64 / import_n as f64
    );
    drop(m);

    // 2. Re-run of a finished job: the runner's completed-job path.
    let m = manifest(&dir, rerun_n);
    let path = dir.join("rerun.journal");
    let j = Journal::open_for_run(&path, &m, &meta(&m), OpenOptions::default())?;
    all_done(j, rerun_n).await?;
    for round in 1..=3 {
        let t = Instant::now();
        let j = Journal::open_for_run(&path, &m, &meta(&m), OpenOptions::default())?;
        let opened = t.elapsed();
        let pending = j.pending()?;
        let counts = j.counts()?;
        let total = t.elapsed();
        assert!(pending.is_empty() && counts.done == rerun_n as u64);
        drop(j);
        println!(
            "re-run of a finished {rerun_n}-op job (round {round}): open + checks {:.1} ms, \
             + pending (0) + counts = {:.1} ms total",
            opened.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    let j = Journal::open_read_only(&path)?;
    let s = imkit_batch::journal::status::status_report(&j)?;
    println!(
        "status of the {rerun_n}-op journal: {:.1} ms ({} done)",
        t.elapsed().as_secs_f64() * 1e3,
        s.counts.done
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
