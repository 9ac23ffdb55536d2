//! The journal's on-disk format: the SQL schema, its versions (`PRAGMA user_version`; 2 adds
//! what a `--replan` records, and a journal moves to it at its first replan), the
//! application id that marks a SQLite file as an imkit-batch journal, the durability
//! settings of every connection, and the checks that tell a journal from a torn, corrupt or
//! foreign file *before* anything is written to it.
//!
//! Durability choice: the journal runs in WAL mode with `synchronous=FULL`. WAL with
//! `NORMAL` would already keep "kill -9 loses nothing" (a committed transaction is in the
//! OS page cache the moment `COMMIT` returns, and a killed process does not take the page
//! cache with it), but after a power loss or kernel crash it may lose the last commits, and
//! an op that was sent but whose `done` was lost would be sent again after the reboot.
//! `FULL` fsyncs the WAL at every commit; the group-committing writer (see `writer`) makes
//! that one fsync per batch of outcomes, so the cost does not limit throughput.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rusqlite::Connection;

use super::open::suffixed;
use super::wal;

/// `PRAGMA application_id` of every imkit-batch journal: "IMKB".
pub(super) const APPLICATION_ID: i32 = 0x494D_4B42;

/// The newest schema version this build reads and writes (`PRAGMA user_version`).
pub(super) const SCHEMA_VERSION: i32 = 2;

/// The version a new journal is created at. Version 2 only adds what a `--replan` needs,
/// and a journal moves to it at its first replan ([`MIGRATE_V2`]): a journal never
/// replanned stays readable by the builds that read version 1.
pub(super) const FIRST_VERSION: i32 = 1;

/// Version 1 to 2: `ops.removed_at`, when a `--replan` took the op out of the plan (the
/// manifest no longer had it); `NULL` for an op of the plan.
pub(super) const MIGRATE_V2: &str = "
ALTER TABLE ops ADD COLUMN removed_at INTEGER;
PRAGMA user_version = 2;
";

