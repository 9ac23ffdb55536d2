//! Resuming a journal that is on disk. First the checks, through a read-only connection,
//! before anything is written: the target the job was run against (a job run against the
//! sandbox is never resumed against an API, nor one API's job against another), and the ops
//! the manifest means now (see `diff`; its bytes alone do not matter). Then the updates a
//! resume starts with, in one transaction: the manifest's new checksum and lines when only
//! its bytes changed, a `--replan`, `--retry-failed`, the end time of a finished job.
//!
//! A `--replan` keeps every op recorded done or failed as it is (they stay in the journal,
//! marked out of the plan when the manifest no longer has them), marks the pending ops the
//! manifest no longer has skipped with the reason, and adds the new ops as pending. It is
//! the first thing that needs schema version 2 (`ops.removed_at`), and moves a version 1
//! journal to it.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, Transaction, params};

use super::diff::{self, Places, PlanDiff, Recorded};
use super::open::{TidyWal, no_wal, open_checked};
use super::store::parse_op;
use super::types::now_ms;
use super::{JobMeta, JournalError, OpState, OpenOptions, import, schema};
use crate::manifest::{Location, Manifest};

/// Why a `--replan` skipped a pending op.
const SKIP_REASON: &str = "no longer in the manifest (as it was): skipped by --replan";

/// What a resume writes: a new target (`--retarget`), and an update of the plan.
struct Checked {
    retarget: Option<String>,
    update: Update,
}

/// What a resume writes to the plan.
enum Update {
    /// The manifest is the one the job started with.
    Nothing,
    /// The manifest's bytes changed but not its ops: its new checksum, sources and lines.
    Relabel(Vec<Recorded>, PlanDiff),
    /// `--replan`: the journal's plan becomes the manifest's.
    Replan(Vec<Recorded>, PlanDiff),
}

/// Opens the existing journal of `manifest` at `path` for a resumed run: checks it without
/// writing, then opens it for writing and applies the updates a resume starts with.
pub(super) fn resume(
    path: &Path,
    manifest: &Manifest,
    meta: &JobMeta,
    opts: OpenOptions,
) -> Result<Connection, JournalError> {
    let checked = check_resumable(path, manifest, meta, opts)?;
    let mut conn = open_read_write(path)?;
    start_resume(&mut conn, path, manifest, checked, opts.retry_failed)?;
    Ok(conn)
}

/// Checks, without writing, that the journal at `path` is healthy and can be resumed with
/// `manifest` and `meta`. SQLite's read-only look creates an empty `-wal` and `-shm` when
/// there were none; a refused run removes them again (as `status` does), so it leaves the
/// directory as it found it.
fn check_resumable(
    path: &Path,
    manifest: &Manifest,
    meta: &JobMeta,
    opts: OpenOptions,
) -> Result<Checked, JournalError> {
    let no_wal_before = no_wal(path);
    let checked = check_written_for(path, manifest, meta, opts);
    // Only a journal that passed the checks is touched (a damaged one never is).
    if let Err(e) = &checked
        && no_wal_before
        && matches!(
            e,
            JournalError::ManifestChanged { .. }
                | JournalError::ReplanOutOfOrder { .. }
                | JournalError::TargetMismatch { .. }
        )
    {
        drop(TidyWal(path.to_path_buf()));
    }
    checked
}

/// The job record's fields a resume checks.
struct JobRecord {
    checksum: String,
    settings: String,
    version: i32,
}

/// Refuses the journal at `path` when it is damaged, was run against another target (unless
/// `--retarget`), or holds other ops than `manifest` means (unless `--replan`); says what
/// to update otherwise.
fn check_written_for(
    path: &Path,
    manifest: &Manifest,
    meta: &JobMeta,
    opts: OpenOptions,
) -> Result<Checked, JournalError> {
    let ro = open_checked(path)?;
    let job = read_job(&ro, path)?;
    let untouched = nothing_answered(&ro, path)?;
    let retarget = check_target(path, &job.settings, meta, opts.retarget, untouched)?;
    let update = check_plan(&ro, path, &job, manifest, opts)?;
    Ok(Checked { retarget, update })
}

