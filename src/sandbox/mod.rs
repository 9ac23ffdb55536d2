//! A faithful local emulator of the IMKIT endpoints the runner drives (SPEC §7), with seeded
//! fault injection, a per-credential rate limit and a control API for tests.
//!
//! - [`config`]: what a sandbox starts with (credentials, rooms, clients, users, faults)
//! - [`state`]: rooms and clients, their JSON objects, partial updates, mute sets
//! - [`handlers`]: the endpoints and their documented answers
//! - [`faults`]: seeded, replayable fault decisions
//! - [`control`]: the `/_sandbox/` control API
//! - [`server`]: the accept loop, [`run`], [`spawn`] and [`SandboxHandle`]
//!
//! One entry point, [`run`], serves `imkit-batch sandbox` (whose flags live in the CLI layer);
//! [`spawn`] runs the same server in process on a free loopback port for `run --sandbox` and
//! the tests.

pub mod config;
pub mod control;
pub mod faults;
pub mod handlers;
mod limit;
pub mod server;
pub mod state;
mod timer;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use config::{
    ADMIN_ID, DEFAULT_OWNER, FaultRates, MadeUp, MessageSeed, Profile, RoomSeed, SandboxConfig,
    SandboxCredentials,
};
pub use control::{LogEntry, OpCounts, OpKind, Stats};
pub use faults::Fault;
pub use server::{SandboxHandle, run, spawn};

/// The router: control API under `/_sandbox/`, everything else to the emulated API (which
/// routes on the raw path itself, so an encoded id can never reach another endpoint).
fn router(shared: Arc<server::Shared>) -> Router {
    Router::new()
        .route("/_sandbox/rooms/{id}", get(control::room))
        .route("/_sandbox/clients/{id}", get(control::client))
        .route("/_sandbox/stats", get(control::stats))
        .route("/_sandbox/applied", get(control::applied))
        .route("/_sandbox/log", get(control::log))
        .route("/_sandbox/reset", post(control::reset))
        .fallback(handlers::api)
        .with_state(shared)
}
