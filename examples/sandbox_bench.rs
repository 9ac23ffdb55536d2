//! Throughput of the sandbox with no latency and no faults, driven in process by a keep-alive
//! reqwest client (so the figure includes the client's own cost on the same cores; an
//! external tool such as `wrk` against `imkit-batch sandbox` measures the server alone).
//! Prints figures, never fails on timing.
//!
//! `cargo run --release --example sandbox_bench -- [REQUESTS] [CONCURRENCY]`
//!
//! For the server alone, `examples/sandbox_wrk/*.lua` drive `imkit-batch sandbox` with `wrk`
//! (see the commands at the top of each script).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use imkit_batch::sandbox::{self, DEFAULT_OWNER, SandboxConfig, SandboxCredentials};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let concurrency: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let creds = SandboxCredentials::generate();
    let mut config = SandboxConfig::new(creds.clone());
    const ROOMS: u64 = 1000;
    for i in 0..ROOMS {
        config.add_room(format!("room-{i}"), DEFAULT_OWNER, &[]);
    }
    config.add_client("bench-client");
    let sb = sandbox::spawn(config).await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, next, failures, creds) = (
            client.clone(),
            next.clone(),
            failures.clone(),
            creds.clone(),
        );
        let base = sb.base_url();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let room = format!("room-{}", (i / 4) % ROOMS);
                // A mix of the four endpoints: freeze/unfreeze, read, mute/unmute.
                let rb = match i % 4 {
                    0 => client
                        .put(format!("{base}/rooms/{room}"))
                        .body(format!(r#"{{"status":{}}}"#, (i / 4) % 2)),
                    1 => client.get(format!("{base}/rooms/{room}")),
                    2 => client.post(format!("{base}/admin/clients/bench-client/mute/{room}")),
                    _ => client.delete(format!("{base}/admin/clients/bench-client/mute/{room}")),
                };
                let rb = rb
                    .header("IM-CLIENT-KEY", &creds.client_key)
                    .header("IM-Authorization", &creds.token)
                    .header("IM-API-KEY", &creds.api_key);
                let ok = match rb.send().await {
                    // 400 ROOM_NOT_MUTED is a documented answer, not a failure here.
                    Ok(r) => {
                        let s = r.status().as_u16();
                        r.bytes().await.is_ok() && (s == 200 || s == 400)
                    }
                    Err(_) => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{total} requests, concurrency {concurrency}: {secs:.2}s, {:.0} requests/s, {} failures",
        total as f64 / secs,
        failures.load(Ordering::Relaxed)
    );
    let stats = sb.stats();
    println!(
        "sandbox saw {} requests, applied {}",
        stats.requests.values().sum::<u64>(),
        stats.applied_total
    );
    sb.shutdown().await?;
    Ok(())
}
