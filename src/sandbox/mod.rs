//! A faithful local emulator of the IMKIT endpoints the runner drives (docs/behaviour.md §7), with seeded
//! fault injection, a per-credential rate limit and a control API for tests.
//!
//! - `config`: what a sandbox starts with (credentials, rooms, clients, users, faults)
//! - `state`: rooms and clients, their JSON objects, partial updates, mute sets
//! - `bans`: the ban book (who is banned where, by whom, since when) and its JSON objects
//! - `route`: what a request is (endpoint, decoded ids, canonical key, kind)
//! - `handlers`: the endpoints and their documented answers; `ban_api`: the ban endpoints
//! - `faults`: seeded, replayable fault decisions
//! - `limit`: the per-credential rate limit (also what the runner's pacing tests run
//!   against); `timer`: precise latency
//! - `tracking`: counters, applied counts and the log ring, and the reports built from them
//! - `shared`: the state every request shares
//! - `control`: the `/_sandbox/` control API
//! - `server`: the router and the accept loop, [`run`] and [`spawn`]
//! - `handle`: [`SandboxHandle`], a sandbox running in this process
//!
//! One entry point, [`run`], serves `imkit-batch sandbox` (whose flags live in the CLI layer);
//! [`spawn`] runs the same server in process on a free loopback port for `run --sandbox` and
//! the tests.

mod ban_api;
mod bans;
mod config;
mod control;
mod faults;
mod handle;
mod handlers;
pub(crate) mod limit;
mod route;
mod server;
mod shared;
mod state;
mod timer;
mod tracking;

pub use config::{
    ADMIN_ID, DEFAULT_OWNER, FaultRates, MessageSeed, Profile, RoomSeed, RoomSeeds, SandboxConfig,
    SandboxCredentials,
};
pub use faults::Fault;
pub use handle::SandboxHandle;
pub use route::OpKind;
pub use server::{run, spawn};
pub use tracking::{LogEntry, OpCounts, Stats};
