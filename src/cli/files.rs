//! Files of the read-only journal commands (`status`, `report`, `revert`): the journal
//! opened read-only, and where their output goes: standard output or, with `-o FILE`, a
//! temporary file renamed into place once written whole (never over the journal).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::journal::Journal;

/// The journal at `path`, read-only (no lock: it works while a run holds the job).
pub(super) fn open_journal(path: &Path) -> anyhow::Result<Journal> {
    Journal::open_read_only(path).map_err(|e| anyhow::Error::new(crate::ExitError::from(e)))
}

/// Where a command's output goes: stdout, or a file written whole then renamed into place.
enum Output {
    Stdout,
    File { tmp: PathBuf, dest: PathBuf },
}

impl Output {
    fn new(dest: Option<&Path>, journal: &Path) -> anyhow::Result<(Output, Box<dyn Write>)> {
        let Some(dest) = dest else {
            return Ok((Output::Stdout, Box::new(BufWriter::new(std::io::stdout()))));
        };
        if same_file(dest, journal) {
            bail!(
                "refusing to write to {}: it is the journal itself (or one of its files); choose another -o FILE",
                dest.display()
            );
        }
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok((
            Output::File {
                tmp,
                dest: dest.to_path_buf(),
            },
            Box::new(BufWriter::new(f)),
        ))
    }

    fn commit(self, mut w: Box<dyn Write>) -> anyhow::Result<()> {
        w.flush().context("cannot write the output")?;
        drop(w);
        if let Output::File { tmp, dest } = self {
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
        }
        Ok(())
    }

    fn abandon(self) {
        if let Output::File { tmp, .. } = self {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// True when `dest` names the journal, its lock or one of SQLite's files of it.
fn same_file(dest: &Path, journal: &Path) -> bool {
    let canon = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
            _ => std::env::current_dir().ok()?,
        };
        Some(parent.join(p.file_name()?))
    };
    let (Some(d), Some(j)) = (canon(dest), canon(journal)) else {
        return false;
    };
    ["", "-wal", "-shm", "-journal", ".lock"].iter().any(|s| {
        let mut o = j.as_os_str().to_owned();
        o.push(s);
        Path::new(&o) == d
    })
}

/// Writes what `body` makes to `dest` (whole, then renamed into place) or standard output.
pub(super) fn write_with(
    dest: Option<&Path>,
    journal: &Path,
    body: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (out, mut w) = Output::new(dest, journal)?;
    match body(&mut w) {
        Ok(()) => out.commit(w),
        Err(e) => {
            drop(w);
            out.abandon();
            Err(e)
        }
    }
}

/// Writes a manifest made by `body` (which returns the ops written and the lines describing
/// ops it had to leave out) to `dest` or standard output, then tells stderr what was written
/// and lists what was left out.
pub(super) fn write_manifest(
    dest: Option<&Path>,
    journal: &Path,
    written_note: &str,
    apart_note: &str,
    body: impl FnOnce(&mut dyn Write) -> anyhow::Result<(u64, Vec<String>)>,
) -> anyhow::Result<()> {
    let mut result = (0, Vec::new());
    write_with(dest, journal, |w| {
        result = body(w)?;
        Ok(())
    })?;
    let (written, apart) = result;
    let dest = dest.map_or_else(|| "standard output".into(), |p| p.display().to_string());
    eprintln!("{written} {written_note} to {dest}");
    if !apart.is_empty() {
        eprintln!("{} {apart_note}:", apart.len());
        for a in apart.iter().take(APART_SHOWN) {
            eprintln!("  {a}");
        }
        if apart.len() > APART_SHOWN {
            eprintln!(
                "  ... and {} more, every one of them in the manifest's closing comments",
                apart.len() - APART_SHOWN
            );
        }
    }
    Ok(())
}

/// How many ops left out of a written manifest are named on stderr: a job of 200,000 rooms
/// run without `--snapshot` leaves every one out of its revert, and the terminal gets the
/// first few and the count; the manifest's comments keep the whole list.
const APART_SHOWN: usize = 20;
