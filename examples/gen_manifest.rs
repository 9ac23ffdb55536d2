//! Benchmark input generator: writes an N-row CSV manifest for measuring `validate`.
//!
//! ```text
//! cargo run --release --example gen_manifest -- 1000000 big.csv           # `room` column only
//! cargo run --release --example gen_manifest -- 1000000 mixed.csv --mixed # action,room,client
//! cargo run --release --example gen_manifest -- 1000000 upd.csv --updates # room updates
//! /usr/bin/time -v target/release/imkit-batch validate big.csv --action freeze
//! ```
//!
//! Room ids look like real exports (`room-000042-tw`); `--mixed` writes freeze, unfreeze and
//! mute rows; `--updates` writes update rows setting name, description, roomTags, opening and
//! botMode (the shape of a data-migration export). Prints what it wrote; it measures nothing itself.

use std::io::{BufWriter, Write};
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gen_manifest ROWS OUT.csv [--mixed | --updates]";
    let (Some(rows), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let Ok(rows) = rows.replace('_', "").parse::<u64>() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mixed = args.iter().any(|a| a == "--mixed");
    let updates = args.iter().any(|a| a == "--updates");
    if mixed && updates {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let regions = ["tw", "hk", "sg", "jp", "kr", "th", "vn", "ph"];
    let started = Instant::now();
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    if updates {
        writeln!(w, "action,room,name,description,roomTags,opening,botMode")?;
    } else if mixed {
        writeln!(w, "action,room,client")?;
    } else {
        writeln!(w, "room")?;
    }
    for i in 0..rows {
        let region = regions[(i % regions.len() as u64) as usize];
        if updates {
            let tags = ["vip;night", "support", "vip;sales;apac", "community"][(i % 4) as usize];
            writeln!(
                w,
                "update,room-{i:07}-{region},Room {i} ({region}),Support room for region \
                 {region}; migrated from the legacy desk,{tags},{},{}",
                i % 2,
                i % 3 == 0
            )?;
        } else if mixed {
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
