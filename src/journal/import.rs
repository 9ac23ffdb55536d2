//! Creating a new journal: the file is made with mode 0600 before SQLite writes a byte, then
//! the schema and the whole plan go in one transaction (in rollback-journal mode, so a big
//! plan is written once), then the journal switches to WAL for the run.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, Statement, Transaction, params};

use super::open::suffixed;
use super::schema;
use super::types::now_ms;
use super::{JobMeta, JournalError};
use crate::manifest::{Manifest, PlannedOp};

/// Creates a new journal at `path` (mode 0600) and imports the plan, unless a file appeared
/// there first (`None`). The caller holds the run lock.
pub(super) fn create_new(
    path: &Path,
    manifest: &Manifest,
    meta: &JobMeta,
    settings: &str,
) -> Result<Option<Connection>, JournalError> {
    refuse_orphans(path)?;
    match FsOpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => drop(file),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(JournalError::io_write(path, "create the journal", e)),
    }
    let conn = match create(path, manifest, meta, settings) {
        Ok(conn) => conn,
        Err(e) => {
            // Our own file, created a moment ago, holding no committed data.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    tracing::info!(
        journal = %path.display(),
        ops = manifest.ops.len(),
        "new journal created"
    );
    Ok(Some(conn))
}

/// A leftover WAL or rollback journal with content would be applied by SQLite to the new
/// file. A `-shm` is rebuilt by the first connection, and an empty file is inert.
fn refuse_orphans(path: &Path) -> Result<(), JournalError> {
    for c in ["-wal", "-journal"] {
        let leftover = suffixed(path, c);
        if leftover.symlink_metadata().is_ok_and(|m| m.len() > 0) {
            return Err(JournalError::Orphan {
                path: path.to_path_buf(),
                leftover,
            });
        }
    }
    Ok(())
}

/// Creates the schema and imports the whole plan in one transaction, then turns WAL on.
fn create(
    path: &Path,
    manifest: &Manifest,
    meta: &JobMeta,
    settings: &str,
) -> Result<Connection, JournalError> {
    let err = |action| move |e| JournalError::sqlite(path, action, e);
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err("open"))?;
    schema::configure(&conn).map_err(err("configure"))?;
    // A larger page cache keeps the import from spilling half-built pages to disk.
    conn.pragma_update(None, "cache_size", -65_536)
        .map_err(err("configure"))?;
    // The import runs in rollback-journal mode: for a new file SQLite journals almost
    // nothing, so 1,000,000 ops are written once instead of twice (WAL, then checkpoint).
    // A crash mid-import leaves an empty file and its rollback journal: the next run keeps
    // both, renamed, and imports again (see `interrupted_import`).
    let tx = conn.transaction().map_err(err("start the import"))?;
    create_schema(&tx, path)?;
    record_job(&tx, path, manifest, meta, settings)?;
    import_plan(&tx, path, manifest)?;
    tx.commit().map_err(err("commit the import"))?;
    conn.pragma_update(None, "cache_size", -2_000)
        .map_err(err("configure"))?;
    turn_on_wal(&conn, path)?;
    sync_parent_dir(path);
    Ok(conn)
}

fn create_schema(tx: &Transaction, path: &Path) -> Result<(), JournalError> {
    let err = |e| JournalError::sqlite(path, "create the schema", e);
    tx.execute_batch(schema::SCHEMA_V1).map_err(err)?;
    tx.execute_batch(schema::BAN_SNAPSHOTS).map_err(err)?;
    tx.pragma_update(None, "application_id", schema::APPLICATION_ID)
        .map_err(err)?;
    tx.pragma_update(None, "user_version", schema::FIRST_VERSION)
        .map_err(err)
}

fn record_job(
    tx: &Transaction,
    path: &Path,
    manifest: &Manifest,
    meta: &JobMeta,
    settings: &str,
) -> Result<(), JournalError> {
    tx.execute(
        "INSERT INTO job (id, manifest_path, checksum, name, settings, tool_version, total_ops, \
         created_at) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            meta.manifest_path.to_string_lossy(),
            manifest.checksum,
            manifest.name.as_ref().or(meta.name.as_ref()),
            settings,
            env!("CARGO_PKG_VERSION"),
            manifest.ops.len() as i64,
            now_ms(),
        ],
    )
    .map_err(|e| JournalError::sqlite(path, "record the job", e))?;
    Ok(())
}

/// The manifest's source files, then every op in manifest order (`seq` is the position).
fn import_plan(tx: &Transaction, path: &Path, manifest: &Manifest) -> Result<(), JournalError> {
    let err = |action| move |e| JournalError::sqlite(path, action, e);
    let mut st = tx
        .prepare("INSERT INTO sources (idx, path) VALUES (?1, ?2)")
        .map_err(err("record the sources"))?;
    for (i, p) in manifest.sources.iter().enumerate() {
        st.execute(params![i as i64, p.to_string_lossy()])
            .map_err(err("record the sources"))?;
    }
    let mut st = tx.prepare(INSERT_OP).map_err(err("import the plan"))?;
    for (seq, p) in manifest.ops.iter().enumerate() {
        insert_op(&mut st, path, seq as i64, i64::from(p.source.file), p)?;
    }
    Ok(())
}

/// The statement [`insert_op`] runs.
pub(super) const INSERT_OP: &str = "INSERT INTO ops (seq, source_file, line, action, room, \
     client, fields) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Inserts `p` as a pending op at `seq`, from the journal's source `file`, through `st`
/// (prepared from [`INSERT_OP`]).
pub(super) fn insert_op(
    st: &mut Statement,
    path: &Path,
    seq: i64,
    file: i64,
    p: &PlannedOp,
) -> Result<(), JournalError> {
    let fields = match &p.op.fields {
        Some(f) => Some(serde_json::to_string(&**f).map_err(|e| {
            JournalError::Other(format!("cannot encode the fields of op {seq}: {e}"))
        })?),
        None => None,
    };
    st.execute(params![
        seq,
        file,
        p.source.line,
        p.op.action.as_str(),
        &*p.op.room,
        p.op.client.as_deref(),
        fields,
    ])
    .map_err(|e| JournalError::sqlite(path, "import the plan", e))?;
    Ok(())
}

fn turn_on_wal(conn: &Connection, path: &Path) -> Result<(), JournalError> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| JournalError::sqlite(path, "turn on WAL mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(JournalError::Other(format!(
            "journal {}: SQLite refused WAL mode (got {mode}); is it on a network file system?",
            path.display()
        )));
    }
    Ok(())
}

/// Makes the new directory entry durable too; failure here is not worth refusing for.
fn sync_parent_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