/// Refuses a manifest whose ops are not the journal's plan (unless `--replan`, when the
/// order of the manifest can be kept); says what to update otherwise.
fn check_plan(
    ro: &Connection,
    path: &Path,
    job: &JobRecord,
    manifest: &Manifest,
    opts: OpenOptions,
) -> Result<Update, JournalError> {
    if job.checksum == manifest.checksum
        && plan_len(ro, path, job.version)? == manifest.ops.len() as u64
    {
        return Ok(Update::Nothing);
    }
    let plan = read_plan(ro, path, job.version)?;
    let d = diff::diff(&plan, &manifest.ops);
    if d.is_same() {
        return Ok(Update::Relabel(plan, d));
    }
    if !opts.replan {
        return Err(changed_error(ro, path, manifest, &plan, &d)?);
    }
    if let Some((pending, fin)) = d.out_of_order {
        let state = d
            .matched
            .iter()
            .find(|&&(_, m)| m == fin)
            .map_or("final", |&(p, _)| plan[p].state.as_str());
        let at = |i: usize| {
            let p = &manifest.ops[i];
            format!("{} ({})", p.op, manifest.describe(p.source))
        };
        return Err(JournalError::ReplanOutOfOrder {
            path: path.to_path_buf(),
            op: at(pending),
            final_op: at(fin),
            state,
        });
    }
    Ok(Update::Replan(plan, d))
}

/// Whether the ops `manifest` means are the ones the journal holds (whatever its bytes):
/// what `plan` needs to say whether `run` would resume the job or refuse it as changed.
pub(crate) fn same_ops(
    journal: &super::Journal,
    manifest: &Manifest,
) -> Result<bool, JournalError> {
    let (conn, path) = (journal.conn(), journal.path());
    let job = read_job(conn, path)?;
    if job.checksum == manifest.checksum
        && plan_len(conn, path, job.version)? == manifest.ops.len() as u64
    {
        return Ok(true);
    }
    let plan = read_plan(conn, path, job.version)?;
    Ok(diff::diff(&plan, &manifest.ops).is_same())
}

fn read_job(conn: &Connection, path: &Path) -> Result<JobRecord, JournalError> {
    let err = |e| JournalError::sqlite(path, "read the job record", e);
    let version = user_version(conn).map_err(err)?;
    let (checksum, settings) = conn
        .query_row("SELECT checksum, settings FROM job WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(err)?;
    Ok(JobRecord {
        checksum,
        settings,
        version,
    })
}

fn user_version(conn: &Connection) -> rusqlite::Result<i32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// True when no op of the journal has an outcome or an answer recorded: whatever target it
/// was bound to saw nothing that counts (a run that never reached its host, or one killed
/// before its first commit), so it may be bound to another without `--retarget`: the new
/// target gets every op, as a first run would send them.
fn nothing_answered(conn: &Connection, path: &Path) -> Result<bool, JournalError> {
    conn.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM ops WHERE state <> 'pending' OR http_status IS NOT NULL)",
        [],
        |r| r.get(0),
    )
    .map_err(|e| JournalError::sqlite(path, "look for recorded answers", e))
}

/// The target recorded in a job's settings JSON (`base_url`: a URL, or `sandbox`).
pub(super) fn recorded_target(settings: &serde_json::Value) -> Option<String> {
    settings.get("base_url")?.as_str().map(str::to_owned)
}

/// Refuses to resume against `meta.target` a job whose first run recorded another target;
/// with `retarget`, a job recorded against another base URL is resumed, and the new target
/// returned to be recorded; so is a job whose journal records no answer at all
/// (`untouched`: see [`nothing_answered`]), whatever the two targets are. A journal or a
/// caller that names no target is not checked.
fn check_target(
    path: &Path,
    settings: &str,
    meta: &JobMeta,
    retarget: bool,
    untouched: bool,
) -> Result<Option<String>, JournalError> {
    let Some(target) = meta.target.as_deref() else {
        return Ok(None);
    };
    let recorded = serde_json::from_str(settings)
        .ok()
        .and_then(|s| recorded_target(&s));
    let Some(recorded) = recorded else {
        return Ok(None);
    };
    if recorded.trim_end_matches('/') == target.trim_end_matches('/') {
        return Ok(None);
    }
    let sandbox = [recorded.as_str(), target].contains(&super::SANDBOX_TARGET);
    if untouched || (retarget && !sandbox) {
        return Ok(Some(target.to_string()));
    }
    Err(JournalError::TargetMismatch {
        path: path.to_path_buf(),
        recorded,
        target: target.to_string(),
    })
}

/// `--retarget`: binds the job to `target` (its settings' `base_url`).
fn record_target(tx: &Transaction, path: &Path, target: &str) -> Result<(), JournalError> {
    tx.execute(
        "UPDATE job SET settings = json_set(settings, '$.base_url', ?1) WHERE id = 1",
        [target],
    )
    .map_err(|e| JournalError::sqlite(path, "record the new target", e))?;
    tracing::warn!(
        journal = %path.display(),
        target,
        "the job now sends to {target} (--retarget, or no answer was ever recorded from the \
         target it had); what the journal records as done stays done"
    );
    Ok(())
}

