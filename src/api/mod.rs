//! The IMKIT client: one shared HTTP client, the request for each op, the response envelope
//! in both documented error shapes, and the classification every caller branches on.

mod classify;
pub(crate) mod client;
mod credentials;
pub mod request;

pub use classify::Outcome;
pub(crate) use classify::UNBAN_OWNER_ONLY;
pub use client::{ApiClient, Attempt, ClientError, ClientOptions};
pub(crate) use credentials::Secret;
pub use credentials::{Credentials, CredentialsError};
pub use request::{Method, Request};
