//! The IMKIT client: one shared HTTP client, the request for each op, the response envelope
//! in both documented error shapes, and the classification every caller branches on.

pub mod request;

pub use request::{Method, Request, segment};
