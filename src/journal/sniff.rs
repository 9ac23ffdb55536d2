//! What a file given where a journal was expected is, when it is no SQLite database: a
//! manifest (the likeliest mistake: `status jobs/x.csv` for `status jobs/x.csv.journal`),
//! another text file, or neither (then it is reported as damaged, since a journal whose
//! first page was overwritten looks the same).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::JournalError;
use super::open::suffixed;

/// How much of the file is looked at.
const SNIFF: usize = 4096;

/// The error for the file at `path`, no SQLite database, when it is a text file (a manifest
/// or not); `None` for anything else.
pub(super) fn not_a_journal(path: &Path) -> Option<JournalError> {
    let text = text_head(path)?;
    let message = if looks_like_manifest(path, &text) {
        manifest_message(path)
    } else {
        format!(
            "{} is a text file, not a journal: give the path of a job's journal (`run` writes \
             it to MANIFEST.journal unless given --journal PATH)",
            path.display()
        )
    };
    Some(JournalError::NotAJournal {
        path: path.to_path_buf(),
        message,
    })
}

/// The error for a directory given as a journal.
pub(super) fn directory(path: &Path) -> JournalError {
    JournalError::NotAJournal {
        path: path.to_path_buf(),
        message: format!(
            "{} is a directory, not a journal: give the path of a job's journal (`run` writes \
             it to MANIFEST.journal unless given --journal PATH)",
            path.display()
        ),
    }
}

fn manifest_message(path: &Path) -> String {
    let journal = suffixed(path, ".journal");
    let p = path.display();
    let j = journal.display();
    if journal.is_file() {
        format!("{p} looks like a manifest, not a journal; the journal of this manifest is {j}")
    } else {
        format!(
            "{p} looks like a manifest, not a journal; its journal would be {j} (where `run` \
             writes it unless given --journal PATH), and there is none there yet"
        )
    }
}

/// The start of the file as text, when it is text: UTF-8 (a character cut at the end of
/// what was read aside) without NUL bytes.
fn text_head(path: &Path) -> Option<String> {
    let mut buf = Vec::with_capacity(SNIFF);
    File::open(path)
        .ok()?
        .take(SNIFF as u64)
        .read_to_end(&mut buf)
        .ok()?;
    if buf.is_empty() || buf.contains(&0) {
        return None;
    }
    match std::str::from_utf8(&buf) {
        Ok(s) => Some(s.to_string()),
        Err(e) if e.error_len().is_none() => {
            Some(String::from_utf8_lossy(&buf[..e.valid_up_to()]).into_owned())
        }
        Err(_) => None,
    }
}

/// A manifest by its name (`.csv`, `.yaml`, `.yml`) or its first line that is no comment: a
/// CSV header with a `room` column, or a YAML key of a manifest.
fn looks_like_manifest(path: &Path, text: &str) -> bool {
    let by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["csv", "yaml", "yml"].contains(&e.to_ascii_lowercase().as_str()));
    let first = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && l != &"---");
    let by_content = first.is_some_and(|l| {
        l.split(',').any(|c| c.trim().eq_ignore_ascii_case("room"))
            || [
                "version:",
                "name:",
                "ops:",
                "rooms:",
                "settings:",
                "window:",
                "action:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
    });
    by_name || by_content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_other_text_are_told_apart_from_binary_files() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("job.csv");
        std::fs::write(&csv, "# night\nroom,client\nr1,c1\n").unwrap();
        let e = not_a_journal(&csv).unwrap().to_string();
        assert!(e.contains("looks like a manifest, not a journal"), "{e}");
        assert!(e.contains("there is none there yet"), "{e}");
        std::fs::write(dir.path().join("job.csv.journal"), "x").unwrap();
        let e = not_a_journal(&csv).unwrap().to_string();
        assert!(
            e.ends_with(&format!(
                "the journal of this manifest is {}.journal",
                csv.display()
            )),
            "{e}"
        );
        let yaml = dir.path().join("job.txt");
        std::fs::write(&yaml, "version: 1\nops:\n  - freeze: r\n").unwrap();
        assert!(
            not_a_journal(&yaml)
                .unwrap()
                .to_string()
                .contains("looks like a manifest")
        );
        let notes = dir.path().join("notes");
        std::fs::write(&notes, "hello\n").unwrap();
        let e = not_a_journal(&notes).unwrap().to_string();
        assert!(e.contains("is a text file, not a journal"), "{e}");
        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0x89u8, 0, 1, 2, 0xff]).unwrap();
        assert!(not_a_journal(&bin).is_none());
    }
}