/// The condition that keeps the ops of the plan (a `--replan` takes ops out of it).
fn in_plan(version: i32) -> &'static str {
    if version >= 2 {
        "WHERE removed_at IS NULL"
    } else {
        ""
    }
}

fn plan_len(conn: &Connection, path: &Path, version: i32) -> Result<u64, JournalError> {
    conn.query_row(
        &format!("SELECT count(*) FROM ops {}", in_plan(version)),
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .map_err(|e| JournalError::sqlite(path, "count the ops", e))
}

/// The journal's plan, in seq order.
fn read_plan(conn: &Connection, path: &Path, version: i32) -> Result<Vec<Recorded>, JournalError> {
    let err = |e| JournalError::sqlite(path, "read the ops", e);
    let corrupt = |seq: i64, reason: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("op {seq}: {reason}"),
    };
    let sql = format!(
        "SELECT seq, source_file, line, action, room, client, fields, state FROM ops {} \
         ORDER BY seq",
        in_plan(version)
    );
    let mut st = conn.prepare(&sql).map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        let seq: i64 = r.get(0).map_err(err)?;
        let action: String = r.get(3).map_err(err)?;
        let op = parse_op(
            &action,
            r.get(4).map_err(err)?,
            r.get(5).map_err(err)?,
            r.get(6).map_err(err)?,
        )
        .map_err(|e| corrupt(seq, e))?;
        let state: String = r.get(7).map_err(err)?;
        let state =
            OpState::parse(&state).ok_or_else(|| corrupt(seq, format!("state {state:?}")))?;
        out.push(Recorded {
            seq: seq as u64,
            op,
            state,
            source: Location {
                file: r.get::<_, i64>(1).map_err(err)? as u32,
                line: r.get::<_, i64>(2).map_err(err)? as u32,
            },
        });
    }
    Ok(out)
}

/// The refusal of a manifest whose ops changed: counts and a few examples with their lines.
fn changed_error(
    conn: &Connection,
    path: &Path,
    manifest: &Manifest,
    plan: &[Recorded],
    d: &PlanDiff,
) -> Result<JournalError, JournalError> {
    let sources = read_sources(conn, path)?;
    let journal_place = |r: &Recorded| {
        let file = sources
            .iter()
            .find(|(i, _)| *i == i64::from(r.source.file))
            .map_or("?", |(_, p)| p.as_str());
        format!("{file}:{}", r.source.line)
    };
    let manifest_place = |p: &crate::manifest::PlannedOp| manifest.describe(p.source);
    let places = Places {
        journal: &journal_place,
        manifest: &manifest_place,
    };
    Ok(JournalError::ManifestChanged {
        path: path.to_path_buf(),
        manifest: manifest.path.clone(),
        added: (d.added.len() - d.changed) as u64,
        removed: (d.removed.len() - d.changed) as u64,
        changed: d.changed as u64,
        examples: diff::examples(d, plan, &manifest.ops, &places),
    })
}

/// The journal's sources, `(idx, path)`.
fn read_sources(conn: &Connection, path: &Path) -> Result<Vec<(i64, String)>, JournalError> {
    let err = |e| JournalError::sqlite(path, "read the sources", e);
    let mut st = conn
        .prepare("SELECT idx, path FROM sources ORDER BY idx")
        .map_err(err)?;
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(err)
}

/// A configured read-write connection to the checked journal at `path`, in WAL mode.
fn open_read_write(path: &Path) -> Result<Connection, JournalError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| JournalError::sqlite(path, "open", e))?;
    schema::configure(&conn).map_err(|e| JournalError::sqlite(path, "configure", e))?;
    // A run killed between the import's commit and the switch to WAL left a complete journal
    // in rollback mode: switch now, or this run's commits would lock out `status`.
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .map_err(|e| JournalError::sqlite(path, "read the journal mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(|e| JournalError::sqlite(path, "turn on WAL mode", e))?;
    }
    Ok(conn)
}

