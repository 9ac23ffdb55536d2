//! The IMKIT client: one shared HTTP client, the request for each op, the response envelope
//! in both documented error shapes, and the classification every caller branches on.

mod classify;
pub(crate) mod client;
mod credentials;
mod reach;
pub mod request;

pub use classify::Outcome;
pub(crate) use classify::UNBAN_OWNER_ONLY;
pub use client::{ApiClient, Attempt, ClientError, ClientOptions};
pub use credentials::{Credentials, CredentialsError};
pub(crate) use credentials::{EnvSources, Secret};
pub use reach::{Reach, Unreached, UnreachedKind};
pub use request::{Method, Request};
