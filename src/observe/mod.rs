//! What a job leaves behind for monitoring and for people, read from its journal: the
//! Prometheus metrics file `run --metrics-file` writes at the end of every run (`metrics`).

pub(crate) mod metrics;
