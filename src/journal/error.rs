//! Why the journal cannot be used: [`JournalError`], one variant per refusal or failure, each
//! with a message that says what to do, and the exit status each calls for.

use std::path::{Path, PathBuf};

use crate::Exit;

/// Why the journal cannot be used. Callers branch on the variant; [`JournalError::exit`]
/// gives the process exit status it calls for.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The manifest no longer means the ops the journal holds (added, removed or changed
    /// ops; a change of comments or layout alone is not one). Nothing was written.
    #[error(
        "the manifest changed since this job started: the ops of {manifest} are not those \
         journal {path} holds ({added} added, {removed} removed, {changed} changed){}\n\
         Nothing was sent. To go on without sending again what is done, run again with \
         --replan: ops done or failed stay as they are, added and changed ops are sent, and \
         pending ops no longer in the manifest are skipped. Or run with --fresh to start a new \
         job that sends every op again (the old journal is kept, renamed), or restore the \
         manifest to resume",
        examples.iter().map(|e| format!("\n  {e}")).collect::<String>()
    )]
    ManifestChanged {
        path: PathBuf,
        manifest: PathBuf,
        added: u64,
        removed: u64,
        changed: u64,
        /// A few of the ops, each with its manifest line.
        examples: Vec<String>,
    },
    /// `--replan` would send an op after one that the manifest puts after it.
    #[error(
        "--replan cannot keep the manifest's order: {op} comes before {final_op}, which journal \
         {path} records as {state}; sent now, it would act after it. Nothing was sent. Move it \
         after that op in the manifest, or run with --fresh to start a new job (the old journal \
         is kept, renamed)"
    )]
    ReplanOutOfOrder {
        path: PathBuf,
        /// The op still to send, with its manifest line.
        op: String,
        /// The op already final, with its manifest line.
        final_op: String,
        state: &'static str,
    },
    /// The journal records a job run against another target (another base URL, or the
    /// sandbox when this run is against an API, or the other way round).
    #[error("{}", target_mismatch(path, recorded, target))]
    TargetMismatch {
        path: PathBuf,
        /// The recorded target: a base URL, or `sandbox`.
        recorded: String,
        target: String,
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
    /// A file that is no journal at all (a manifest, another text file, a directory),
    /// given where a journal was expected.
    #[error("{message}")]
    NotAJournal { path: PathBuf, message: String },
    /// The journal (or its lock file, or its directory) cannot be written there: a
    /// read-only file system, or no permission. Nothing was sent.
    #[error(
        "cannot write the journal {path}: {source}. Nothing was sent. `run` needs a writable \
         place for its journal: give another path with --journal PATH, or make {} writable",
        dir_of(path).display()
    )]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file system holding the journal is full.
    #[error(
        "journal {path}: cannot {action}: the disk holding it is full. Free space there, then \
         run again: the journal keeps every outcome committed so far, and the job resumes where \
         it stopped"
    )]
    DiskFull { path: PathBuf, action: &'static str },
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
            Some(C::DiskFull) => JournalError::DiskFull {
                path: path.to_path_buf(),
                action,
            },
            Some(C::ReadOnly) => JournalError::NotWritable {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("SQLite cannot write to it ({source})"),
                ),
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

    /// Maps an I/O error writing `path` (creating it, or its directory, or the lock file),
    /// recognising a place where nothing can be written and a full disk.
    pub(super) fn io_write(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        if matches!(source.kind(), K::ReadOnlyFilesystem | K::PermissionDenied) {
            return JournalError::NotWritable {
                path: path.to_path_buf(),
                source,
            };
        }
        if source.kind() == K::StorageFull {
            return JournalError::DiskFull {
                path: path.to_path_buf(),
                action,
            };
        }
        JournalError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

/// The refusal of a resume against another target: what happened and what to do. Moving
/// from one API address to another may be right (`--retarget`); a rehearsal against the
/// sandbox never stands for a real run, nor the other way round.
fn target_mismatch(path: &Path, recorded: &str, target: &str) -> String {
    let (r, t) = (describe_target(recorded), describe_target(target));
    let sandbox = [recorded, target].contains(&super::SANDBOX_TARGET);
    let retarget = if sandbox {
        "Use".to_string()
    } else {
        format!(
            "If {t} is the same service as {r} under another address, run again with \
             --retarget to resume against it. Otherwise use"
        )
    };
    format!(
        "journal {} recorded a run against {r}; it cannot be resumed against {t}: what it \
         records as done was done there, not on {t}. Nothing was sent. {retarget} --journal \
         PATH for a separate journal of this run, or --fresh to start a new job in its place \
         (the old journal is kept, renamed)",
        path.display()
    )
}

/// A target as messages name it: `the sandbox`, or the base URL.
fn describe_target(t: &str) -> String {
    if t == super::SANDBOX_TARGET {
        "the sandbox".into()
    } else {
        t.to_string()
    }
}

/// The directory of `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

impl From<JournalError> for crate::ExitError {
    fn from(e: JournalError) -> crate::ExitError {
        crate::ExitError::new(e.exit(), e.to_string())
    }
}
