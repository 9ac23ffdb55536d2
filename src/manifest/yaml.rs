//! YAML manifests (docs/behaviour.md §2): `version: 1`, `name`, `window`, `settings` and `ops`, each op
//! naming its rooms and clients inline or through `rooms_file`/`clients_file` (CSV lists
//! resolved relative to the YAML file). Unknown keys are errors; parsing runs under a budget
//! so an alias bomb is refused instead of expanded. Errors carry file:line:column from the
//! parser's spans. Values are held to the CSV's spellings: `botMode` (and
//! `settings.snapshot`) only `true`/`false`, `opening` and `status` only `0`/`1`, unquoted;
//! `yes`, `True`, `0x1` or `"1"` are errors. An id listed twice among one op's inline ids is
//! kept once here, with a warning naming both line:columns (the ops carry only the op's line,
//! so [`super::expand`] could not tell them apart).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::Sha256;

use super::window::{self, WindowTime, parse_window_time};
use super::{
    Daily, Location, ManifestErrors, Parsed, PlannedOp, Settings, Warnings, Window, WindowTimes,
    hash_part, read_file,
};
use crate::op::{Action, Field, FieldKind, FieldValue, Op, RoomFields, check_fields, validate_id};
use crate::units::{
    Rate, check_concurrency, check_max_attempts, check_rate, check_timeout, parse_duration,
};

/// The largest YAML manifest read; bigger lists belong in a `rooms_file`.
const MAX_YAML_BYTES: usize = 64 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    version: Option<Spanned<Scalar>>,
    name: Option<String>,
    window: Option<Spanned<WindowDoc>>,
    settings: Option<SettingsDoc>,
    ops: Option<Spanned<Vec<Spanned<OpDoc>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowDoc {
    start: Spanned<String>,
    end: Spanned<String>,
    timezone: Option<Spanned<String>>,
    undo_at_end: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsDoc {
    rate: Option<Spanned<String>>,
    concurrency: Option<Spanned<Scalar>>,
    snapshot: Option<Spanned<Scalar>>,
    max_attempts: Option<Spanned<Scalar>>,
    timeout: Option<Spanned<String>>,
    room_auth: Option<Spanned<String>>,
    budget: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpDoc {
    action: Spanned<String>,
    // A key written with no value (`rooms:`, `rooms_file: ~`) is `Some` with a `None`
    // value, so that it is reported instead of silently ignored (see [`present`]).
    #[serde(default, deserialize_with = "present")]
    room: Option<Spanned<Option<String>>>,
    #[serde(default, deserialize_with = "present")]
    rooms: Option<Spanned<Option<Vec<Spanned<String>>>>>,
    #[serde(default, deserialize_with = "present")]
    client: Option<Spanned<Option<String>>>,
    #[serde(default, deserialize_with = "present")]
    clients: Option<Spanned<Option<Vec<Spanned<String>>>>>,
    #[serde(default, deserialize_with = "present")]
    rooms_file: Option<Spanned<Option<String>>>,
    #[serde(default, deserialize_with = "present")]
    clients_file: Option<Spanned<Option<String>>>,
    set: Option<Spanned<SetDoc>>,
}

/// A key that is present, whatever its value (null included): plain `Option` would read
/// `rooms_file:` with no value as if the key were not there.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A key's value, or an error at the key when it was written with none.
fn given<T>(
    path: &Path,
    key: &str,
    example: &str,
    v: Option<Spanned<Option<T>>>,
    errs: &mut ManifestErrors,
) -> Option<T> {
    let v = v?;
    match v.value {
        Some(x) => Some(x),
        None => {
            let (l, c) = line_col(&v.referenced);
            errs.at(
                path,
                l,
                c,
                format!("`{key}` has no value: write {example}, or remove the key"),
            );
            None
        }
    }
}

/// The `set` of an update: each given field's value as YAML wrote it, by [`Field::index`],
/// so that `botMode`, `opening` and `status` are held to the CSV's spellings and each bad
/// value is reported at its own line and column.
struct SetDoc {
    values: [Option<SetValue>; Field::COUNT],
}

/// A `set` value as YAML wrote it, in the shape its field's kind takes.
enum SetValue {
    /// A text or an id. Written with no value (`name:`, `name: ~`) it is `None`: an error,
    /// not "not given".
    Text(Spanned<Option<String>>),
    /// A true/false or 0/1 value (`None`: written as null, which leaves the field unset).
    Scalar(Option<Spanned<Scalar>>),
    /// A list (`None`: written as null, which leaves the field unset).
    List(Option<Spanned<ListDoc>>),
}

impl<'de> Deserialize<'de> for SetDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SetDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("struct SetDoc")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SetDoc, A::Error> {
                let mut values: [Option<SetValue>; Field::COUNT] = Default::default();
                while let Some(FieldKey(k)) = map.next_key()? {
                    let slot = &mut values[k.index()];
                    if slot.is_some() {
                        return Err(serde::de::Error::duplicate_field(k.name()));
                    }
                    *slot = Some(match k.kind() {
                        FieldKind::Text | FieldKind::Id => SetValue::Text(map.next_value()?),
                        FieldKind::Bool | FieldKind::ZeroOne => SetValue::Scalar(map.next_value()?),
                        FieldKind::TextList | FieldKind::IdList => {
                            SetValue::List(map.next_value()?)
                        }
                    });
                }
                Ok(SetDoc { values })
            }
        }
        d.deserialize_struct("SetDoc", &RoomFields::NAMES, V)
    }
}

/// A key of `set`: a field's name, or serde's error for an unknown field.
struct FieldKey(Field);

impl<'de> Deserialize<'de> for FieldKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FieldKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("field identifier")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldKey, E> {
                Field::parse(v)
                    .map(FieldKey)
                    .ok_or_else(|| E::unknown_field(v, &RoomFields::NAMES))
            }
        }
        d.deserialize_identifier(V)
    }
}

