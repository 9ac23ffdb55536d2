//! The one integration-test binary: each area of the tool has its own module here; shared
//! helpers (paths, the binary, servers on port 0) live in `util`.

mod budget;
mod crash;
mod journal;
mod manifest;
mod run;
mod run_sandbox;
mod sandbox;
mod util;
