//! Why the journal cannot be used: [`JournalError`], one variant per refusal or failure, each
//! with a message that says what to do, and the exit status each calls for.

use std::path::{Path, PathBuf};

use crate::Exit;

/// Why the journal cannot be used. Callers branch on the variant; [`JournalError::exit`]
/// gives the process exit status it calls for.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal belongs to a manifest whose bytes have changed since the job started.
    #[error(
        "the manifest changed since this job started: journal {path} was written for checksum \
         {journal_checksum}, but {manifest} now has checksum {manifest_checksum}. Run with \
         --fresh to start a new job (the old journal is kept, renamed), or restore the original \
         manifest to resume"
    )]
    ChecksumMismatch {
        path: PathBuf,
        manifest: PathBuf,
        journal_checksum: String,
        manifest_checksum: String,
    },
    /// The manifest has the journal's checksum but expands to a different number of ops
    /// (e.g. another imkit-batch version expands it differently).
    #[error(
        "journal {path} holds {journal_ops} ops but the manifest now expands to {manifest_ops}; \
         it cannot be resumed safely. Run with --fresh to start a new job (the old journal is \
         kept, renamed)"
    )]
    PlanMismatch {
        path: PathBuf,
        journal_ops: u64,
        manifest_ops: u64,
    },
    /// Another process holds the job's lock.
    #[error(
        "journal {path} is in use by another imkit-batch run{}; two runs must never drive one \
         job: wait for it to end or stop it (Ctrl-C or SIGTERM), then run again",
        pid.map(|p| format!(" (pid {p}?)")).unwrap_or_default()
    )]
    Locked { path: PathBuf, pid: Option<u32> },
    /// A torn, truncated, corrupt or foreign file. Nothing was written to it.
    #[error(
        "journal {path} is damaged or not an imkit-batch journal: {reason}. It was left \
         untouched: inspect it or move it aside, or start a new job with --fresh (which keeps \
         the file, renamed)"
    )]
    Corrupt { path: PathBuf, reason: String },
    /// Written by a newer imkit-batch whose schema this build does not know.
    #[error(
        "journal {path} has schema version {found}, newer than version {supported} that this \
         imkit-batch reads; use the imkit-batch version that wrote it"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: i32,
        supported: i32,
    },
    /// No journal at that path (`status`, `report`, `revert`).
    #[error("no journal at {path}: check the path (`run` writes MANIFEST.journal by default)")]
    NotFound { path: PathBuf },
    /// A SQLite `-wal`/`-shm`/`-journal` file of a journal that is not there any more.
    #[error(
        "{leftover} exists but journal {path} does not: it belongs to a journal that was moved \
         or deleted, and SQLite would apply it to a new one. Move it aside (it is never deleted \
         for you), then run again"
    )]
    Orphan { path: PathBuf, leftover: PathBuf },
    #[error("journal {path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}: cannot {action}: {source}")]
    Sqlite {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The writer thread has stopped (after a write error, or after `finish`).
    #[error("journal {path}: the writer has stopped: {reason}")]
    WriterStopped { path: PathBuf, reason: String },
    #[error("journal error: {0}")]
    Other(String),
}

impl JournalError {
    /// The exit status this error calls for: refusals before anything is sent exit 2; a
    /// journal that cannot be written mid-run aborts the job (3).
    pub fn exit(&self) -> Exit {
        match self {
            JournalError::WriterStopped { .. } => Exit::Aborted,
            _ => Exit::Invalid,
        }
    }

    /// Maps a SQLite error, recognising damaged files.
    pub(super) fn sqlite(path: &Path, action: &'static str, source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match source.sqlite_error_code() {
            Some(C::NotADatabase) => JournalError::Corrupt {
                path: path.to_path_buf(),
                reason: "SQLite says the file is not a database".into(),
            },
            Some(C::DatabaseCorrupt) => JournalError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("SQLite found it malformed while trying to {action} ({source})"),
            },
            _ => JournalError::Sqlite {
                path: path.to_path_buf(),
                action,
                source,
            },
        }
    }

    pub(super) fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

impl From<JournalError> for crate::ExitError {
    fn from(e: JournalError) -> crate::ExitError {
        crate::ExitError::new(e.exit(), e.to_string())
    }
}
