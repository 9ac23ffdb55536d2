//! Writing ops as a CSV manifest that `validate` and `run` accept (docs/behaviour.md §2): a fixed header
//! with every column, `action` first (so no data line can start with `#`), empty cells for
//! "not given", list fields `;`-joined, `botMode` as `true`/`false`, `opening` and `status`
//! as `0`/`1`.
//!
//! A row is written only if the manifest reader gives back exactly the op it was written
//! from. The reader trims every cell and every `;`-separated list item and drops empty items,
//! so values it would change are refused: an empty string, an empty list, a list item that is
//! empty or holds `;`, and any id, text value or list item with leading or trailing
//! whitespace (`"  Old name  "` would come back as `"Old name"`, `"   "` as "not given").
//! Ids are checked as the reader checks them. Callers list a refused op apart instead of
//! writing a row that would mean something else.

use std::io::Write;

use crate::op::{Field, FieldRef, Op, RoomFields};

/// The header of every manifest this module writes: every column the manifest reader knows.
const HEADER: [&str; crate::manifest::csv::COLUMNS.len()] = crate::manifest::csv::COLUMNS;

/// Why the reader would not give back `s` as written in one cell: `None` when it would.
fn cell_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some(
            "an empty string, which a CSV manifest cannot express (an empty cell means \"not given\")",
        )
    } else if s.trim() != s {
        Some(
            "a value with leading or trailing whitespace, which a CSV manifest cannot keep (the reader trims every cell)",
        )
    } else {
        None
    }
}

/// Why the reader would not give back the list `items` of field `name` as written in one
/// cell: `None` when it would.
fn list_problem(name: &str, items: &[String]) -> Option<String> {
    if items.is_empty() {
        return Some(format!(
            "`{name}` is an empty list, which a CSV manifest cannot express"
        ));
    }
    items.iter().find_map(|item| {
        if item.contains(';') {
            Some(format!(
                "`{name}` item {item:?} holds `;`, which separates the items of a CSV cell"
            ))
        } else if item.is_empty() {
            Some(format!(
                "`{name}` has an empty item, which a CSV manifest cannot keep (the reader drops empty items)"
            ))
        } else if item.trim() != item {
            Some(format!(
                "`{name}` item {item:?} has leading or trailing whitespace, which a CSV manifest cannot keep (the reader trims every item)"
            ))
        } else {
            None
        }
    })
}

/// The cell of field `k` given as `v`, or why the reader would not give it back.
fn field_cell(k: Field, v: FieldRef<'_>) -> Result<String, String> {
    let problem = match v {
        FieldRef::Text(s) => cell_problem(s).map(|why| format!("`{k}` {s:?} is {why}")),
        FieldRef::List(items) => list_problem(k.name(), items),
        FieldRef::Bool(_) | FieldRef::Flag(_) => None,
    };
    match problem {
        Some(why) => Err(why),
        None => Ok(v.to_cell()),
    }
}

/// An id cell (`room`, `client`): what the reader accepts, unchanged.
fn id(name: &str, v: &str) -> Result<String, String> {
    if let Some(why) = cell_problem(v) {
        return Err(format!("`{name}` {v:?} is {why}"));
    }
    crate::op::validate_id(v).map_err(|e| format!("`{name}` {v:?}: {e}"))?;
    Ok(v.to_owned())
}

/// The cells of `op` in [`HEADER`] order, or why it cannot be written.
pub(crate) fn row(op: &Op) -> Result<Vec<String>, String> {
    let empty = RoomFields::default();
    let f = op.fields.as_deref().unwrap_or(&empty);
    // The reader checks every op it builds the same way: an op that fails it would be a
    // manifest error, not the op.
    op.check()
        .map_err(|e| format!("the op is not valid in a manifest: {e}"))?;
    let mut cells = Vec::with_capacity(HEADER.len());
    cells.push(op.action.as_str().to_owned());
    cells.push(id("room", &op.room)?);
    cells.push(match op.client.as_deref() {
        Some(c) => id("client", c)?,
        None => String::new(),
    });
    for k in Field::ALL {
        cells.push(match k.get(f) {
            Some(v) => field_cell(k, v)?,
            None => String::new(),
        });
    }
    Ok(cells)
}

/// A CSV manifest being written: rows first, then `#` comment lines.
pub(crate) struct ManifestWriter<W: Write> {
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