/// A scalar as the YAML parser typed it. Only a plain `true`/`false` is a boolean and only
/// a plain number is a number; anything quoted is a string.
#[derive(Debug)]
enum Scalar {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a single value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A YAML list of strings, or the single value written where a list belongs (reported
/// with its location rather than as a parse error).
enum ListDoc {
    List(Vec<Spanned<String>>),
    Scalar(Scalar),
}

impl<'de> Deserialize<'de> for ListDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ListDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list, such as [a, b]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<ListDoc, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element::<Spanned<String>>()? {
                    v.push(x);
                }
                Ok(ListDoc::List(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ListDoc, E> {
                Ok(ListDoc::Scalar(Scalar::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ListDoc, E> {
                Ok(ListDoc::Scalar(Scalar::Int(v.into())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ListDoc, E> {
                Ok(ListDoc::Scalar(Scalar::Int(v.into())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ListDoc, E> {
                Ok(ListDoc::Scalar(Scalar::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<ListDoc, E> {
                Ok(ListDoc::Scalar(Scalar::Str(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// The parser options: default budgets, plus tight alias limits (manifests rarely need
/// aliases, and a "billion laughs" document must fail fast).
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // `yes`, `on` and `y` are strings, never booleans (the YAML 1.1 forms are not
        // accepted; [`strict_value`] then holds `true`/`false` to their lower-case spelling).
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_aliases: 1_000,
            max_anchors: 1_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
    }
}

fn line_col(l: &serde_saphyr::Location) -> (u32, Option<u32>) {
    let c = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    (c(l.line()), Some(c(l.column())).filter(|c| *c > 0))
}

/// The most nodes a manifest may hold once its aliases are expanded (the parse budget).
const MAX_EXPANDED_NODES: u64 = 1_000_000;

/// The parse budget: walks the parser's events (no value is built) and counts the nodes the
/// document would have with every alias expanded, refusing it past [`MAX_EXPANDED_NODES`].
/// A "billion laughs" document is refused here, whatever the schema would say about it.
/// Syntax errors are left to the real parse, which words them better.
fn check_alias_budget(text: &str) -> Result<(), (u32, Option<u32>, String)> {
    use serde_saphyr::granit_parser::{Event, Parser};
    let mut sizes: HashMap<usize, u64> = HashMap::new();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut total: u64 = 0;
    for item in Parser::new_from_str(text) {
        let Ok((ev, span)) = item else {
            return Ok(());
        };
        let (added, alias) = match ev {
            Event::Scalar(_, _, anchor, _) => {
                if anchor > 0 {
                    sizes.insert(anchor, 1);
                }
                (1, false)
            }
            Event::Alias(id) => (sizes.get(&id).copied().unwrap_or(1), true),
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
                stack.push((anchor, 1));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((anchor, n)) = stack.pop() else {
                    continue;
                };
                if anchor > 0 {
                    sizes.insert(anchor, n);
                }
                (n, false)
            }
            _ => continue,
        };
        let acc = match stack.last_mut() {
            Some(top) => &mut top.1,
            None => &mut total,
        };
        *acc = acc.saturating_add(added);
        if *acc > MAX_EXPANDED_NODES {
            let line = u32::try_from(span.start.line()).unwrap_or(u32::MAX);
            let col = u32::try_from(span.start.col() + 1).ok();
            let why = if alias {
                "this alias expands"
            } else {
                "the manifest expands"
            };
            return Err((
                line,
                col,
                format!(
                    "refused by the parse budget: {why} the document beyond {MAX_EXPANDED_NODES} \
                     nodes (an alias bomb?); write the lists out, or put long lists in a \
                     rooms_file or clients_file"
                ),
            ));
        }
    }
    Ok(())
}

/// The keys each mapping of a manifest may hold (the fields of [`Doc`] and its parts).
const TOP_KEYS: &[&str] = &["version", "name", "window", "settings", "ops"];
const WINDOW_KEYS: &[&str] = &["start", "end", "timezone", "undo_at_end"];
const SETTINGS_KEYS: &[&str] = &[
    "rate",
    "concurrency",
    "snapshot",
    "max_attempts",
    "timeout",
    "room_auth",
    "budget",
];
const OP_KEYS: &[&str] = &[
    "action",
    "room",
    "rooms",
    "client",
    "clients",
    "rooms_file",
    "clients_file",
    "set",
];
const SET_KEYS: &[&str] = &crate::op::RoomFields::NAMES;

/// What a mapping or sequence is in the manifest's schema (for [`unknown_keys`]).
#[derive(Clone, Copy, PartialEq)]
enum Node {
    Top,
    Window,
    Settings,
    Ops,
    Op,
    Set,
    Other,
}

impl Node {
    /// The keys a mapping of this node may hold; `None` when they are not checked.
    fn keys(self) -> Option<&'static [&'static str]> {
        match self {
            Node::Top => Some(TOP_KEYS),
            Node::Window => Some(WINDOW_KEYS),
            Node::Settings => Some(SETTINGS_KEYS),
            Node::Op => Some(OP_KEYS),
            Node::Set => Some(SET_KEYS),
            Node::Ops | Node::Other => None,
        }
    }

    /// What the value of `key` in a mapping of this node is, if it is a container.
    fn value_of(self, key: Option<&str>) -> Node {
        match (self, key) {
            (Node::Top, Some("window")) => Node::Window,
            (Node::Top, Some("settings")) => Node::Settings,
            (Node::Top, Some("ops")) => Node::Ops,
            (Node::Op, Some("set")) => Node::Set,
            _ => Node::Other,
        }
    }
}

/// A mapping or sequence open during [`unknown_keys`]'s walk.
struct Open {
    node: Node,
    is_map: bool,
    /// In a mapping: the next scalar is a key (else a value).
    at_key: bool,
    /// In a mapping: what the value of the key just read is, if it is a container.
    value: Node,
}

/// Every unknown key of the document, each at its line and column. The typed parse stops at
/// the first one (serde's `deny_unknown_fields`), so a manifest with a typo in each of five
/// ops would take five rounds of `validate`; this walk over the parser's events finds them
/// all at once. Keys of mappings reached through an alias or a merge key (`<<`) are left to
/// the typed parse, and so are syntax errors.
fn unknown_keys(text: &str) -> Vec<(u32, Option<u32>, String)> {
    use serde_saphyr::granit_parser::{Event, Parser};
    let mut found = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((ev, span)) = item else {
            break;
        };
        match ev {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                open(&mut stack, matches!(ev, Event::MappingStart(..)));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Scalar(..) | Event::Alias(..) if stack.last().is_some_and(|o| o.is_map) => {
                let Some(o) = stack.last_mut() else { break };
                if o.at_key {
                    let key = match &ev {
                        Event::Scalar(v, ..) => Some(v.as_ref()),
                        _ => None,
                    };
                    o.value = o.node.value_of(key);
                    if let (Some(allowed), Some(key)) = (o.node.keys(), key)
                        && key != "<<"
                        && !allowed.contains(&key)
                    {
                        let line = u32::try_from(span.start.line()).unwrap_or(u32::MAX);
                        let col = u32::try_from(span.start.col() + 1).ok();
                        found.push((line, col, unknown_key(key, allowed)));
                    }
                }
                o.at_key = !o.at_key;
            }
            _ => {}
        }
    }
    found
}

/// Opens a mapping (`is_map`) or sequence in [`unknown_keys`]'s walk: what it is follows
/// from its parent and, in a mapping, the key before it.
fn open(stack: &mut Vec<Open>, is_map: bool) {
    let child = match stack.last() {
        None => Node::Top,
        Some(o) if o.is_map => o.value,
        Some(o) if o.node == Node::Ops => Node::Op,
        Some(_) => Node::Other,
    };
    let node = match (child, is_map) {
        (Node::Ops, false) => Node::Ops,
        (Node::Ops, true) | (_, false) => Node::Other,
        (n, true) => n,
    };
    // A container in a key's place is not a key we know; the typed parse says so.
    if let Some(parent) = stack.last_mut()
        && parent.is_map
    {
        parent.at_key = !parent.at_key;
    }
    stack.push(Open {
        node,
        is_map,
        at_key: true,
        value: Node::Other,
    });
}

/// The message for a key not in `allowed`.
fn unknown_key(key: &str, allowed: &[&str]) -> String {
    let hint = super::suggest(key, allowed)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default();
    format!(
        "unknown field `{key}`{hint}, expected one of {}; unknown keys are errors (typos must \
         not be silently ignored)",
        allowed.join(", ")
    )
}

/// The parser's message without the location it appends (we print our own prefix).
fn parser_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let text = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match text.rfind(" at line ") {
        Some(i) if text[i..].contains("column") => text[..i].to_string(),
        _ => text,
    }
}

/// Reads a YAML manifest at `path`, feeding it and every included file to `hasher`.
pub(crate) fn load_yaml(path: &Path, hasher: &mut Sha256) -> Result<Parsed, ManifestErrors> {
    let mut errs = ManifestErrors::default();
    let bytes = match read_file(path, path) {
        Ok(b) => b,
        Err(m) => {
            errs.at(path, 0, None, m);
            return Err(errs);
        }
    };
    hash_part(hasher, b"manifest", &bytes);
    if bytes.len() > MAX_YAML_BYTES {
        errs.at(
            path,
            0,
            None,
            format!(
                "the YAML manifest is larger than {} MiB: put long lists in a rooms_file or \
                 clients_file",
                MAX_YAML_BYTES >> 20
            ),
        );
        return Err(errs);
    }
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            errs.at(
                path,
                u32::try_from(line).unwrap_or(u32::MAX),
                None,
                "not valid UTF-8: save the file as UTF-8",
            );
            return Err(errs);
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        errs.at(
            path,
            1,
            None,
            "the file is empty: a YAML manifest starts with `version: 1` and lists `ops`",
        );
        return Err(errs);
    }
    if let Err((line, col, m)) = check_alias_budget(text) {
        errs.at(path, line.max(1), col, m);
        return Err(errs);
    }
    let unknown = unknown_keys(text);
    if !unknown.is_empty() {
        for (line, col, m) in unknown {
            errs.at(path, line.max(1), col, m);
        }
        return Err(errs);
    }
    let doc: Doc = match serde_saphyr::from_str_with_options(text, options()) {
        Ok(d) => d,
        Err(e) => {
            let (line, col) = e.location().map(|l| line_col(&l)).unwrap_or((1, None));
            errs.at(path, line.max(1), col, yaml_message(&e));
            return Err(errs);
        }
    };
    interpret(path, text, doc, hasher, &mut errs).ok_or(errs)
}

fn yaml_message(e: &serde_saphyr::Error) -> String {
    let m = parser_message(e)
        .replace(
            ", set DuplicateKeyPolicy in Options if acceptable",
            ": each key may appear once per mapping",
        )
        .replace(
            "expected sequence start",
            "expected a list here, such as [lobby-1, lobby-2]",
        );
    let lower = m.to_lowercase();
    // The parser's own wording (Rust types, API names) means nothing to an operator: say
    // what the manifest has there and what it needs instead.
    if lower.contains("is only valid inside a block") {
        "a `- ` list item cannot start inside [ ]: write a list either as [a, b] on one line, \
         or as `- item` lines, one per line and indented under its key"
            .into()
    } else if lower.contains("multiple yaml documents") {
        "this file holds a second YAML document (a `---` line): a manifest is one document; \
         remove the `---` line, or put the second job in a file of its own"
            .into()
    } else if lower.contains("expected mapping start") {
        "expected `key: value` lines here: the manifest is a mapping that starts with \
         `version: 1`, and each entry of `ops` is one op written `- action: freeze` with its \
         keys (room, rooms, client, clients, rooms_file, clients_file, set) indented below it"
            .into()
    } else if lower.contains("expected string scalar") {
        "expected a single value here (text or an id), not a list or mapping: write e.g. \
         `room: lobby-1`; for several ids use `rooms: [lobby-1, lobby-2]`, whose items are \
         single values too"
            .into()
    } else if lower.contains("cannot deserialize null") || lower.contains("invalid type: null") {
        "this entry is empty (null, `~` or nothing after the `-` or `:`): write the value, \
         such as an id, or remove the entry"
            .into()
    } else if lower.contains("invalid i64")
        || lower.contains("invalid u64")
        || lower.contains("invalid i128")
    {
        "expected a whole number here, such as 1 or 8".into()
    } else if lower.contains("invalid bool") {
        "expected true or false here".into()
    } else if lower.contains("budget") || lower.contains("alias") && lower.contains("limit") {
        format!(
            "refused: {m} (the manifest expands beyond the parse budget; YAML aliases are \
             limited to keep a hostile file from exhausting memory)"
        )
    } else if lower.contains("unknown field") {
        format!("{m}; unknown keys are errors (typos must not be silently ignored)")
    } else {
        m
    }
}

/// An id and where it came from.
type Ids = Vec<(Box<str>, Location)>;

/// An included file's index in `sources` and its `(id, line)` entries.
type IdList = (u32, Vec<(Box<str>, u32)>);

/// State shared while interpreting one manifest: the included files.
struct Includes {
    base: PathBuf,
    sources: Vec<PathBuf>,
    /// Per (file, column): its index in `sources` and its `(id, line)` entries.
    lists: HashMap<(PathBuf, &'static str), IdList>,
    /// Ids listed twice inline in one op (the repeats are dropped).
    repeats: Vec<Repeat>,
    /// Ops that expand to no ops at all (an empty list, a rooms_file with only a header):
    /// the op's line and what it lacks.
    empty: Vec<(u32, String)>,
}

/// An id listed a second time among one op's inline ids (`room`, `rooms`, `client`,
/// `clients`). Only the reader knows each id's line and column: the ops built from it all
/// carry the op's line.
struct Repeat {
    what: &'static str,
    id: Box<str>,
    at: (u32, Option<u32>),
    first: (u32, Option<u32>),
    op_line: u32,
}

impl Repeat {
    fn message(&self, sources: &[PathBuf]) -> String {
        let place = |(l, c): (u32, Option<u32>)| {
            let pos = c
                .map(|c| format!("{l}:{c}"))
                .unwrap_or_else(|| l.to_string());
            match sources {
                [_] | [] => format!("line {pos}"),
                [m, ..] => format!("{}:{pos}", m.display()),
            }
        };
        format!(
            "{} repeats {}: {} {:?} is listed twice in the op at {} (runs once)",
            place(self.at),
            place(self.first),
            self.what,
            self.id,
            place((self.op_line, None))
        )
    }
}

fn interpret(
    path: &Path,
    text: &str,
    doc: Doc,
    hasher: &mut Sha256,
    errs: &mut ManifestErrors,
) -> Option<Parsed> {
    check_version(path, text, doc.version.as_ref(), errs);
    let window = doc.window.and_then(|w| window(path, text, w, errs));
    let settings = doc
        .settings
        .map(|s| settings(path, text, s, errs))
        .unwrap_or_default();
    let mut r = Reader {
        path,
        text,
        hasher,
        errs,
        inc: Includes {
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            sources: vec![path.to_path_buf()],
            lists: HashMap::new(),
            repeats: Vec::new(),
            empty: Vec::new(),
        },
    };
    let mut ops = Vec::new();
    match doc.ops {
        None => r.errs.at(
            path,
            1,
            None,
            "no `ops`: list the operations under `ops:` (each with an `action`)",
        ),
        Some(list) => {
            for item in list.value {
                r.expand_op(item, &mut ops);
            }
        }
    }
    if !r.errs.is_empty() {
        return None;
    }
    let inc = r.inc;
    let mut warnings = Warnings::default();
    for rep in &inc.repeats {
        warnings.push_with(|| rep.message(&inc.sources));
    }
    for (line, why) in &inc.empty {
        warnings.push_with(|| {
            let place = match inc.sources.len() {
                1 => format!("line {line}"),
                _ => format!("{}:{line}", path.display()),
            };
            format!("{place}: this op expands to no ops ({why}): nothing is sent for it")
        });
    }
    Some(Parsed {
        name: doc.name,
        window,
        settings,
        ops,
        sources: inc.sources,
        warnings,
    })
}

/// `version: 1`, or an error.
fn check_version(path: &Path, text: &str, v: Option<&Spanned<Scalar>>, errs: &mut ManifestErrors) {
    let Some(v) = v else {
        errs.at(
            path,
            1,
            None,
            "`version: 1` is required at the top of a YAML manifest",
        );
        return;
    };
    let m = match whole_number(text, v) {
        Ok(1) => return,
        Ok(n) => format!("version {n} is not supported: this imkit-batch reads `version: 1`"),
        Err(given) => format!("version must be the whole number 1 (`version: 1`), not {given}"),
    };
    let (l, c) = line_col(&v.referenced);
    errs.at(path, l, c, m);
}

/// The `window`: RFC 3339 start and end (one window), or times of day with a `timezone` (a
/// daily window); each problem at its line and column.
fn window(
    path: &Path,
    text: &str,
    w: Spanned<WindowDoc>,
    errs: &mut ManifestErrors,
) -> Option<Window> {
    let mut err = |l: &serde_saphyr::Location, m: String| {
        let (line, col) = line_col(l);
        errs.at(path, line, col, m);
    };
    let doc = w.value;
    let undo_at_end = match &doc.undo_at_end {
        None => Some(false),
        Some(v) => match strict_value(text, "window.undo_at_end", v, &["true", "false"]) {
            Ok(i) => Some(i == 0),
            Err(m) => {
                err(&v.referenced, m);
                None
            }
        },
    };
    let time =
        |s: &Spanned<String>, key: &str, err: &mut dyn FnMut(&serde_saphyr::Location, String)| {
            parse_window_time(&s.value)
                .map_err(|e| err(&s.referenced, format!("window.{key} {:?} {e}", s.value)))
                .ok()
        };
    let start = time(&doc.start, "start", &mut err);
    let end = time(&doc.end, "end", &mut err);
    let times = match (start?, end?) {
        (WindowTime::Instant(start), WindowTime::Instant(end)) => once(start, end, &doc, &mut err)?,
        (WindowTime::OfDay(start), WindowTime::OfDay(end)) => {
            daily(start, end, &doc, &w.referenced, &mut err)?
        }
        (WindowTime::OfDay(_), WindowTime::Instant(_)) => {
            err(&doc.end.referenced, mixed("window.end", "window.start"));
            return None;
        }
        (WindowTime::Instant(_), WindowTime::OfDay(_)) => {
            err(&doc.end.referenced, mixed("window.start", "window.end"));
            return None;
        }
    };
    Some(Window {
        times,
        undo_at_end: undo_at_end?,
    })
}

/// The error for a window that mixes an RFC 3339 time (`instant`) with a time of day.
fn mixed(instant: &str, of_day: &str) -> String {
    format!(
        "{instant} is an RFC 3339 time but {of_day} is a time of day: give both as times of \
         day with a timezone (a daily window, such as 22:00 to 07:00) or both as RFC 3339 \
         times (one window)"
    )
}

/// A single window: the end after the start, and no `timezone` (the times carry offsets).
fn once(
    start: jiff::Timestamp,
    end: jiff::Timestamp,
    doc: &WindowDoc,
    err: &mut dyn FnMut(&serde_saphyr::Location, String),
) -> Option<WindowTimes> {
    if let Some(tz) = &doc.timezone {
        err(
            &tz.referenced,
            "window.timezone applies to times of day (a daily window); RFC 3339 times carry \
             their own offset: remove timezone, or give start and end as times of day"
                .into(),
        );
        return None;
    }
    if start >= end {
        err(
            &doc.end.referenced,
            format!("window.end ({end}) must be after window.start ({start})"),
        );
        return None;
    }
    Some(WindowTimes::Once { start, end })
}

/// A daily window: a known `timezone` is required, and the end must differ from the start.
fn daily(
    start: jiff::civil::Time,
    end: jiff::civil::Time,
    doc: &WindowDoc,
    window_at: &serde_saphyr::Location,
    err: &mut dyn FnMut(&serde_saphyr::Location, String),
) -> Option<WindowTimes> {
    let Some(tz) = &doc.timezone else {
        err(
            window_at,
            "window.timezone is required with times of day: name the IANA time zone the \
             times are in, such as `timezone: Asia/Taipei`"
                .into(),
        );
        return None;
    };
    let zone = match window::zone(&tz.value) {
        Ok(z) => Some(z),
        Err(m) => {
            err(&tz.referenced, format!("window.timezone {m}"));
            None
        }
    };
    if start == end {
        err(
            &doc.end.referenced,
            format!(
                "window.end ({}) is the same time of day as window.start: a daily window \
                 needs an end that differs (one before the start crosses midnight)",
                doc.end.value.trim()
            ),
        );
        return None;
    }
    Some(WindowTimes::Daily(Daily {
        start,
        end,
        zone: zone?,
        zone_name: tz.value.trim().to_string(),
    }))
}

fn settings(path: &Path, text: &str, s: SettingsDoc, errs: &mut ManifestErrors) -> Settings {
    let mut out = Settings::default();
    let mut err = |sp: &serde_saphyr::Location, m: String| {
        let (l, c) = line_col(sp);
        errs.at(path, l, c, m);
    };
    if let Some(v) = s.snapshot {
        match strict_value(text, "settings.snapshot", &v, &["true", "false"]) {
            Ok(i) => out.snapshot = Some(i == 0),
            Err(m) => err(&v.referenced, m),
        }
    }
    // The bounds are those `run` holds its flags to (one source: crate::units).
    type Check = fn(&str, i128) -> Result<u32, String>;
    for (key, v, slot, check) in [
        (
            "settings.concurrency",
            &s.concurrency,
            &mut out.concurrency,
            check_concurrency as Check,
        ),
        (
            "settings.max_attempts",
            &s.max_attempts,
            &mut out.max_attempts,
            check_max_attempts as Check,
        ),
    ] {
        let Some(v) = v else { continue };
        let checked = whole_number(text, v)
            .and_then(|n| check(key, n))
            .map_err(|e| {
                if e.starts_with(key) {
                    e
                } else {
                    // Not a whole number at all: say what is expected, with the bound.
                    let bound = check(key, 0).unwrap_err();
                    format!("{}, not {e}", bound.split(", not").next().unwrap_or(&bound))
                }
            });
        match checked {
            Ok(n) => *slot = Some(n),
            Err(m) => err(&v.referenced, m),
        }
    }
    if let Some(r) = s.rate {
        match r.value.parse::<Rate>() {
            Ok(v) => match check_rate("settings.rate", v) {
                Ok(v) => out.rate = Some(v),
                Err(m) => err(&r.referenced, m),
            },
            Err(m) => err(&r.referenced, format!("settings.rate: {m}")),
        }
    }
    if let Some(t) = s.timeout {
        match parse_duration(&t.value) {
            Ok(d) => match check_timeout("settings.timeout", d) {
                Ok(d) => out.timeout = Some(d),
                Err(m) => err(&t.referenced, m),
            },
            Err(m) => err(&t.referenced, format!("settings.timeout: {m}")),
        }
    }
    if let Some(a) = s.room_auth {
        match crate::op::RoomAuth::parse(&a.value) {
            Some(v) => out.room_auth = Some(v),
            None => err(
                &a.referenced,
                format!(
                    "settings.room_auth must be token or api-key (the credential of room ops \
                     and bans), not {:?}",
                    a.value
                ),
            ),
        }
    }
    if let Some(b) = s.budget {
        match b.value.parse::<crate::budget::BudgetLocation>() {
            Ok(v) => out.budget = Some(v),
            Err(crate::budget::BudgetError::InvalidUrl { given, reason }) => {
                err(&b.referenced, format!("settings.budget {given}: {reason}"));
            }
            Err(e) => err(&b.referenced, format!("settings.budget: {e}")),
        }
    }
    out
}

/// A plain whole number as YAML wrote it, or how the value was written instead (for the
/// message: `1.0`, `the string "8"`, `true`).
fn whole_number(text: &str, v: &Spanned<Scalar>) -> Result<i128, String> {
    match &v.value {
        Scalar::Int(n) => Ok(*n),
        Scalar::Str(s) => Err(format!("the string {s:?}")),
        Scalar::Bool(b) => Err(b.to_string()),
        Scalar::Float(x) => Err(raw(text, &v.defined)
            .map(str::to_string)
            .unwrap_or_else(|| x.to_string())),
    }
}

/// The source text of a node, quotes included, when the parser knows its byte span.
fn raw<'t>(text: &'t str, l: &serde_saphyr::Location) -> Option<&'t str> {
    let sp = l.span();
    let start = usize::try_from(sp.byte_offset()?).ok()?;
    let len = usize::try_from(sp.byte_len()?).ok()?;
    text.get(start..start.checked_add(len)?)
}

/// Holds a YAML value to one of the spellings the CSV form accepts (`true`/`false`,
/// `0`/`1`): a plain scalar written exactly so. `True`, `0x1`, `+1` or a quoted `"1"` are
/// refused, as they are in a CSV cell. Returns the index of the spelling in `allowed`.
fn strict_value(
    text: &str,
    key: &str,
    v: &Spanned<Scalar>,
    allowed: &[&str],
) -> Result<usize, String> {
    let what = allowed.join(" or ");
    let written = raw(text, &v.defined)
        .map(str::to_string)
        .unwrap_or_else(|| match &v.value {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Str(s) => s.clone(),
        });
    if matches!(v.value, Scalar::Bool(_) | Scalar::Int(_))
        && let Some(i) = allowed.iter().position(|a| *a == written)
    {
        return Ok(i);
    }
    Err(match &v.value {
        Scalar::Str(s) if allowed.contains(&s.trim()) => {
            format!("{key} must be {what} without quotes, not the string {s:?}")
        }
        Scalar::Str(s) => format!("{key} must be {what}, not {s:?}"),
        _ => format!("{key} must be {what}, not {written:?}"),
    })
}

/// The items of a list field, or why the value is not a list.
fn list_items(
    key: &str,
    example: &str,
    v: Spanned<ListDoc>,
) -> Result<Vec<Spanned<String>>, String> {
    match v.value {
        ListDoc::List(items) => Ok(items),
        ListDoc::Scalar(s) => {
            let given = match s {
                Scalar::Str(s) => format!("the string {s:?}"),
                Scalar::Bool(b) => b.to_string(),
                Scalar::Int(n) => n.to_string(),
                Scalar::Float(x) => x.to_string(),
            };
            Err(format!(
                "{key} must be a list, such as {example} ([] for none), not {given}"
            ))
        }
    }
}

/// A problem with a `set` value: its round (see [`room_fields`]), place and message.
type SetProblem = (Round, serde_saphyr::Location, String);

/// The rounds in which the problems of one `set` are reported, each round in field order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Round {
    /// Texts and ids written with no value.
    Missing,
    /// True/false and 0/1 values.
    Flag,
    /// Lists and ids.
    Value,
}

/// The fields of an update's `set`, each value checked where it is written; every problem
/// is reported (in [`Round`]s).
fn room_fields(
    path: &Path,
    text: &str,
    s: SetDoc,
    errs: &mut ManifestErrors,
) -> Option<RoomFields> {
    let mut f = RoomFields::default();
    let mut problems: Vec<SetProblem> = Vec::new();
    for (k, v) in Field::ALL.into_iter().zip(s.values) {
        if let Some(v) = v
            && let Some((value, at)) = set_value(text, k, v, &mut problems)
            && let Err(value) = k.set(&mut f, value)
        {
            problems.push((Round::Value, at, format!("{k} cannot hold {value:?}")));
        }
    }
    problems.sort_by_key(|(round, ..)| *round);
    for (_, at, m) in &problems {
        let (l, c) = line_col(at);
        errs.at(path, l, c, format!("set: {m}"));
    }
    problems.is_empty().then_some(f)
}

/// The value of field `k` from its `set` value `v`, and where it is written; `None` when it
/// has problems (noted in `problems`) or is null.
fn set_value(
    text: &str,
    k: Field,
    v: SetValue,
    problems: &mut Vec<SetProblem>,
) -> Option<(FieldValue, serde_saphyr::Location)> {
    let (round, at, m) = match v {
        SetValue::Scalar(None) | SetValue::List(None) => return None,
        SetValue::Text(sp) => match sp.value {
            Some(s) if k.kind() == FieldKind::Id => match validate_id(&s) {
                Ok(()) => return Some((FieldValue::Text(s), sp.referenced)),
                Err(e) => (Round::Value, sp.referenced, format!("{k}: {e}")),
            },
            Some(s) => return Some((FieldValue::Text(s), sp.referenced)),
            None => {
                let what = if k.kind() == FieldKind::Id {
                    "an id"
                } else {
                    "the text (\"\" for empty text)"
                };
                let m = format!(
                    "{k} has no value: write {what}, or remove the key to leave the field as it \
                     is"
                );
                (Round::Missing, sp.referenced, m)
            }
        },
        SetValue::Scalar(Some(v)) => {
            let (allowed, value): (&[&str], fn(usize) -> FieldValue) =
                if k.kind() == FieldKind::Bool {
                    (&["true", "false"], |i| FieldValue::Bool(i == 0))
                } else {
                    (&["0", "1"], |i| FieldValue::Flag(u8::from(i == 1)))
                };
            match strict_value(text, k.name(), &v, allowed) {
                Ok(i) => return Some((value(i), v.referenced)),
                Err(m) => (Round::Flag, v.referenced, m),
            }
        }
        SetValue::List(Some(v)) => {
            let at = v.referenced;
            let ids = k.kind() == FieldKind::IdList;
            let example = if ids {
                "[u-1001, u-1002]"
            } else {
                "[vip, night]"
            };
            match list_items(k.name(), example, v) {
                Ok(items) => {
                    let before = problems.len();
                    let mut list = Vec::with_capacity(items.len());
                    for item in items {
                        match validate_id(&item.value) {
                            Err(e) if ids => {
                                problems.push((Round::Value, item.referenced, format!("{k}: {e}")));
                            }
                            _ => list.push(item.value),
                        }
                    }
                    return (problems.len() == before).then_some((FieldValue::List(list), at));
                }
                Err(m) => (Round::Value, at, m),
            }
        }
    };
    problems.push((round, at, m));
    None
}

fn loc_of(s: &serde_saphyr::Location) -> u32 {
    line_col(s).0
}

/// One manifest's ops being read: where errors go, the included files, the checksum.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    /// Also fed every included file.
    hasher: &'a mut Sha256,
    errs: &'a mut ManifestErrors,
    inc: Includes,
}

/// The keys of an op that name its rooms and clients, as written.
struct TargetDocs {
    room: Option<Spanned<Option<String>>>,
    rooms: Option<Spanned<Option<Vec<Spanned<String>>>>>,
    client: Option<Spanned<Option<String>>>,
    clients: Option<Spanned<Option<Vec<Spanned<String>>>>>,
    rooms_file: Option<Spanned<Option<String>>>,
    clients_file: Option<Spanned<Option<String>>>,
}

/// The three ways an op names ids of one kind (rooms or clients), each with a value.
struct IdSources {
    one: Option<Spanned<String>>,
    many: Option<Vec<Spanned<String>>>,
    file: Option<Spanned<String>>,
}

/// The rooms and clients an op names.
struct Targets {
    rooms: Ids,
    clients: Ids,
    /// A room key (`room`, `rooms`, `rooms_file`) is written, with a value or not.
    rooms_given: bool,
    /// A client key is written, with a value or not.
    clients_given: bool,
    rooms_file: Option<String>,
    clients_file: Option<String>,
}

/// The value of a key written with one (`None` for a key written without: see [`given`]).
fn with_value<T>(v: Option<Spanned<Option<T>>>) -> Option<Spanned<T>> {
    v.and_then(|sp| {
        let (referenced, defined) = (sp.referenced, sp.defined);
        sp.value.map(|x| Spanned::new(x, referenced, defined))
    })
}

impl Reader<'_> {
    /// Records an error at a node of the manifest.
    fn error(&mut self, at: &serde_saphyr::Location, m: String) {
        let (l, c) = line_col(at);
        self.errs.at(self.path, l, c, m);
    }

    /// Expands one entry of `ops` into `ops`, or records what is wrong with it.
    fn expand_op(&mut self, item: Spanned<OpDoc>, ops: &mut Vec<PlannedOp>) {
        let op_line = loc_of(&item.referenced);
        let OpDoc {
            action,
            room,
            rooms,
            client,
            clients,
            rooms_file,
            clients_file,
            set,
        } = item.value;
        let parsed = Action::parse(action.value.trim());
        if parsed.is_none() {
            self.error(&action.referenced, super::unknown_action(&action.value));
        }
        let docs = TargetDocs {
            room,
            rooms,
            client,
            clients,
            rooms_file,
            clients_file,
        };
        let targets = self.targets(op_line, docs);
        let Some(action) = parsed else { return };
        self.check_targets(action, op_line, &targets);
        let fields = self.op_fields(action, op_line, set);
        if (action == Action::Update && fields.is_none()) || !self.errs.is_empty() {
            return;
        }
        self.push_ops(action, op_line, targets, fields, ops);
    }

    /// The rooms and clients an op names, each id checked.
    fn targets(&mut self, op_line: u32, d: TargetDocs) -> Targets {
        // A key written without a value still counts as given: its own error says what is
        // missing, and "names no room" would only repeat it.
        let rooms_keyed = d.room.is_some() || d.rooms.is_some() || d.rooms_file.is_some();
        let clients_keyed = d.client.is_some() || d.clients.is_some() || d.clients_file.is_some();
        for (key, example, v) in [
            ("room", "an id (room: lobby-1)", &d.room),
            ("client", "an id (client: u-1001)", &d.client),
            (
                "rooms_file",
                "a CSV file (rooms_file: rooms.csv)",
                &d.rooms_file,
            ),
            (
                "clients_file",
                "a CSV file (clients_file: clients.csv)",
                &d.clients_file,
            ),
        ] {
            if let Some(sp) = v.as_ref().filter(|sp| sp.value.is_none()) {
                let m = format!("`{key}` has no value: write {example}, or remove the key");
                self.error(&sp.referenced, m);
            }
        }
        let rooms = IdSources {
            many: given(
                self.path,
                "rooms",
                "a list such as [lobby-1, lobby-2] ([] for none)",
                d.rooms,
                self.errs,
            ),
            one: with_value(d.room),
            file: with_value(d.rooms_file),
        };
        let clients = IdSources {
            many: given(
                self.path,
                "clients",
                "a list such as [u-1001, u-1002] ([] for none)",
                d.clients,
                self.errs,
            ),
            one: with_value(d.client),
            file: with_value(d.clients_file),
        };
        let file_name = |src: &IdSources| src.file.as_ref().map(|f| f.value.clone());
        let (rooms_file, clients_file) = (file_name(&rooms), file_name(&clients));
        let (rooms, rooms_found) = self.collect_ids(op_line, "room", rooms);
        let (clients, clients_found) = self.collect_ids(op_line, "client", clients);
        Targets {
            rooms,
            clients,
            rooms_given: rooms_found || rooms_keyed,
            clients_given: clients_found || clients_keyed,
            rooms_file,
            clients_file,
        }
    }

    /// Inline ids (`room`, `rooms`) and ids from a file, each checked, and whether any was
    /// given. An inline id listed twice in the op is kept once, and the repeat noted in
    /// `inc.repeats` with both places.
    fn collect_ids(&mut self, op_line: u32, what: &'static str, src: IdSources) -> (Ids, bool) {
        let given = src.one.is_some() || src.many.is_some() || src.file.is_some();
        let mut out = Ids::new();
        let mut seen: HashMap<Box<str>, (u32, Option<u32>)> = HashMap::new();
        for s in src.one.into_iter().chain(src.many.into_iter().flatten()) {
            let (l, c) = line_col(&s.referenced);
            if let Err(e) = validate_id(&s.value) {
                self.errs.at(self.path, l, c, format!("{what}: {e}"));
                continue;
            }
            let id: Box<str> = s.value.into();
            if let Some(first) = seen.get(&id) {
                self.inc.repeats.push(Repeat {
                    what,
                    id,
                    at: (l, c),
                    first: *first,
                    op_line,
                });
                continue;
            }
            seen.insert(id.clone(), (l, c));
            out.push((id, Location { file: 0, line: l }));
        }
        if let Some(f) = src.file {
            self.file_ids(what, f, &mut out);
        }
        (out, given)
    }

    /// Adds the ids of the `rooms_file`/`clients_file` `f` to `out`; each file is read once.
    fn file_ids(&mut self, what: &'static str, f: Spanned<String>, out: &mut Ids) {
        let (l, c) = line_col(&f.referenced);
        let key_name = if what == "room" {
            "rooms_file"
        } else {
            "clients_file"
        };
        if f.value.trim().is_empty() {
            let m = format!("{key_name} is empty: name a CSV file");
            self.errs.at(self.path, l, c, m);
            return;
        }
        let full = self.inc.base.join(PathBuf::from(&f.value));
        let key = (full.clone(), what);
        if !self.inc.lists.contains_key(&key) {
            let bytes = match read_file(&full, &full) {
                Ok(b) => b,
                Err(m) => {
                    let m =
                        format!("{key_name}: {m} (paths are relative to the manifest's folder)");
                    self.errs.at(self.path, l, c, m);
                    return;
                }
            };
            let idx = match self.inc.sources.iter().position(|p| *p == full) {
                Some(i) => i as u32,
                None => {
                    hash_part(self.hasher, f.value.as_bytes(), &bytes);
                    self.inc.sources.push(full.clone());
                    (self.inc.sources.len() - 1) as u32
                }
            };
            let ids = super::csv::read_id_list(&bytes, &full, what, self.errs);
            self.inc.lists.insert(key.clone(), (idx, ids));
        }
        if let Some((idx, ids)) = self.inc.lists.get(&key) {
            out.extend(ids.iter().map(|(id, line)| {
                let at = Location {
                    file: *idx,
                    line: *line,
                };
                (id.clone(), at)
            }));
        }
    }

    /// Checks that the op names rooms, and clients exactly when its action needs them.
    fn check_targets(&mut self, action: Action, op_line: u32, t: &Targets) {
        let mut error = |m: String| self.errs.at(self.path, op_line, None, m);
        if !t.rooms_given {
            error(format!(
                "this {action} op names no room: give `room`, `rooms` or `rooms_file`"
            ));
        }
        if action.needs_client() && !t.clients_given {
            error(format!(
                "{action} needs clients: give `client`, `clients` or `clients_file` (every \
                 pair of client and room is one op)"
            ));
        }
        if !action.needs_client() && t.clients_given {
            error(format!(
                "{action} acts on rooms and takes no `client`/`clients`/`clients_file`; use \
                 mute, unmute, ban or unban for clients"
            ));
        }
    }

    /// The fields of an update (its `set`, checked); `None` for other actions, which must
    /// have no `set`.
    fn op_fields(
        &mut self,
        action: Action,
        op_line: u32,
        set: Option<Spanned<SetDoc>>,
    ) -> Option<Box<RoomFields>> {
        match (action, set) {
            (Action::Update, None) => {
                let m = format!(
                    "update needs `set` with at least one field ({})",
                    RoomFields::NAMES.join(", ")
                );
                self.errs.at(self.path, op_line, None, m);
                None
            }
            (Action::Update, Some(s)) => {
                let at = s.referenced;
                let f = room_fields(self.path, self.text, s.value, self.errs)?;
                match check_fields(&f) {
                    Ok(()) => Some(Box::new(f)),
                    Err(m) => {
                        self.error(&at, format!("set: {m}"));
                        None
                    }
                }
            }
            (a, Some(s)) => {
                let m = format!("{a} takes no `set`: only update changes fields");
                self.error(&s.referenced, m);
                None
            }
            (_, None) => None,
        }
    }

    /// Pushes the ops of a checked op entry: one per room, or per (client, room) pair. An
    /// entry that names no ids is noted in `inc.empty` instead.
    fn push_ops(
        &mut self,
        action: Action,
        op_line: u32,
        t: Targets,
        fields: Option<Box<RoomFields>>,
        ops: &mut Vec<PlannedOp>,
    ) {
        if t.rooms.is_empty() || (action.needs_client() && t.clients.is_empty()) {
            let list = |ids: &Ids, what: &str, file: &Option<String>| {
                ids.is_empty().then(|| match file {
                    Some(f) => format!("it names no {what}: {f} has no rows below its header"),
                    None => format!("it names no {what}: its {what}s list is empty"),
                })
            };
            let why: Vec<String> = [
                list(&t.rooms, "room", &t.rooms_file),
                action
                    .needs_client()
                    .then(|| list(&t.clients, "client", &t.clients_file))
                    .flatten(),
            ]
            .into_iter()
            .flatten()
            .collect();
            self.inc.empty.push((op_line, why.join("; ")));
            return;
        }
        let op_loc = Location {
            file: 0,
            line: op_line,
        };
        // An op from an included file is placed at its line there.
        let pick = |room: Location, client: Option<Location>| {
            if room.file != 0 {
                room
            } else {
                client.filter(|c| c.file != 0).unwrap_or(op_loc)
            }
        };
        if action.needs_client() {
            for (c, cl) in &t.clients {
                for (r, rl) in &t.rooms {
                    ops.push(PlannedOp {
                        op: Op {
                            action,
                            room: r.clone(),
                            client: Some(c.clone()),
                            fields: None,
                        },
                        source: pick(*rl, Some(*cl)),
                    });
                }
            }
        } else {
            for (r, rl) in &t.rooms {
                ops.push(PlannedOp {
                    op: Op {
                        action,
                        room: r.clone(),
                        client: None,
                        fields: fields.clone(),
                    },
                    source: pick(*rl, None),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn unknown_keys_finds_every_typo_and_nothing_in_a_valid_manifest() {
        let valid = "version: 1\nname: n\nsettings: {rate: 600/min, snapshot: true}\n\
            window:\n  start: 2026-11-22T22:00:00+08:00\n  end: 2026-11-23T02:00:00+08:00\n\
            ops:\n  - &f\n    action: freeze\n    rooms: [a, b]\n  - *f\n\
            \x20 - <<: *f\n    action: unfreeze\n\
            \x20 - {action: update, room: r, set: {name: N, roomTags: [x], status: 1}}\n\
            \x20 - action: mute\n    clients:\n      - c1\n    rooms_file: r.csv\n";
        assert_eq!(unknown_keys(valid), vec![]);
        // Values that look like keys are values; keys inside lists of values are not ours.
        let values = "version: 1\nname: ops\nops:\n  - action: set\n    room: romos\n";
        assert_eq!(unknown_keys(values), vec![]);

        let typos = "version: 1\nop:\n  - x\nops:\n  - action: freeze\n    room: a\n    Room: b\n\
            \x20 - {action: update, room: c, set: {nme: N}}\n";
        let found: Vec<(u32, Option<u32>, String)> = unknown_keys(typos);
        let at: Vec<(u32, Option<u32>)> = found.iter().map(|(l, c, _)| (*l, *c)).collect();
        assert_eq!(
            at,
            vec![(2, Some(1)), (7, Some(5)), (8, Some(37))],
            "{found:?}"
        );
        assert!(
            found[0].2.contains("`op` (did you mean `ops`?)"),
            "{found:?}"
        );
        assert!(
            found[1].2.contains("`Room` (did you mean `room`?)"),
            "{found:?}"
        );
        assert!(
            found[2].2.contains("`nme` (did you mean `name`?)"),
            "{found:?}"
        );
        // A syntax error ends the walk quietly: the typed parse words it.
        assert_eq!(unknown_keys("ops: [\n  - action: freeze\n"), vec![]);
    }

    fn load_text(dir: &Path, text: &str) -> Result<Parsed, ManifestErrors> {
        let p = dir.join("m.yaml");
        std::fs::write(&p, text).unwrap();
        let mut h = Sha256::new();
        load_yaml(&p, &mut h)
    }

    fn err(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let e = load_text(dir.path(), text)
            .err()
            .expect("an error")
            .to_string();
        e.replace(&dir.path().display().to_string(), "D")
    }

    #[test]
    fn spec_example() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("more-rooms.csv"), "room\nlobby-9\n").unwrap();
        let p = load_text(
            dir.path(),
            "version: 1
name: maintenance-2026-11-22
window:
  start: 2026-11-22T22:00:00+08:00
  end:   2026-11-23T02:00:00+08:00
settings:
  rate: 600/min
  concurrency: 8
  snapshot: true
ops:
  - action: freeze
    rooms: [lobby-1, lobby-2]
  - action: mute
    clients: [u-1001, u-1002]
    rooms: [lobby-1]
  - action: update
    room: help-desk
    set: { name: Help Desk, opening: 0 }
  - action: freeze
    rooms_file: more-rooms.csv
",
        )
        .unwrap();
        assert_eq!(p.name.as_deref(), Some("maintenance-2026-11-22"));
        assert!(p.window.is_some());
        assert_eq!(p.settings.rate, Some(Rate::per_minute(600)));
        assert_eq!(p.settings.concurrency, Some(8));
        assert_eq!(p.settings.snapshot, Some(true));
        let ops: Vec<String> = p.ops.iter().map(|o| o.op.to_string()).collect();
        assert_eq!(
            ops,
            vec![
                "freeze room \"lobby-1\"",
                "freeze room \"lobby-2\"",
                "mute client \"u-1001\" in room \"lobby-1\"",
                "mute client \"u-1002\" in room \"lobby-1\"",
                "update room \"help-desk\"",
                "freeze room \"lobby-9\"",
            ]
        );
        assert_eq!(p.ops[0].source, Location { file: 0, line: 11 });
        assert_eq!(p.ops[2].source.line, 13);
        assert_eq!(p.ops[5].source, Location { file: 1, line: 2 });
        assert_eq!(p.sources.len(), 2);
    }

    #[test]
    fn unknown_keys_are_errors_with_location() {
        let e = err("version: 1\nops:\n  - action: freeze\n    rooms: [a]\n    romos: [b]\n");
        assert!(e.starts_with("D/m.yaml:5:"), "{e}");
        assert!(e.contains("romos"), "{e}");
        let e = err("version: 1\nsettngs: {}\nops: []\n");
        assert!(e.starts_with("D/m.yaml:2:"), "{e}");
    }

    #[test]
    fn parser_messages_are_for_users() {
        let e = err("version: 1\nops:\n  - action: freeze\n    room: a\n    room: b\n");
        assert!(
            e.contains("D/m.yaml:5:5: duplicate mapping key: room: each key may appear once"),
            "{e}"
        );
        let e = err("version: 1\nops:\n  - action: freeze\n    rooms: a\n");
        assert!(e.contains("D/m.yaml:4:12: expected a list here"), "{e}");
    }

    #[test]
    fn version_rules() {
        assert!(err("ops: []\n").contains("D/m.yaml:1: `version: 1` is required"));
        let e = err("version: 2\nops: []\n");
        assert!(
            e.starts_with("D/m.yaml:1:10: version 2 is not supported"),
            "{e}"
        );
    }

    #[test]
    fn op_rules() {
        let e = err("version: 1\nops:\n  - action: frezze\n    room: a\n");
        assert!(
            e.contains("D/m.yaml:3:13: unknown action \"frezze\" (did you mean `freeze`?)"),
            "{e}"
        );
        let e = err("version: 1\nops:\n  - action: mute\n    room: a\n");
        assert!(e.contains("D/m.yaml:3: mute needs clients"), "{e}");
        let e = err("version: 1\nops:\n  - action: freeze\n    room: a\n    client: c\n");
        assert!(e.contains("D/m.yaml:3: freeze acts on rooms"), "{e}");
        let e = err("version: 1\nops:\n  - action: update\n    room: a\n");
        assert!(e.contains("D/m.yaml:3: update needs `set`"), "{e}");
        let e = err("version: 1\nops:\n  - action: update\n    room: a\n    set: {}\n");
        assert!(
            e.contains("D/m.yaml:5:10: set: update needs at least one field"),
            "{e}"
        );
        let e =
            err("version: 1\nops:\n  - action: update\n    room: a\n    set: { colour: red }\n");
        assert!(e.contains("D/m.yaml:5:"), "{e}");
        let e = err("version: 1\nops:\n  - action: freeze\n    rooms: [ok, \"\"]\n");
        assert!(
            e.contains("D/m.yaml:4:") && e.contains("room: id is empty"),
            "{e}"
        );
        let e = err("version: 1\nops:\n  - action: freeze\n");
        assert!(
            e.contains("D/m.yaml:3: this freeze op names no room"),
            "{e}"
        );
    }

    /// A ban sweep in YAML: every (client, room) pair, as for mutes; `settings.room_auth`.
    #[test]
    fn ban_ops_expand_to_pairs_and_room_auth_is_a_setting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("joined.csv"), "room\nr-2\nr-3\n").unwrap();
        let p = load_text(
            dir.path(),
            "version: 1\nsettings:\n  room_auth: api-key\nops:\n  - action: ban\n    \
             clients: [spam-1, spam-2]\n    rooms: [r-1]\n  - action: unban\n    \
             client: spam-3\n    rooms_file: joined.csv\n",
        )
        .unwrap();
        assert_eq!(p.settings.room_auth, Some(crate::op::RoomAuth::ApiKey));
        let ops: Vec<String> = p.ops.iter().map(|o| o.op.to_string()).collect();
        assert_eq!(
            ops,
            [
                "ban client \"spam-1\" in room \"r-1\"",
                "ban client \"spam-2\" in room \"r-1\"",
                "unban client \"spam-3\" in room \"r-2\"",
                "unban client \"spam-3\" in room \"r-3\"",
            ]
        );
        let e = err("version: 1\nops:\n  - action: ban\n    rooms: [a]\n");
        assert!(e.contains("D/m.yaml:3: ban needs clients"), "{e}");
        let e = err("version: 1\nsettings:\n  room_auth: apikey\nops: []\n");
        assert!(
            e.contains("D/m.yaml:3:14: settings.room_auth must be token or api-key"),
            "{e}"
        );
        assert_eq!(
            unknown_keys("version: 1\nsettings: {room_auth: token}\nops: []\n"),
            vec![]
        );
    }

    #[test]
    fn window_and_settings_rules() {
        let e = err(
            "version: 1\nwindow:\n  start: 2026-11-23T02:00:00Z\n  end: 2026-11-22T22:00:00Z\nops: []\n",
        );
        assert!(e.contains("D/m.yaml:4:8: window.end"), "{e}");
        let e =
            err("version: 1\nwindow:\n  start: tomorrow\n  end: 2026-11-22T22:00:00Z\nops: []\n");
        assert!(
            e.contains("D/m.yaml:3:10: window.start \"tomorrow\""),
            "{e}"
        );
        let e = err(
            "version: 1\nsettings:\n  rate: fast\n  concurrency: 0\n  timeout: soon\nops: []\n",
        );
        assert!(
            e.contains("D/m.yaml:3:9: settings.rate: invalid rate"),
            "{e}"
        );
        assert!(
            e.contains("D/m.yaml:4:16: settings.concurrency must be"),
            "{e}"
        );
        assert!(e.contains("D/m.yaml:5:12: settings.timeout"), "{e}");
        let e = err("version: 1\nsettings:\n  budget: \"http://:pw-9@h/0\"\nops: []\n");
        assert!(
            e.contains("D/m.yaml:3:11: settings.budget http://***@h/0: expected redis://"),
            "{e}"
        );
        assert!(!e.contains("pw-9"), "{e}");
    }

    /// A daily window: times of day (quoted or not) in a named zone, crossing midnight, with
    /// `undo_at_end`; each mistake is reported at its own line and column.
    #[test]
    fn daily_windows_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ok = |window: &str| {
            let text = format!("version: 1\nwindow:\n{window}ops: []\n");
            load_text(dir.path(), &text).map(|p| p.window.unwrap())
        };
        let w = ok(
            "  start: \"22:00\"\n  end: 07:00:30\n  timezone: Asia/Taipei\n  undo_at_end: true\n",
        )
        .unwrap();
        assert!(w.undo_at_end);
        let d = w.daily().unwrap();
        assert_eq!((d.start.hour(), d.end.hour(), d.end.second()), (22, 7, 30));
        assert_eq!(w.describe(), "22:00-07:00:30 Asia/Taipei, daily");
        let once =
            ok("  start: 2026-11-22T22:00:00+08:00\n  end: 2026-11-23T02:00:00+08:00\n").unwrap();
        assert!(once.daily().is_none() && !once.undo_at_end);

        let e = err(
            "version: 1\nwindow:\n  start: \"25:00\"\n  end: \"07:00\"\n  timezone: UTC\nops: []\n",
        );
        assert!(
            e.contains("D/m.yaml:3:10: window.start \"25:00\" is not a time of day"),
            "{e}"
        );
        let e = err(
            "version: 1\nwindow:\n  start: \"22:00\"\n  end: \"07:00\"\n  timezone: Asia/Taipie\nops: []\n",
        );
        assert!(
            e.contains("D/m.yaml:5:13: window.timezone \"Asia/Taipie\" is not a known IANA time zone (did you mean `Asia/Taipei`?)"),
            "{e}"
        );
        let e = err("version: 1\nwindow:\n  start: \"22:00\"\n  end: \"07:00\"\nops: []\n");
        assert!(
            e.contains("D/m.yaml:3:3: window.timezone is required with times of day"),
            "{e}"
        );
        let e = err(
            "version: 1\nwindow:\n  start: \"22:00\"\n  end: 2026-11-23T02:00:00Z\n  timezone: UTC\nops: []\n",
        );
        assert!(
            e.contains(
                "D/m.yaml:4:8: window.end is an RFC 3339 time but window.start is a time of day"
            ),
            "{e}"
        );
        let e = err(
            "version: 1\nwindow:\n  start: 2026-11-22T22:00:00Z\n  end: 2026-11-23T02:00:00Z\n  timezone: UTC\nops: []\n",
        );
        assert!(
            e.contains("D/m.yaml:5:13: window.timezone applies to times of day"),
            "{e}"
        );
        let e = err(
            "version: 1\nwindow:\n  start: \"22:00\"\n  end: \"22:00\"\n  timezone: UTC\n  undo_at_end: yes\nops: []\n",
        );
        assert!(
            e.contains("D/m.yaml:4:8: window.end (22:00) is the same time of day"),
            "{e}"
        );
        assert!(
            e.contains("D/m.yaml:6:16: window.undo_at_end must be true or false"),
            "{e}"
        );
        let e = err(
            "version: 1\nwindow:\n  start: \"22:00\"\n  end: \"07:00\"\n  timezon: UTC\nops: []\n",
        );
        assert!(
            e.contains("unknown field `timezon` (did you mean `timezone`?)"),
            "{e}"
        );
    }

    fn update(set: &str) -> Result<RoomFields, String> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("version: 1\nops:\n  - action: update\n    room: a\n    set: {set}\n");
        load_text(dir.path(), &text)
            .map(|p| *p.ops[0].op.fields.clone().unwrap())
            .map_err(|e| {
                e.to_string()
                    .replace(&dir.path().display().to_string(), "D")
            })
    }

    /// `botMode`, `opening` and `status` take exactly what a CSV cell takes: `true`/`false`
    /// and `0`/`1`, unquoted. YAML 1.1 booleans, other spellings, other radixes and quoted
    /// strings are refused at the value's own line and column.
    #[test]
    fn booleans_and_numbers_are_as_strict_as_csv() {
        let f = update("{ botMode: true, opening: 0, status: 1 }").unwrap();
        assert_eq!(
            (f.bot_mode, f.opening, f.status),
            (Some(true), Some(0), Some(1))
        );
        let f = update("{ botMode: false, opening: 1, status: 0 }").unwrap();
        assert_eq!(
            (f.bot_mode, f.opening, f.status),
            (Some(false), Some(1), Some(0))
        );
        // Through an alias, the value written at the anchor counts.
        let f = update("{ botMode: &b true, name: x }").unwrap();
        assert_eq!(f.bot_mode, Some(true));
        for (v, why) in [
            ("yes", "not \"yes\""),
            ("on", "not \"on\""),
            ("y", "not \"y\""),
            ("no", "not \"no\""),
            ("True", "not \"True\""),
            ("FALSE", "not \"FALSE\""),
            ("1", "not \"1\""),
            ("\"true\"", "without quotes, not the string \"true\""),
            ("'false'", "without quotes, not the string \"false\""),
        ] {
            let e = update(&format!("{{ botMode: {v} }}")).unwrap_err();
            assert!(
                e.contains("D/m.yaml:5:21: set: botMode must be true or false"),
                "{v}: {e}"
            );
            assert!(e.contains(why), "{v}: {e}");
        }
        for key in ["opening", "status"] {
            let col = 14 + key.len();
            for (v, why) in [
                ("2", "not \"2\""),
                ("0x1", "not \"0x1\""),
                ("0o1", "not \"0o1\""),
                ("+1", "not \"+1\""),
                ("01", "not \"01\""),
                ("1.0", "not \"1.0\""),
                ("-0", "not \"-0\""),
                ("true", "not \"true\""),
                ("\"1\"", "without quotes, not the string \"1\""),
                ("'0'", "without quotes, not the string \"0\""),
            ] {
                let e = update(&format!("{{ {key}: {v} }}")).unwrap_err();
                assert!(
                    e.contains(&format!("D/m.yaml:5:{col}: set: {key} must be 0 or 1")),
                    "{key}: {v}: {e}"
                );
                assert!(e.contains(why), "{key}: {v}: {e}");
            }
        }
        // Every bad value is reported, not only the first.
        let e = update("\n      botMode: yes\n      opening: \"1\"\n      status: 2").unwrap_err();
        assert!(e.contains("D/m.yaml:6:16: set: botMode"), "{e}");
        assert!(e.contains("D/m.yaml:7:16: set: opening"), "{e}");
        assert!(e.contains("D/m.yaml:8:15: set: status"), "{e}");
        // settings.snapshot too.
        let e = err("version: 1\nsettings:\n  snapshot: yes\nops: []\n");
        assert!(
            e.contains("D/m.yaml:3:13: settings.snapshot must be true or false, not \"yes\""),
            "{e}"
        );
    }

    #[test]
    fn set_takes_every_field_and_lists_must_be_lists() {
        let f = update(
            "{ name: n, cover: c, description: d, roomTags: [t1, t2], webhook: w, botMode: \
             true, extParams: e, opening: 1, owner: o, managers: [m1], status: 0 }",
        )
        .unwrap();
        assert_eq!(f.given(), RoomFields::NAMES.to_vec());
        assert_eq!(f.room_tags, Some(vec!["t1".to_string(), "t2".to_string()]));
        let f = update("{ roomTags: [] }").unwrap();
        assert_eq!(f.room_tags, Some(vec![]));
        let e = update("{ roomTags: vip;night }").unwrap_err();
        assert!(
            e.contains(
                "D/m.yaml:5:22: set: roomTags must be a list, such as [vip, night] ([] for \
                 none), not the string \"vip;night\""
            ),
            "{e}"
        );
        let e = update("{ managers: u-1 }").unwrap_err();
        assert!(
            e.contains("D/m.yaml:5:22: set: managers must be a list"),
            "{e}"
        );
        let e = update("{ managers: [ok, \"\"] }").unwrap_err();
        assert!(
            e.contains("D/m.yaml:5:27: set: managers: id is empty"),
            "{e}"
        );
        let e = update("{ owner: \"\" }").unwrap_err();
        assert!(e.contains("D/m.yaml:5:19: set: owner: id is empty"), "{e}");
    }

    /// An id listed twice among one op's inline ids is kept once, and the warning names
    /// both places by line and column, not the op's line twice.
    #[test]
    fn inline_repeats_name_each_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = load_text(
            dir.path(),
            "version: 1\nops:\n  - action: freeze\n    room: b\n    rooms: [a, b, a]\n  \
             - action: mute\n    clients:\n      - u\n      - u\n    rooms: [a, c]\n",
        )
        .unwrap();
        let ops: Vec<String> = p.ops.iter().map(|o| o.op.to_string()).collect();
        assert_eq!(
            ops,
            vec![
                "freeze room \"b\"",
                "freeze room \"a\"",
                "mute client \"u\" in room \"a\"",
                "mute client \"u\" in room \"c\"",
            ]
        );
        assert_eq!(
            p.warnings.finish(),
            vec![
                "line 5:16 repeats line 4:11: room \"b\" is listed twice in the op at line 3 \
                 (runs once)",
                "line 5:19 repeats line 5:13: room \"a\" is listed twice in the op at line 3 \
                 (runs once)",
                "line 9:9 repeats line 8:9: client \"u\" is listed twice in the op at line 6 \
                 (runs once)",
            ]
        );
        // With included files, places name the manifest.
        std::fs::write(dir.path().join("r.csv"), "room\nz\n").unwrap();
        let p = load_text(
            dir.path(),
            "version: 1\nops:\n  - action: freeze\n    rooms: [a, a]\n    rooms_file: r.csv\n",
        )
        .unwrap();
        let w = p.warnings.finish().join("\n");
        assert_eq!(
            w.replace(&dir.path().display().to_string(), "D"),
            "D/m.yaml:4:16 repeats D/m.yaml:4:13: room \"a\" is listed twice in the op at \
             D/m.yaml:3 (runs once)"
        );
    }

    fn bomb(levels: usize) -> String {
        let mut y = String::from("version: 1\nops:\n  - action: freeze\n    rooms: &a0 [");
        y.push_str(&["lol"; 10].join(", "));
        y.push_str("]\n");
        for i in 1..levels {
            let prev = format!("*a{}", i - 1);
            y.push_str(&format!(
                "  - action: freeze\n    rooms: &a{i} [{}]\n",
                vec![prev; 10].join(", ")
            ));
        }
        y
    }

    #[test]
    fn alias_bomb_is_refused_by_the_budget() {
        // 10^9 nodes once expanded; refused at the alias that passes the budget.
        let e = err(&bomb(9));
        assert!(
            e.starts_with("D/m.yaml:14:") && e.contains("refused by the parse budget"),
            "{e}"
        );
        // A small, legitimate use of aliases is fine for the budget (the schema then
        // rejects the nested list, which is a different message).
        let e = err(&bomb(2));
        assert!(!e.contains("parse budget"), "{e}");
        assert!(check_alias_budget("a: &x [1, 2]\nb: *x\nc: *x\n").is_ok());
    }

    #[test]
    fn rooms_file_errors_name_that_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.csv"), "room\nok\n\"a\tb\"\n").unwrap();
        let e = load_text(
            dir.path(),
            "version: 1\nops:\n  - action: freeze\n    rooms_file: r.csv\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("r.csv:3:1: room: id contains a control character"),
            "{e}"
        );
        let e = load_text(
            dir.path(),
            "version: 1\nops:\n  - action: freeze\n    rooms_file: nope.csv\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("m.yaml:4:17: rooms_file: cannot open"), "{e}");
    }
}