/// The whole schema of version 1 (version 2 is it plus [`MIGRATE_V2`]). Times are Unix
/// milliseconds (UTC), small and sortable;
/// `status` and `report` render them as RFC 3339.
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE job (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    manifest_path TEXT    NOT NULL,
    checksum      TEXT    NOT NULL,
    name          TEXT,
    -- The effective settings of the first run, as given by the runner. Never a credential:
    -- the runner builds this JSON from flags and manifest settings only.
    settings      TEXT    NOT NULL,
    tool_version  TEXT    NOT NULL,
    total_ops     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    ended_at      INTEGER
);
CREATE TABLE sources (
    idx  INTEGER PRIMARY KEY,
    path TEXT NOT NULL
);
CREATE TABLE runs (
    id             INTEGER PRIMARY KEY,
    pid            INTEGER NOT NULL,
    tool_version   TEXT    NOT NULL,
    settings       TEXT    NOT NULL,
    retry_failed   INTEGER NOT NULL DEFAULT 0,
    started_at     INTEGER NOT NULL,
    last_commit_at INTEGER,
    ended_at       INTEGER,
    exit_code      INTEGER,
    exit           TEXT,
    ops_finalized  INTEGER NOT NULL DEFAULT 0,
    outcomes       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE ops (
    seq              INTEGER PRIMARY KEY,
    source_file      INTEGER NOT NULL,
    line             INTEGER NOT NULL,
    action           TEXT    NOT NULL,
    room             TEXT    NOT NULL,
    client           TEXT,
    fields           TEXT,
    state            TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'done', 'failed', 'skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    http_status      INTEGER,
    rc               INTEGER,
    error_code       TEXT,
    message          TEXT,
    latency_ms       INTEGER,
    first_attempt_at INTEGER,
    last_attempt_at  INTEGER
);
CREATE TABLE snapshots (
    room     TEXT PRIMARY KEY,
    prior    TEXT,
    taken_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The ban lists read before each room's first ban or unban (`--snapshot`): `prior` is
/// `{"banned": [client ids]}`, or NULL when the list is unknown (the read was refused).
/// Added to version 1 without changing it: a journal written before ban snapshots existed
/// gets this table when a run opens it (`IF NOT EXISTS`), reads of one without it find no ban
/// snapshot, and an older build reading a newer journal ignores a table it does not know.
pub(super) const BAN_SNAPSHOTS: &str = "
CREATE TABLE IF NOT EXISTS ban_snapshots (
    room     TEXT PRIMARY KEY,
    prior    TEXT,
    taken_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The pace each run settled on (JSON: per credential, the pace, why, who shares it), for
/// `status` after the run. Made by the writer when a run first records one, so a journal of
/// an earlier build is read as it is.
pub(super) const RUN_PACE: &str = "
CREATE TABLE IF NOT EXISTS run_pace (
    run_id INTEGER PRIMARY KEY,
    pace   TEXT NOT NULL
);
";

/// Settings every connection gets. `busy_timeout` lets a reader wait out a checkpoint.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(())
}

/// Why [`check_header`] refused a file.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeaderError {
    /// The file does not start with the SQLite header: not a database at all.
    NotSqlite(String),
    /// A SQLite file that is torn or truncated.
    Damaged(String),
}

/// What a look at the raw bytes says about a would-be journal, before SQLite opens it. A
/// main file shorter than its header says is whole when its WAL holds the missing pages (a
/// checkpoint cut short, by a full disk say: see `wal`); otherwise it is truncated.
pub(super) fn check_header(path: &Path) -> Result<(), HeaderError> {
    let unreadable = |e: std::io::Error| HeaderError::Damaged(format!("cannot be read ({e})"));
    let mut f = File::open(path).map_err(unreadable)?;
    let len = f.metadata().map_err(unreadable)?.len();
    if len == 0 {
        return Err(HeaderError::Damaged("the file is empty (0 bytes)".into()));
    }
    let mut head = [0u8; 100];
    if len < head.len() as u64 {
        return Err(HeaderError::NotSqlite(format!(
            "the file is only {len} bytes long, shorter than a SQLite header"
        )));
    }
    f.read_exact(&mut head).map_err(unreadable)?;
    if &head[..16] != b"SQLite format 3\0" {
        return Err(HeaderError::NotSqlite(format!(
            "the file ({len} bytes) is not a SQLite database (its first bytes are not the SQLite header)"
        )));
    }
    let page_size = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65536u64,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([head[28], head[29], head[30], head[31]]));
    let change = &head[24..28];
    let valid_for = &head[92..96];
    // The in-header size is only meaningful when "version-valid-for" matches the change
    // counter (SQLite file format §1.3.7).
    if page_size >= 512 && change == valid_for && pages > 0 && len < pages * page_size {
        if wal::committed(&suffixed(path, "-wal"), page_size)
            .is_some_and(|c| c.covers(len / page_size, pages))
        {
            tracing::debug!(
                journal = %path.display(),
                "the file is shorter than its header says, but its WAL holds the missing pages \
                 (a checkpoint was cut short, e.g. by a full disk): it is whole"
            );
            return Ok(());
        }
        return Err(HeaderError::Damaged(format!(
            "the file is truncated: its header says {} bytes ({pages} pages of {page_size}) but it holds {len}",
            pages * page_size
        )));
    }
    Ok(())
}

/// Checks that `conn` is an imkit-batch journal of a schema version this build reads.
/// Reads only; never writes.
pub(super) fn check_identity(conn: &Connection) -> Result<(), IdentityError> {
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(IdentityError::Sqlite)?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(IdentityError::Sqlite)?;
    if app != APPLICATION_ID {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(IdentityError::Sqlite)?;
        return Err(IdentityError::Foreign(if tables == 0 {
            "it is an empty SQLite database (an import that never completed, or not a journal)"
                .into()
        } else {
            format!("it is a SQLite database of another application (application_id {app:#x})")
        }));
    }
    if version > SCHEMA_VERSION {
        return Err(IdentityError::Newer(version));
    }
    if version < 1 {
        return Err(IdentityError::Foreign(format!(
            "it has no known schema version (user_version {version})"
        )));
    }
    let has_job: i64 = conn
        .query_row("SELECT count(*) FROM job", [], |r| r.get(0))
        .map_err(IdentityError::Sqlite)?;
    if has_job != 1 {
        return Err(IdentityError::Foreign(
            "it has no job record (an import that never completed)".into(),
        ));
    }
    Ok(())
}

/// Why [`check_identity`] refused a file.
#[derive(Debug)]
pub(super) enum IdentityError {
    Foreign(String),
    Newer(i32),
    Sqlite(rusqlite::Error),
}
