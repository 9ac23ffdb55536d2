//! The one integration-test binary: each area of the tool has its own module here; shared
//! helpers (paths, the binary, servers on port 0) live in `util`.

mod api_client;
mod crash;
mod journal;
mod manifest;
mod run;
mod sandbox;
mod util;
