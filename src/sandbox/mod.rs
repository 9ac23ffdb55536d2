//! A faithful local emulator of the IMKIT endpoints the runner drives (SPEC §7), with seeded
//! fault injection, a per-credential rate limit and a control API for tests.

use crate::Exit;

/// Flags of `imkit-batch sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub listen: String,
}

pub async fn command(args: SandboxArgs) -> anyhow::Result<Exit> {
    let _ = args;
    anyhow::bail!("`sandbox` is not built yet")
}