    /// Loads `text` with the real manifest reader, as `validate` and `run` would.
    fn load_back(text: &str) -> Result<Vec<Op>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("written.csv");
        std::fs::write(&path, text).unwrap();
        crate::manifest::load(&path, &Default::default())
            .map(|m| m.ops.into_iter().map(|p| p.op).collect())
            .map_err(|e| e.to_string())
    }

    /// Writes `op` alone (with a comment after it) and reads it back with the real reader;
    /// `None` when the writer refuses it.
    fn round_trip(op: &Op) -> Option<Result<Vec<Op>, String>> {
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        if w.op(op).unwrap().is_err() {
            return None;
        }
        w.comment("listed apart: \"a\", b; #c\nnext").unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        Some(load_back(&text))
    }

    fn update(room: &str, f: RoomFields) -> Op {
        Op::update(room, f)
    }

    /// The audit's example: values the reader would trim or drop are refused, each naming
    /// its field, instead of being written and read back changed.
    #[test]
    fn padded_values_are_refused_not_trimmed() {
        let cases: Vec<(RoomFields, &str)> = vec![
            (
                RoomFields {
                    name: Some("  Old name  ".into()),
                    ..Default::default()
                },
                "`name`",
            ),
            (
                RoomFields {
                    description: Some("   ".into()),
                    ..Default::default()
                },
                "`description`",
            ),
            (
                RoomFields {
                    room_tags: Some(vec!["ok".into(), " vip ".into()]),
                    ..Default::default()
                },
                "`roomTags` item",
            ),
            (
                RoomFields {
                    ext_params: Some("{\"a\":1}\n".into()),
                    ..Default::default()
                },
                "`extParams`",
            ),
            (
                RoomFields {
                    cover: Some("\u{3000}cover".into()),
                    ..Default::default()
                },
                "`cover`",
            ),
        ];
        for (f, field) in cases {
            let err = row(&update("r", f.clone())).unwrap_err();
            assert!(
                err.contains(field) && err.contains("CSV manifest"),
                "{f:?}: {err}"
            );
            assert!(round_trip(&update("r", f)).is_none());
        }
        for op in [Op::freeze(" r"), Op::mute("c ", "r")] {
            let err = row(&op).unwrap_err();
            // (The op model may refuse such an id first; either way it names the spaces.)
            assert!(err.contains("space"), "{op}: {err}");
        }
        // What the reader itself would refuse is refused here too.
        let bad_owner = RoomFields {
            owner: Some("a\u{7}b".into()),
            ..Default::default()
        };
        assert!(row(&update("r", bad_owner)).unwrap_err().contains("owner"));
        assert!(row(&Op::freeze("..")).is_err());
    }

    /// Values that are awkward for CSV but kept exactly by the reader: written, and read
    /// back as the same op by the real manifest loader.
    #[test]
    fn awkward_values_read_back_through_the_manifest_loader() {
        let f = RoomFields {
            name: Some("Help, \"Desk\" #1; ok".into()),
            cover: Some("#not-a-comment".into()),
            description: Some("line one\n# line two\r\nline three".into()),
            room_tags: Some(vec![
                "a b".into(),
                "#c".into(),
                "房間".into(),
                "\"q\"".into(),
            ]),
            webhook: Some("https://h.example/x?a=1,b=2".into()),
            bot_mode: Some(true),
            ext_params: Some("{\"k\": \"v, w\"}".into()),
            opening: Some(0),
            owner: Some("o, \"1\"".into()),
            managers: Some(vec!["m,1".into(), "m 2".into()]),
            status: Some(1),
        };
        for op in [
            update("#room, \"x\"", f),
            Op::freeze("房間 1"),
            Op::unfreeze("a\"b"),
            Op::mute("#c;1", "r,1"),
            Op::unmute("c", "../admin"),
        ] {
            assert_eq!(round_trip(&op), Some(Ok(vec![op.clone()])), "{op}");
        }
    }

    /// Characters that CSV, the reader's trimming, its comment and list handling or the id
    /// rules care about, and a few ordinary ones.
    fn tricky() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just(' '),
                Just(','),
                Just('"'),
                Just('#'),
                Just(';'),
                Just('\n'),
                Just('\r'),
                Just('\t'),
                Just('\u{3000}'),
                Just('\u{a0}'),
                Just('\u{feff}'),
                Just('é'),
                Just('房'),
                Just('.'),
                proptest::char::range('a', 'c'),
            ],
            0..8,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn tricky_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(tricky())
    }

    fn tricky_list() -> impl Strategy<Value = Option<Vec<String>>> {
        proptest::option::of(proptest::collection::vec(tricky(), 0..3))
    }

    fn tricky_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (tricky(), tricky()).prop_map(|(c, r)| Op::mute(c.as_str(), r.as_str())),
            tricky().prop_map(|r| Op::freeze(r.as_str())),
            (
                tricky(),
                tricky_text(),
                tricky_text(),
                tricky_text(),
                tricky_list(),
                tricky_list()
            )
                .prop_map(
                    |(room, name, description, owner, room_tags, managers): (
                        String,
                        _,
                        _,
                        _,
                        _,
                        _
                    )| {
                        update(
                            &room,
                            RoomFields {
                                name,
                                description,
                                owner,
                                room_tags,
                                managers,
                                bot_mode: Some(false),
                                ..Default::default()
                            },
                        )
                    }
                ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Whatever the writer accepts, the real manifest loader reads back as the same op.
        #[test]
        fn what_is_written_reads_back_identically(op in tricky_op()) {
            if let Some(back) = round_trip(&op) {
                prop_assert_eq!(back, Ok(vec![op.clone()]), "{:?}", row(&op));
            }
        }

        /// The refusals are no broader than the reader needs: an id or value with no
        /// control character, not empty and not padded with whitespace, is written.
        #[test]
        fn plain_values_are_never_refused(
            room in "[^\\p{Cc}\\s][^\\p{Cc}]{0,18}[^\\p{Cc}\\s]",
            client in "[^\\p{Cc}\\s]{1,20}",
            name in "[^\\s][^\\p{Cc}]{0,28}[^\\s]",
            tags in proptest::collection::vec("[^;\\p{Cc}\\s]{1,8}", 1..4),
        ) {
            prop_assume!(room != "." && room != ".." && client != "." && client != "..");
            let f = RoomFields { name: Some(name), room_tags: Some(tags), ..Default::default() };
            for op in [Op::mute(client.as_str(), room.as_str()), update(&room, f)] {
                prop_assert_eq!(round_trip(&op), Some(Ok(vec![op.clone()])));
            }
        }
    }
}
