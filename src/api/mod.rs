//! The IMKIT client: one shared HTTP client, the request for each op, the response envelope
//! in both documented error shapes, and the classification every caller branches on.

pub mod classify;
pub mod client;
pub mod credentials;
pub mod request;

pub use classify::{Outcome, classify};
pub use client::{ApiClient, Attempt, ClientError, ClientOptions};
pub use credentials::{Credentials, CredentialsError, Secret};
pub use request::{Method, Request, segment};
