//! Benchmark input generator: writes an N-row CSV manifest for measuring `validate`.
//!
//! ```text
//! cargo run --release --example gen_manifest -- 1000000 big.csv           # `room` column only
//! cargo run --release --example gen_manifest -- 1000000 mixed.csv --mixed # action,room,client
//! /usr/bin/time -v target/release/imkit-batch validate big.csv --action freeze
//! ```
//!
//! Room ids look like real exports (`room-000042-tw`); `--mixed` writes freeze, unfreeze and
//! mute rows. Prints what it wrote; it measures nothing itself.

use std::io::{BufWriter, Write};
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gen_manifest ROWS OUT.csv [--mixed]";
    let (Some(rows), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let Ok(rows) = rows.replace('_', "").parse::<u64>() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mixed = args.iter().any(|a| a == "--mixed");
    let regions = ["tw", "hk", "sg", "jp", "kr", "th", "vn", "ph"];
    let started = Instant::now();
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    if mixed {
        writeln!(w, "action,room,client")?;
    } else {
        writeln!(w, "room")?;
    }
    for i in 0..rows {
        let region = regions[(i % regions.len() as u64) as usize];
        if mixed {
            match i % 3 {
                0 => writeln!(w, "freeze,room-{i:07}-{region},")?,
                1 => writeln!(w, "unfreeze,room-{:07}-{region},", i + 1_000_000_000)?,
                _ => writeln!(w, "mute,room-{:07}-{region},u-{:06}", i / 7, i % 100_003)?,
            }
        } else {
            writeln!(w, "room-{i:07}-{region}")?;
        }
    }
    w.flush()?;
    let bytes = std::fs::metadata(out)?.len();
    println!(
        "wrote {rows} rows ({:.1} MiB) to {out} in {:.2?}",
        bytes as f64 / (1 << 20) as f64,
        started.elapsed()
    );
    Ok(())
}
