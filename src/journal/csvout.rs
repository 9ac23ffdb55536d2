//! Writing ops as a CSV manifest that `validate` and `run` accept (SPEC §2): a fixed header
//! with every column, `action` first (so no data line can start with `#`), empty cells for
//! "not given", list fields `;`-joined, `botMode` as `true`/`false`, `opening` and `status`
//! as `0`/`1`. Values a CSV manifest cannot express (an empty string, an empty list, a list
//! item holding `;`) are refused, so callers list the op apart instead of writing a row that
//! would mean something else.

use std::io::Write;

use crate::op::{Op, RoomFields};

/// The header of every manifest this module writes.
pub const HEADER: [&str; 14] = [
    "action",
    "room",
    "client",
    "name",
    "cover",
    "description",
    "roomTags",
    "webhook",
    "botMode",
    "extParams",
    "opening",
    "owner",
    "managers",
    "status",
];

fn text(name: &str, v: &Option<String>) -> Result<String, String> {
    match v {
        None => Ok(String::new()),
        Some(s) if s.is_empty() => Err(format!(
            "`{name}` is an empty string, which a CSV manifest cannot express (an empty cell means \"not given\")"
        )),
        Some(s) => Ok(s.clone()),
    }
}

fn list(name: &str, v: &Option<Vec<String>>) -> Result<String, String> {
    match v {
        None => Ok(String::new()),
        Some(items) if items.is_empty() => Err(format!(
            "`{name}` is an empty list, which a CSV manifest cannot express"
        )),
        Some(items) => {
            if let Some(bad) = items.iter().find(|i| i.is_empty() || i.contains(';')) {
                return Err(format!(
                    "`{name}` item {bad:?} cannot be written in a `;`-separated CSV cell"
                ));
            }
            Ok(items.join(";"))
        }
    }
}

/// The cells of `op` in [`HEADER`] order, or why it cannot be written.
pub fn row(op: &Op) -> Result<Vec<String>, String> {
    let empty = RoomFields::default();
    let f = op.fields.as_deref().unwrap_or(&empty);
    Ok(vec![
        op.action.as_str().to_owned(),
        op.room.to_string(),
        op.client.as_deref().unwrap_or_default().to_owned(),
        text("name", &f.name)?,
        text("cover", &f.cover)?,
        text("description", &f.description)?,
        list("roomTags", &f.room_tags)?,
        text("webhook", &f.webhook)?,
        f.bot_mode.map(|b| b.to_string()).unwrap_or_default(),
        text("extParams", &f.ext_params)?,
        f.opening.map(|b| b.to_string()).unwrap_or_default(),
        text("owner", &f.owner)?,
        list("managers", &f.managers)?,
        f.status.map(|b| b.to_string()).unwrap_or_default(),
    ])
}

/// A CSV manifest being written: rows first, then `#` comment lines.
pub struct ManifestWriter<W: Write> {
    csv: csv::Writer<W>,
    comments: Vec<String>,
}

impl<W: Write> ManifestWriter<W> {
    pub fn new(out: W) -> std::io::Result<Self> {
        let mut csv = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(out);
        csv.write_record(HEADER)?;
        Ok(ManifestWriter {
            csv,
            comments: Vec::new(),
        })
    }

    /// Writes one op; `Err(reason)` (nothing written) when a CSV manifest cannot express it.
    pub fn op(&mut self, op: &Op) -> std::io::Result<Result<(), String>> {
        match row(op) {
            Ok(cells) => {
                self.csv.write_record(&cells)?;
                Ok(Ok(()))
            }
            Err(reason) => Ok(Err(reason)),
        }
    }

    /// Adds a `# ...` comment line, written after the rows (control characters become
    /// spaces, so a comment is always exactly one line).
    pub fn comment(&mut self, text: &str) -> std::io::Result<()> {
        let line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.comments.push(line);
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.csv.flush()?;
        let mut out = self
            .csv
            .into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        for c in &self.comments {
            writeln!(out, "# {c}")?;
        }
        out.flush()?;
        Ok(out)
    }
}
