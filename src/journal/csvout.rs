//! Writing ops as a CSV manifest that `validate` and `run` accept (SPEC §2): a fixed header
//! with every column, `action` first (so no data line can start with `#`), empty cells for
//! "not given", list fields `;`-joined, `botMode` as `true`/`false`, `opening` and `status`
//! as `0`/`1`. Values a CSV manifest cannot express (an empty string, an empty list, a list
//! item holding `;`) are refused, so callers list the op apart instead of writing a row that
//! would mean something else.

use std::io::Write;

use crate::op::{Op, RoomFields};

/// The header of every manifest this module writes: every column the manifest reader knows.
pub const HEADER: [&str; 14] = crate::manifest::csv::COLUMNS;

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(ops: &[Op], comments: &[&str]) -> String {
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        for op in ops {
            w.op(op).unwrap().unwrap();
        }
        for c in comments {
            w.comment(c).unwrap();
        }
        String::from_utf8(w.finish().unwrap()).unwrap()
    }

    fn read(text: &str) -> Vec<Vec<String>> {
        let mut rd = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        assert_eq!(rd.headers().unwrap().iter().collect::<Vec<_>>(), HEADER);
        rd.records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn every_kind_of_op_has_its_row() {
        let f = RoomFields {
            name: Some("Help, \"Desk\"".into()),
            room_tags: Some(vec!["a".into(), "b c".into()]),
            bot_mode: Some(false),
            opening: Some(1),
            owner: Some("o".into()),
            managers: Some(vec!["m1".into()]),
            status: Some(0),
            ..Default::default()
        };
        let text = write(
            &[Op::freeze("r,1"), Op::unmute("c", "r"), Op::update("r", f)],
            &["two\nlines"],
        );
        assert_eq!(
            text,
            "action,room,client,name,cover,description,roomTags,webhook,botMode,extParams,opening,owner,managers,status\n\
             freeze,\"r,1\",,,,,,,,,,,,\n\
             unmute,r,c,,,,,,,,,,,\n\
             update,r,,\"Help, \"\"Desk\"\"\",,,a;b c,,false,,1,o,m1,0\n\
             # two lines\n"
        );
    }

    #[test]
    fn values_a_csv_cannot_express_are_refused() {
        let cases = [
            RoomFields {
                name: Some(String::new()),
                ..Default::default()
            },
            RoomFields {
                room_tags: Some(vec![]),
                ..Default::default()
            },
            RoomFields {
                managers: Some(vec!["a;b".into()]),
                ..Default::default()
            },
        ];
        for f in cases {
            let err = row(&Op::update("r", f.clone())).unwrap_err();
            assert!(err.contains("CSV") || err.contains("`;`"), "{f:?}: {err}");
        }
    }

    proptest! {
        #[test]
        fn rows_read_back_as_written(
            room in "[^\\p{Cc}]{1,20}",
            client in "[^\\p{Cc}]{1,20}",
            name in "\\PC{1,30}",
            tags in proptest::collection::vec("[^;\\p{Cc}]{1,8}", 1..4),
        ) {
            let f = RoomFields { name: Some(name.clone()), room_tags: Some(tags.clone()), ..Default::default() };
            let ops = [Op::mute(client.as_str(), room.as_str()), Op::update(room.as_str(), f)];
            let back = read(&write(&ops, &["a comment, with \"quotes\""]));
            prop_assert_eq!(back.len(), 2);
            prop_assert_eq!(&back[0][0], "mute");
            prop_assert_eq!(&back[0][1], &room);
            prop_assert_eq!(&back[0][2], &client);
            prop_assert_eq!(&back[1][3], &name);
            prop_assert_eq!(&back[1][6], &tags.join(";"));
        }
    }
}