/// The updates a resumed run starts with, in one transaction: the manifest's new identity
/// or a replan, `--retry-failed` puts failed ops back to pending, and a finished job left
/// without an end time gets one.
fn start_resume(
    conn: &mut Connection,
    path: &Path,
    manifest: &Manifest,
    checked: Checked,
    retry_failed: bool,
) -> Result<(), JournalError> {
    let tx = conn
        .transaction()
        .map_err(|e| JournalError::sqlite(path, "update the job", e))?;
    if let Some(target) = &checked.retarget {
        record_target(&tx, path, target)?;
    }
    match checked.update {
        Update::Nothing => {}
        Update::Relabel(plan, d) => relabel(&tx, path, manifest, &plan, &d)?,
        Update::Replan(plan, d) => replan(&tx, path, manifest, &plan, &d)?,
    }
    if retry_failed {
        reset_failed(&tx, path)?;
    }
    // A run killed after its last outcome was committed but before it recorded its end left
    // a finished job without an end time: give it the time of its last attempt, so `status`
    // does not show a complete job as never ended.
    tx.execute(
        "UPDATE job SET ended_at = (SELECT max(last_attempt_at) FROM ops) \
         WHERE id = 1 AND ended_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM ops WHERE state = 'pending')",
        [],
    )
    .map_err(|e| JournalError::sqlite(path, "record the end of the job", e))?;
    tx.commit()
        .map_err(|e| JournalError::sqlite(path, "update the job", e))
}

/// `--retry-failed`: failed ops of the plan back to pending.
fn reset_failed(tx: &Transaction, path: &Path) -> Result<(), JournalError> {
    let err = |e| JournalError::sqlite(path, "reset failed ops", e);
    let version = user_version(tx).map_err(err)?;
    let plan = in_plan(version).replace("WHERE", "AND");
    let n = tx
        .execute(
            &format!("UPDATE ops SET state = 'pending' WHERE state = 'failed' {plan}"),
            [],
        )
        .map_err(err)?;
    if n > 0 {
        tx.execute("UPDATE job SET ended_at = NULL WHERE id = 1", [])
            .map_err(err)?;
    }
    tracing::info!(journal = %path.display(), ops = n, "--retry-failed: {n} failed ops set back to pending");
    Ok(())
}

/// Only the manifest's bytes changed: records its new checksum, and the files and lines its
/// ops now come from.
fn relabel(
    tx: &Transaction,
    path: &Path,
    manifest: &Manifest,
    plan: &[Recorded],
    d: &PlanDiff,
) -> Result<(), JournalError> {
    let files = merge_sources(tx, path, manifest)?;
    relocate(tx, path, manifest, plan, d, &files)?;
    tx.execute(
        "UPDATE job SET checksum = ?1 WHERE id = 1",
        [&manifest.checksum],
    )
    .map_err(|e| JournalError::sqlite(path, "record the manifest's checksum", e))?;
    tracing::info!(
        journal = %path.display(),
        manifest = %manifest.path.display(),
        checksum = %manifest.checksum,
        "the manifest's bytes changed since the job started, but not its ops: resuming (the journal records its new checksum)"
    );
    Ok(())
}

/// The journal index of each of the manifest's sources, adding those it does not hold (the
/// old ones stay: ops out of the plan still name them).
fn merge_sources(
    tx: &Transaction,
    path: &Path,
    manifest: &Manifest,
) -> Result<Vec<i64>, JournalError> {
    let mut known = read_sources(tx, path)?;
    let err = |e| JournalError::sqlite(path, "record the sources", e);
    let mut out = Vec::with_capacity(manifest.sources.len());
    for p in &manifest.sources {
        let p = p.to_string_lossy();
        let idx = match known.iter().find(|(_, k)| *k == p) {
            Some((i, _)) => *i,
            None => {
                let i = known.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
                tx.execute(
                    "INSERT INTO sources (idx, path) VALUES (?1, ?2)",
                    params![i, p],
                )
                .map_err(err)?;
                known.push((i, p.into_owned()));
                i
            }
        };
        out.push(idx);
    }
    Ok(out)
}

/// Records, for each op in both, the file and line the manifest now gives it.
fn relocate(
    tx: &Transaction,
    path: &Path,
    manifest: &Manifest,
    plan: &[Recorded],
    d: &PlanDiff,
    files: &[i64],
) -> Result<(), JournalError> {
    let err = |e| JournalError::sqlite(path, "record the ops' lines", e);
    let mut st = tx
        .prepare("UPDATE ops SET source_file = ?2, line = ?3 WHERE seq = ?1")
        .map_err(err)?;
    for &(p, m) in &d.matched {
        let (old, new) = (&plan[p], manifest.ops[m].source);
        let file = file_index(files, new);
        if (i64::from(old.source.file), old.source.line) != (file, new.line) {
            st.execute(params![old.seq as i64, file, new.line])
                .map_err(err)?;
        }
    }
    Ok(())
}

fn file_index(files: &[i64], loc: Location) -> i64 {
    files.get(loc.file as usize).copied().unwrap_or(0)
}

/// `--replan`: ops the manifest no longer has leave the plan (pending ones are skipped), the
/// ops still to send of each target that gets ops go after every op in the journal, in
/// manifest order, the added ones as new pending ops.
fn replan(
    tx: &Transaction,
    path: &Path,
    manifest: &Manifest,
    plan: &[Recorded],
    d: &PlanDiff,
) -> Result<(), JournalError> {
    let err = |action| move |e| JournalError::sqlite(path, action, e);
    if user_version(tx).map_err(err("read the schema"))? < 2 {
        tx.execute_batch(schema::MIGRATE_V2)
            .map_err(err("move the journal to schema version 2"))?;
    }
    let files = merge_sources(tx, path, manifest)?;
    relocate(tx, path, manifest, plan, d, &files)?;
    let skipped = take_out(tx, path, plan, &d.removed)?;
    place(tx, path, manifest, plan, d, &files)?;
    tx.execute(
        "UPDATE job SET checksum = ?1, total_ops = (SELECT count(*) FROM ops), \
         ended_at = CASE WHEN EXISTS (SELECT 1 FROM ops WHERE state = 'pending') THEN NULL \
         ELSE ended_at END WHERE id = 1",
        [&manifest.checksum],
    )
    .map_err(err("record the new plan"))?;
    let (added, changed) = (d.added.len() - d.changed, d.changed);
    let kept = d.removed.len() - skipped;
    tracing::warn!(
        journal = %path.display(),
        added, changed, skipped, kept_final = kept,
        "--replan: {added} ops added and {changed} changed (to send), {skipped} pending ops no \
         longer in the manifest skipped; {kept} done or failed ops no longer in it are kept as \
         they are, and nothing done is sent again"
    );
    Ok(())
}

/// Takes the `removed` ops out of the plan; pending ones become skipped, with the reason.
/// Returns how many were skipped.
fn take_out(
    tx: &Transaction,
    path: &Path,
    plan: &[Recorded],
    removed: &[usize],
) -> Result<usize, JournalError> {
    let err = |e| JournalError::sqlite(path, "take ops out of the plan", e);
    let now = now_ms();
    let mut skip = tx
        .prepare(
            "UPDATE ops SET state = 'skipped', removed_at = ?2, \
             message = ?3 || COALESCE('; last answer: ' || message, '') WHERE seq = ?1",
        )
        .map_err(err)?;
    let mut keep = tx
        .prepare("UPDATE ops SET removed_at = ?2 WHERE seq = ?1")
        .map_err(err)?;
    let mut skipped = 0;
    for r in removed.iter().map(|&i| &plan[i]) {
        if r.state == OpState::Pending {
            skip.execute(params![r.seq as i64, now, SKIP_REASON])
                .map_err(err)?;
            skipped += 1;
        } else {
            keep.execute(params![r.seq as i64, now]).map_err(err)?;
        }
    }
    Ok(skipped)
}

/// Gives the ops of `d.to_place`, in manifest order, the seqs after every op in the journal:
/// an op in the journal is moved there, an added one is inserted.
fn place(
    tx: &Transaction,
    path: &Path,
    manifest: &Manifest,
    plan: &[Recorded],
    d: &PlanDiff,
    files: &[i64],
) -> Result<(), JournalError> {
    let err = |e| JournalError::sqlite(path, "add the new ops", e);
    let next: i64 = tx
        .query_row("SELECT COALESCE(max(seq), -1) + 1 FROM ops", [], |r| {
            r.get(0)
        })
        .map_err(err)?;
    let in_journal: HashMap<usize, u64> =
        d.matched.iter().map(|&(p, m)| (m, plan[p].seq)).collect();
    let mut moving = tx
        .prepare("UPDATE ops SET seq = ?2 WHERE seq = ?1")
        .map_err(err)?;
    let mut insert = tx.prepare(import::INSERT_OP).map_err(err)?;
    for (&m, seq) in d.to_place.iter().zip(next..) {
        match in_journal.get(&m) {
            Some(&old) => {
                moving.execute(params![old as i64, seq]).map_err(err)?;
            }
            None => {
                let p = &manifest.ops[m];
                import::insert_op(&mut insert, path, seq, file_index(files, p.source), p)?;
            }
        }
    }
    Ok(())
}
