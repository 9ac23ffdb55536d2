//! CSV manifests (docs/behaviour.md §2), read as a stream so a million-row file costs little more than
//! its ops: the header names the columns, each row becomes one op, and every problem is an
//! error naming the line and, when it is about one cell, that cell's column (1-based
//! characters on its line, as in YAML errors, found from the raw bytes of the record). A
//! quote that is never closed is an error at the quote (the csv crate would silently read
//! the rest of the file as one cell). Also the reader of `rooms_file`/`clients_file` lists.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;

use ::csv::{ByteRecord, ReaderBuilder};
use sha2::{Digest, Sha256};

use super::{Location, ManifestErrors, Parsed, PlannedOp, Settings, did_you_mean};
use crate::op::{Action, Field, Op, RoomFields, validate_id};

/// A manifest column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Action,
    Room,
    Client,
    Field(Field),
}

/// The columns before the update fields.
const TARGET_COLUMNS: [&str; 3] = ["action", "room", "client"];

/// Every valid column name: `action`, `room`, `client`, then the update fields.
pub(crate) const COLUMNS: [&str; TARGET_COLUMNS.len() + Field::COUNT] = {
    let mut cols = [""; TARGET_COLUMNS.len() + Field::COUNT];
    let mut i = 0;
    while i < cols.len() {
        cols[i] = if i < TARGET_COLUMNS.len() {
            TARGET_COLUMNS[i]
        } else {
            Field::ALL[i - TARGET_COLUMNS.len()].name()
        };
        i += 1;
    }
    cols
};

fn column(name: &str) -> Option<Col> {
    match name {
        "action" => Some(Col::Action),
        "room" => Some(Col::Room),
        "client" => Some(Col::Client),
        _ => Field::parse(name).map(Col::Field),
    }
}

/// Hashes and counts every byte read through it, and remembers where the newlines are
/// until [`LineTracker::line_at`] has passed them: the csv crate's own line numbers skip
/// comment lines, so lines are counted here from byte offsets. Only the newlines of the
/// read-ahead buffer are held, never the whole file's. It also keeps the raw bytes of the
/// records not yet done with (see [`LineTracker::raw`]), so a bad cell's column can be found.
struct LineTracker<'h, R> {
    inner: R,
    hasher: Option<&'h mut Sha256>,
    bytes: u64,
    newlines: VecDeque<u64>,
    /// Newlines already passed.
    passed: u64,
    /// Raw bytes from offset `kept_from` up to `bytes`.
    kept: Vec<u8>,
    kept_from: u64,
}

/// Bytes of finished records kept before [`LineTracker::done_before`] drops them: dropping
/// in large steps keeps the cost of moving the rest down negligible.
const KEEP_SLACK: u64 = 1 << 20;

impl<'h, R: Read> LineTracker<'h, R> {
    fn new(inner: R, hasher: Option<&'h mut Sha256>) -> Self {
        LineTracker {
            inner,
            hasher,
            bytes: 0,
            newlines: VecDeque::new(),
            passed: 0,
            kept: Vec::new(),
            kept_from: 0,
        }
    }

    /// The raw bytes from offset `from` to `to`, if still kept.
    fn raw(&self, from: u64, to: u64) -> Option<&[u8]> {
        let a = usize::try_from(from.checked_sub(self.kept_from)?).ok()?;
        let b = usize::try_from(to.checked_sub(self.kept_from)?).ok()?;
        self.kept.get(a..b)
    }

    /// Bytes before offset `byte` are no longer needed.
    fn done_before(&mut self, byte: u64) {
        let done = byte.saturating_sub(self.kept_from);
        if done > KEEP_SLACK {
            let n = usize::try_from(done)
                .unwrap_or(usize::MAX)
                .min(self.kept.len());
            self.kept.drain(..n);
            self.kept_from += n as u64;
        }
    }

    /// The 1-based line of byte offset `byte`; offsets must not go backwards.
    fn line_at(&mut self, byte: u64) -> u32 {
        while self.newlines.front().is_some_and(|&n| n < byte) {
            self.newlines.pop_front();
            self.passed += 1;
        }
        u32::try_from(self.passed + 1).unwrap_or(u32::MAX)
    }
}

impl<R: Read> Read for LineTracker<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_deref_mut() {
            h.update(&buf[..n]);
        }
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                self.newlines.push_back(self.bytes + i as u64);
            }
        }
        self.kept.extend_from_slice(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes > super::MAX_FILE_BYTES {
            return Err(std::io::Error::other(format!(
                "the file is larger than {} MiB: is this the right file?",
                super::MAX_FILE_BYTES >> 20
            )));
        }
        Ok(n)
    }
}

fn reader<R: Read>(r: R) -> ::csv::Reader<R> {
    ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .buffer_capacity(1 << 16)
        .from_reader(r)
}

/// The line where `rec`, just read, starts. The csv crate places a record at the end of
/// the previous one (before skipped comments and blank lines), so the line is found from
/// where the record ends, less the newlines inside its quoted cells.
fn line_of<R: Read>(rdr: &mut ::csv::Reader<LineTracker<'_, R>>, rec: &ByteRecord) -> u32 {
    let end = rdr.position().byte().saturating_sub(1);
    let inner = rec.iter().flatten().filter(|b| **b == b'\n').count();
    let end_line = rdr.get_mut().line_at(end);
    end_line
        .saturating_sub(u32::try_from(inner).unwrap_or(u32::MAX))
        .max(1)
}

/// The 1-based character column where field `field` (0-based) of a record starts, from the
/// record's raw bytes as the reader consumed them (comment and blank lines before it
/// included, a BOM at the start of the file skipped by the caller). Leading spaces of an
/// unquoted cell are skipped, since cells are trimmed. `None` when the field starts on a
/// later line than the record (after a quoted newline) or is not there.
fn cell_column(raw: &[u8], field: usize) -> Option<u32> {
    let mut pos = 0;
    // Skip what the reader skips before a record: comment lines and line ends.
    loop {
        match raw.get(pos) {
            Some(b'#') => {
                pos = raw[pos..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(raw.len(), |i| pos + i + 1)
            }
            Some(b'\n' | b'\r') => pos += 1,
            _ => break,
        }
    }
    let line_start = pos;
    let mut multiline = false;
    for _ in 0..field {
        if raw.get(pos) == Some(&b'"') {
            pos += 1;
            while pos < raw.len() {
                match raw[pos] {
                    b'"' if raw.get(pos + 1) == Some(&b'"') => pos += 2,
                    b'"' => {
                        pos += 1;
                        break;
                    }
                    b'\n' => {
                        multiline = true;
                        pos += 1;
                    }
                    _ => pos += 1,
                }
            }
        }
        while pos < raw.len() && !matches!(raw[pos], b',' | b'\n' | b'\r') {
            pos += 1;
        }
        if raw.get(pos) != Some(&b',') {
            return None;
        }
        pos += 1;
    }
    if multiline {
        return None;
    }
    if raw.get(pos) != Some(&b'"') {
        while matches!(raw.get(pos), Some(b' ' | b'\t')) {
            pos += 1;
        }
    }
    let chars = raw[line_start..pos.min(raw.len())]
        .iter()
        .filter(|b| (**b & 0xC0) != 0x80)
        .count();
    u32::try_from(chars + 1).ok()
}

/// Where a record opens a quoted cell it never closes, as (lines after the record's first
/// line, 1-based column). The csv crate reads such a cell to the end of the file without
/// complaint, so a stray quote would otherwise turn the rest of the file into one cell.
fn unclosed_quote(raw: &[u8]) -> Option<(u32, u32)> {
    if !raw.contains(&b'"') {
        return None;
    }
    let mut pos = 0;
    loop {
        match raw.get(pos) {
            Some(b'#') => {
                pos = raw[pos..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(raw.len(), |i| pos + i + 1)
            }
            Some(b'\n' | b'\r') => pos += 1,
            _ => break,
        }
    }
    let record_start = pos;
    loop {
        if raw.get(pos) == Some(&b'"') {
            let open = pos;
            pos += 1;
            loop {
                match raw.get(pos) {
                    None => {
                        let before = &raw[record_start..open];
                        let lines = before.iter().filter(|b| **b == b'\n').count();
                        let line_start = before
                            .iter()
                            .rposition(|b| *b == b'\n')
                            .map_or(0, |i| i + 1);
                        let chars = before[line_start..]
                            .iter()
                            .filter(|b| (**b & 0xC0) != 0x80)
                            .count();
                        return Some((u32::try_from(lines).ok()?, u32::try_from(chars + 1).ok()?));
                    }
                    Some(b'"') if raw.get(pos + 1) == Some(&b'"') => pos += 2,
                    Some(b'"') => {
                        pos += 1;
                        break;
                    }
                    Some(_) => pos += 1,
                }
            }
        }
        while pos < raw.len() && !matches!(raw[pos], b',' | b'\n' | b'\r') {
            pos += 1;
        }
        if raw.get(pos) != Some(&b',') {
            return None;
        }
        pos += 1;
    }
}

/// Reports a quoted cell of the record read from byte `start` that is never closed; true
/// if there was one (the record is then not worth checking further).
fn report_unclosed<R: Read>(
    rdr: &::csv::Reader<LineTracker<'_, R>>,
    start: u64,
    file: &Path,
    line: u32,
    errs: &mut ManifestErrors,
) -> bool {
    let Some(raw) = rdr.get_ref().raw(start, rdr.position().byte()) else {
        return false;
    };
    let Some((down, col)) = unclosed_quote(raw) else {
        return false;
    };
    // [`line_of`] took the file's last newline for the record's terminator, but it lies
    // inside the unclosed cell and was subtracted once more as one of its own.
    let line = line + u32::from(raw.ends_with(b"\n"));
    errs.at(
        file,
        line.saturating_add(down),
        Some(col),
        "this quote opens a cell that is never closed, so the rest of the file was read as \
         that one cell: close the quote (a quote inside a quoted cell is written \"\")",
    );
    true
}

/// The line of a parse error: where the reader stopped.
fn error_line<R: Read>(rdr: &mut ::csv::Reader<LineTracker<'_, R>>, _e: &::csv::Error) -> u32 {
    let end = rdr.position().byte().saturating_sub(1);
    rdr.get_mut().line_at(end)
}

/// The cells of a record as UTF-8, or the first bad one's index and an error naming it.
fn cells<'r>(rec: &'r ByteRecord, names: &[&str]) -> Result<Vec<&'r str>, (usize, String)> {
    rec.iter()
        .enumerate()
        .map(|(i, b)| {
            std::str::from_utf8(b).map(str::trim).map_err(|e| {
                let col = names
                    .get(i)
                    .map(|n| format!("column `{n}`"))
                    .unwrap_or_else(|| format!("field {}", i + 1));
                let m = format!(
                    "{col} is not valid UTF-8 (bad byte at offset {} of the cell): save the \
                     file as UTF-8",
                    e.valid_up_to()
                );
                (i, m)
            })
        })
        .collect()
}

/// The column of field `field` of the record the reader read from byte `start` to where it
/// is now (see [`cell_column`]).
fn column_of<R: Read>(
    rdr: &::csv::Reader<LineTracker<'_, R>>,
    start: u64,
    field: usize,
) -> Option<u32> {
    let raw = rdr.get_ref().raw(start, rdr.position().byte())?;
    let raw = match start {
        0 => raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw),
        _ => raw,
    };
    cell_column(raw, field)
}

/// Reads a CSV manifest from `path`, feeding its bytes to `hasher`.
pub(crate) fn load_csv(
    path: &Path,
    opts: &super::LoadOptions,
    hasher: &mut Sha256,
) -> Result<Parsed, ManifestErrors> {
    let mut ops = Vec::new();
    load_csv_with(path, opts, hasher, &mut |op| ops.push(op))?;
    Ok(Parsed {
        name: None,
        window: None,
        settings: Settings::default(),
        ops,
        sources: vec![path.to_path_buf()],
        warnings: Default::default(),
    })
}

/// Reads a CSV manifest at `path` as [`load_csv`] does, handing each op to `sink` as it is
/// read instead of collecting them (`validate` keeps a compact form of each).
pub(crate) fn load_csv_with(
    path: &Path,
    opts: &super::LoadOptions,
    hasher: &mut Sha256,
    sink: &mut dyn FnMut(PlannedOp),
) -> Result<(), ManifestErrors> {
    let mut errs = ManifestErrors::default();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            errs.at(path, 0, None, format!("cannot open the manifest: {e}"));
            return Err(errs);
        }
    };
    hasher.update(b"manifest\0");
    let bytes = {
        let tracker = LineTracker::new(
            std::io::BufReader::with_capacity(1 << 16, file),
            Some(hasher),
        );
        read_manifest(path, opts, tracker, &mut errs, sink)
    };
    hasher.update(bytes.to_le_bytes());
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(())
}

/// Parses manifest CSV from any reader; errors go to `errs` and name `path`, ops to `sink`.
/// Returns the number of bytes read.
fn read_manifest<R: Read>(
    path: &Path,
    opts: &super::LoadOptions,
    input: LineTracker<'_, R>,
    errs: &mut ManifestErrors,
    sink: &mut dyn FnMut(PlannedOp),
) -> u64 {
    let mut rdr = reader(input);
    read_rows(path, opts, &mut rdr, errs, sink);
    rdr.get_ref().bytes
}

fn read_rows<R: Read>(
    path: &Path,
    opts: &super::LoadOptions,
    rdr: &mut ::csv::Reader<LineTracker<'_, R>>,
    errs: &mut ManifestErrors,
    sink: &mut dyn FnMut(PlannedOp),
) {
    let mut rec = ByteRecord::new();
    // The header: the first record that is not a comment or blank line.
    match rdr.read_byte_record(&mut rec) {
        Ok(true) => {}
        Ok(false) => {
            errs.at(
                path,
                1,
                None,
                "the file is empty: a header row naming the columns is required, e.g. \
                 `action,room,client`",
            );
            return;
        }
        Err(e) => {
            errs.at(path, error_line(rdr, &e), None, read_error(&e));
            return;
        }
    }
    let header_line = line_of(rdr, &rec);
    let Some(cols) = header(path, header_line, &rec, opts, errs, &|i| {
        column_of(rdr, 0, i)
    }) else {
        return;
    };
    let names: Vec<&str> = cols.iter().map(col_name).collect();
    let ncols = cols.len();
    loop {
        let start = rdr.position().byte();
        rdr.get_mut().done_before(start);
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                errs.at(path, error_line(rdr, &e), None, read_error(&e));
                if matches!(e.kind(), ::csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = line_of(rdr, &rec);
        if report_unclosed(rdr, start, path, line, errs) {
            continue;
        }
        if rec.iter().all(|f| f.trim_ascii().is_empty()) {
            continue; // a blank row (e.g. `,,,` from a spreadsheet) carries no intent
        }
        let col = |i: usize| column_of(rdr, start, i);
        if rec.len() != ncols {
            // Point at the first field too many (an unquoted comma, usually).
            errs.at(
                path,
                line,
                (rec.len() > ncols).then(|| col(ncols)).flatten(),
                format!(
                    "this row has {} fields but the header (line {header_line}) has {ncols}: \
                     quote cells that contain a comma",
                    rec.len()
                ),
            );
            continue;
        }
        let cells = match cells(&rec, &names) {
            Ok(c) => c,
            Err((i, m)) => {
                errs.at(path, line, col(i), m);
                continue;
            }
        };
        match row(&cols, &cells, opts.action) {
            Ok(op) => sink(PlannedOp {
                op,
                source: Location { file: 0, line },
            }),
            Err(msgs) => {
                for (i, m) in msgs {
                    errs.at(path, line, i.and_then(col), m);
                }
            }
        }
    }
}

fn read_error(e: &::csv::Error) -> String {
    match e.kind() {
        ::csv::ErrorKind::Io(io) => format!("cannot read the file: {io}"),
        ::csv::ErrorKind::Utf8 { err, .. } => {
            format!("not valid UTF-8 ({err}): save the file as UTF-8")
        }
        _ => format!("malformed CSV: {e}"),
    }
}

fn col_name(c: &Col) -> &'static str {
    match c {
        Col::Action => "action",
        Col::Room => "room",
        Col::Client => "client",
        Col::Field(k) => k.name(),
    }
}

/// Checks the header row and maps each position to its column.
fn header(
    path: &Path,
    line: u32,
    rec: &ByteRecord,
    opts: &super::LoadOptions,
    errs: &mut ManifestErrors,
    col: &dyn Fn(usize) -> Option<u32>,
) -> Option<Vec<Col>> {
    let before = errs.total;
    let names = match cells(rec, &[]) {
        Ok(n) => n,
        Err((i, m)) => {
            errs.at(path, line, col(i), format!("header: {m}"));
            return None;
        }
    };
    if !names.iter().any(|n| column(n).is_some()) {
        errs.at(
            path,
            line,
            None,
            format!(
                "the first line is not a header ({:?}): a header row naming the columns is \
                 required, e.g. `action,room,client`; valid columns: {}",
                names.join(","),
                COLUMNS.join(", ")
            ),
        );
        return None;
    }
    let cols = header_columns(path, line, &names, errs, col);
    if errs.total > before {
        return None;
    }
    required_columns(path, line, &cols, opts, errs);
    (errs.total == before).then_some(cols)
}

/// The column of each header name; an unknown, empty or repeated name is an error at its
/// place (an unknown or empty one then stands as `room`).
fn header_columns(
    path: &Path,
    line: u32,
    names: &[&str],
    errs: &mut ManifestErrors,
    col: &dyn Fn(usize) -> Option<u32>,
) -> Vec<Col> {
    let mut cols = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let problem = match column(n) {
            Some(c) => {
                let twice = cols.contains(&c);
                cols.push(c);
                if !twice {
                    continue;
                }
                format!("header: column `{n}` appears twice (position {})", i + 1)
            }
            None if n.is_empty() => {
                cols.push(Col::Room);
                format!(
                    "header: column {} has no name: remove the empty column (a trailing comma?)",
                    i + 1
                )
            }
            None => {
                cols.push(Col::Room);
                format!(
                    "header: unknown column `{n}`{}; valid columns: {}",
                    did_you_mean(n, &COLUMNS),
                    COLUMNS.join(", ")
                )
            }
        };
        errs.at(path, line, col(i), problem);
    }
    cols
}

/// Checks that the columns and `--action` together name every op's action and target.
fn required_columns(
    path: &Path,
    line: u32,
    cols: &[Col],
    opts: &super::LoadOptions,
    errs: &mut ManifestErrors,
) {
    let has = |c: Col| cols.contains(&c);
    let problem = match (has(Col::Action), opts.action) {
        (true, Some(a)) => Some(format!(
            "the file has an `action` column, so --action {a} is not allowed: drop --action (it \
             is only for files without an action column)"
        )),
        (false, None) => {
            let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
            let (last, rest) = names.split_last().unwrap_or((&"", &[]));
            Some(format!(
                "the file has no `action` column: pass --action ACTION ({} or {last}) to apply \
                 one action to every row, or add an `action` column",
                rest.join(", ")
            ))
        }
        (false, Some(a)) if a.needs_client() && !has(Col::Client) => Some(format!(
            "--action {a} needs a `client` column (every {a} is a client and a room)"
        )),
        (false, Some(Action::Update)) if !cols.iter().any(|c| matches!(c, Col::Field(_))) => {
            Some(format!(
                "--action update needs at least one field column ({})",
                RoomFields::NAMES.join(", ")
            ))
        }
        _ => None,
    };
    if let Some(m) = problem {
        errs.at(path, line, None, m);
    }
    if !has(Col::Room) {
        errs.at(
            path,
            line,
            None,
            "the header has no `room` column: every op names a room",
        );
    }
}

/// A problem with a row, and the index of the cell it is about (if one).
type Problem = (Option<usize>, String);

/// One data row to an op, or every problem with it.
fn row(cols: &[Col], cells: &[&str], fixed: Option<Action>) -> Result<Op, Vec<Problem>> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut action = fixed;
    let mut room: Option<(usize, &str)> = None;
    let mut client: Option<&str> = None;
    let mut client_at = None;
    let mut fields = RoomFields::default();
    let mut given: Vec<&'static str> = Vec::new();
    let mut first_given = None;
    for (i, (c, v)) in cols.iter().zip(cells).enumerate() {
        match c {
            Col::Action => {
                if v.is_empty() {
                    problems.push((Some(i), "the `action` cell is empty".to_string()));
                } else {
                    match Action::parse(v) {
                        Some(a) => action = Some(a),
                        None => problems.push((Some(i), super::unknown_action(v))),
                    }
                }
            }
            Col::Room => room = Some((i, v)),
            Col::Client => {
                client_at = Some(i);
                client = Some(*v).filter(|v| !v.is_empty());
            }
            Col::Field(_) if v.is_empty() => {}
            Col::Field(k) => {
                given.push(k.name());
                first_given.get_or_insert(i);
                if let Err(m) = k.set_cell(&mut fields, v) {
                    problems.push((Some(i), m));
                }
            }
        }
    }
    let (room_at, room) = room.map_or((None, ""), |(i, r)| (Some(i), r));
    if let Err(e) = validate_id(room) {
        problems.push((room_at, format!("room: {e}")));
    }
    let Some(action) = action else {
        return Err(problems);
    };
    match (action.needs_client(), client) {
        (true, None) => problems.push((
            client_at,
            format!("{action} needs a client: the `client` cell is empty"),
        )),
        (true, Some(c)) => {
            if let Err(e) = validate_id(c) {
                problems.push((client_at, format!("client: {e}")));
            }
        }
        (false, Some(c)) => problems.push((
            client_at,
            format!(
                "{action} acts on a room and takes no client (client {c:?} given): leave the \
                 `client` cell empty, or use mute, unmute, ban or unban"
            ),
        )),
        (false, None) => {}
    }
    if action == Action::Update {
        if given.is_empty() {
            problems.push((
                None,
                format!(
                    "update with no field to set: fill at least one of {}",
                    RoomFields::NAMES.join(", ")
                ),
            ));
        }
    } else if !given.is_empty() {
        problems.push((
            first_given,
            format!(
                "{action} takes no update fields, but {} given: use action `update` to \
                 change fields, or clear those cells",
                quote_list(&given)
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let fields = (action == Action::Update).then(|| Box::new(fields));
    let op = Op {
        action,
        room: room.into(),
        client: client.filter(|_| action.needs_client()).map(Into::into),
        fields,
    };
    op.check().map_err(|m| vec![(None, m)])?;
    Ok(op)
}

fn quote_list(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match q.len() {
        1 => format!("{} is", q[0]),
        _ => format!("{} are", q.join(", ")),
    }
}

/// Reads the ids of a `rooms_file`/`clients_file`: a CSV with a header that has a `column`
/// column (other columns are ignored). Errors name `shown` (the path as the manifest wrote
/// it) and the line. Returns `(id, line)` pairs.
pub(crate) fn read_id_list(
    bytes: &[u8],
    shown: &Path,
    column: &str,
    errs: &mut ManifestErrors,
) -> Vec<(Box<str>, u32)> {
    let mut rdr = reader(LineTracker::new(bytes, None));
    let rdr = &mut rdr;
    let mut rec = ByteRecord::new();
    let mut out = Vec::new();
    match rdr.read_byte_record(&mut rec) {
        Ok(true) => {}
        Ok(false) => {
            errs.at(
                shown,
                1,
                None,
                format!("the file is empty: it needs a header row with a `{column}` column"),
            );
            return out;
        }
        Err(e) => {
            errs.at(shown, error_line(rdr, &e), None, read_error(&e));
            return out;
        }
    }
    let header_line = line_of(rdr, &rec);
    let names = match cells(&rec, &[]) {
        Ok(n) => n,
        Err((i, m)) => {
            errs.at(
                shown,
                header_line,
                column_of(rdr, 0, i),
                format!("header: {m}"),
            );
            return out;
        }
    };
    let Some(idx) = names.iter().position(|n| *n == column) else {
        errs.at(
            shown,
            header_line,
            None,
            format!(
                "no `{column}` column in the header ({:?}){}: the first row must name the \
                 columns",
                names.join(","),
                names
                    .iter()
                    .find_map(|n| super::suggest(n, &[column]).map(|_| *n))
                    .map(|n| format!(" (is `{n}` meant to be `{column}`?)"))
                    .unwrap_or_default()
            ),
        );
        return out;
    };
    let ncols = names.len();
    let col_names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let col_refs: Vec<&str> = col_names.iter().map(String::as_str).collect();
    loop {
        let start = rdr.position().byte();
        rdr.get_mut().done_before(start);
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                errs.at(shown, error_line(rdr, &e), None, read_error(&e));
                continue;
            }
        }
        let line = line_of(rdr, &rec);
        if report_unclosed(rdr, start, shown, line, errs) {
            continue;
        }
        if rec.iter().all(|f| f.trim_ascii().is_empty()) {
            continue;
        }
        let col = |i: usize| column_of(rdr, start, i);
        if rec.len() != ncols {
            errs.at(
                shown,
                line,
                (rec.len() > ncols).then(|| col(ncols)).flatten(),
                format!(
                    "this row has {} fields but the header (line {header_line}) has {ncols}",
                    rec.len()
                ),
            );
            continue;
        }
        match cells(&rec, &col_refs) {
            Ok(c) => match validate_id(c[idx]) {
                Ok(()) => out.push((c[idx].into(), line)),
                Err(e) => errs.at(shown, line, col(idx), format!("{column}: {e}")),
            },
            Err((i, m)) => errs.at(shown, line, col(i), m),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::LoadOptions;

    fn parse(text: &[u8], action: Option<Action>) -> Result<Vec<PlannedOp>, ManifestErrors> {
        let mut errs = ManifestErrors::default();
        let mut ops = Vec::new();
        read_manifest(
            Path::new("m.csv"),
            &LoadOptions { action },
            LineTracker::new(text, None),
            &mut errs,
            &mut |op| ops.push(op),
        );
        if errs.is_empty() { Ok(ops) } else { Err(errs) }
    }

    fn err(text: &str, action: Option<Action>) -> String {
        parse(text.as_bytes(), action).unwrap_err().to_string()
    }

    #[test]
    fn spec_example_parses() {
        let ops = parse(
            b"action,room,client,name,description,opening\nfreeze,lobby-1,,,,\nmute,lobby-1,u-1001,,,\nupdate,help-desk,,Help Desk,Ask us anything,1\n",
            None,
        )
        .unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].op, Op::freeze("lobby-1"));
        assert_eq!(ops[0].source.line, 2);
        assert_eq!(ops[1].op, Op::mute("u-1001", "lobby-1"));
        let f = RoomFields {
            name: Some("Help Desk".into()),
            description: Some("Ask us anything".into()),
            opening: Some(1),
            ..Default::default()
        };
        assert_eq!(ops[2].op, Op::update("help-desk", f));
        assert_eq!(ops[2].source.line, 4);
    }

    /// Ban and unban rows name a client and a room, as mutes do; `--action ban` needs a
    /// `client` column; a ban row without a client, or with fields, is an error.
    #[test]
    fn ban_rows() {
        let ops = parse(
            b"action,room,client\nban,lobby-1,spam-7\nunban,lobby-2,spam-7\n",
            None,
        )
        .unwrap();
        let got: Vec<&Op> = ops.iter().map(|p| &p.op).collect();
        assert_eq!(
            got,
            [
                &Op::ban("spam-7", "lobby-1"),
                &Op::unban("spam-7", "lobby-2")
            ]
        );
        let ops = parse(b"client,room\nspam-7,a\nspam-7,b\n", Some(Action::Ban)).unwrap();
        assert_eq!(ops[1].op, Op::ban("spam-7", "b"));
        assert!(
            err("room\nr\n", Some(Action::Unban))
                .contains("--action unban needs a `client` column")
        );
        let e = err("action,room,client\nban,r,\n", None);
        assert!(e.contains("m.csv:2:7: ban needs a client"), "{e}");
        let e = err("action,room,client,name\nunban,r,c,N\n", None);
        assert!(e.contains("unban takes no update fields"), "{e}");
        let e = err("action,room,client\nfreeze,r,c\n", None);
        assert!(e.contains("or use mute, unmute, ban or unban"), "{e}");
    }

    #[test]
    fn bom_crlf_comments_blank_lines() {
        let ops = parse(
            b"\xEF\xBB\xBFroom\r\n# a comment\r\n\r\nlobby-1\r\n\r\nlobby-2\r\n",
            Some(Action::Freeze),
        )
        .unwrap();
        let rooms: Vec<_> = ops.iter().map(|p| (&*p.op.room, p.source.line)).collect();
        assert_eq!(rooms, vec![("lobby-1", 4), ("lobby-2", 6)]);
    }

    #[test]
    fn action_column_and_flag() {
        assert!(err("room\nr1\n", None).contains("m.csv:1: the file has no `action` column"));
        assert!(err("action,room\nfreeze,r\n", Some(Action::Freeze)).contains("drop --action"));
        assert!(
            err("room\nr\n", Some(Action::Mute)).contains("needs a `client` column"),
            "{}",
            err("room\nr\n", Some(Action::Mute))
        );
    }

    #[test]
    fn header_rules() {
        let e = err("action,rooom\nfreeze,r\n", None);
        assert!(e.contains("m.csv:1:8: header: unknown column `rooom` (did you mean `room`?)"));
        let e = err("action,room,room\nfreeze,r,r\n", None);
        assert!(
            e.contains("m.csv:1:13: header: column `room` appears twice"),
            "{e}"
        );
        let e = err("freeze,lobby-1\n", None);
        assert!(e.contains("m.csv:1: the first line is not a header"), "{e}");
        assert!(err("", None).contains("m.csv:1: the file is empty"));
        assert!(err("action,client\nmute,c\n", None).contains("no `room` column"));
        assert!(
            err("room,\nr,\n", Some(Action::Freeze))
                .contains("m.csv:1:6: header: column 2 has no name")
        );
    }

    #[test]
    fn row_rules() {
        let e = err("action,room\nfreze,r\n", None);
        assert!(e.contains("m.csv:2:1: unknown action \"freze\" (did you mean `freeze`?)"));
        let e = err("action,room,client\nmute,r,\n", None);
        assert!(e.contains("m.csv:2:8: mute needs a client"), "{e}");
        let e = err("action,room,client\nfreeze,r,u1\n", None);
        assert!(e.contains("m.csv:2:10: freeze acts on a room and takes no client"));
        let e = err("action,room,name\nfreeze,r,Hello\n", None);
        assert!(e.contains("m.csv:2:10: freeze takes no update fields, but `name` is given"));
        let e = err("action,room,name\nupdate,r,\n", None);
        assert!(e.contains("m.csv:2: update with no field to set"));
        let e = err("action,room,opening\nupdate,r,2\n", None);
        assert!(e.contains("m.csv:2:10: opening must be 0 or 1, not \"2\""));
        let e = err("action,room,botMode\nupdate,r,yes\n", None);
        assert!(e.contains("m.csv:2:10: botMode must be true or false"));
        let e = err("action,room\nfreeze,\"a\tb\"\n", None);
        assert!(
            e.contains("m.csv:2:8: room: id contains a control character"),
            "{e}"
        );
        let long = "x".repeat(257);
        let e = err(&format!("action,room\nfreeze,{long}\n"), None);
        assert!(e.contains("m.csv:2:8: room: id is 257 bytes long"));
        let e = err("action,room\nfreeze,r,extra\n", None);
        assert!(e.contains("m.csv:2:10: this row has 3 fields but the header (line 1) has 2"));
        let e = parse(b"room\nok\nbad\xff\n", Some(Action::Freeze))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.csv:3:1: column `room` is not valid UTF-8"),
            "{e}"
        );
    }

    /// Cell errors name the cell's 1-based character column on its line, as YAML errors
    /// do: past quoted cells with commas and doubled quotes, multi-byte characters, a BOM,
    /// comment and blank lines, CRLF and leading spaces (cells are trimmed).
    #[test]
    fn cell_errors_name_the_column() {
        let col = |text: &str, action| {
            let e = parse(text.as_bytes(), action).unwrap_err();
            e.errors
                .iter()
                .map(|e| (e.line, e.column))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            col("action,name,room\nupdate,\"a, \"\"b\"\"\",\n", None),
            vec![(2, Some(19))]
        );
        assert_eq!(
            col("action,name,room\r\n# c\r\n\r\nupdate,héllo,  \r\n", None),
            vec![(4, Some(16))]
        );
        assert_eq!(
            col("\u{feff}room,colour\nr,x\n", Some(Action::Freeze)),
            vec![(1, Some(6))]
        );
        assert_eq!(
            col("room,botMode\nr,\"on\"\n", Some(Action::Update)),
            vec![(2, Some(3))]
        );
        // After a cell with a newline inside quotes, the column would be on another line.
        assert_eq!(
            col(
                "action,room,name,opening\nupdate,r,\"two\nlines\",9\n",
                None
            ),
            vec![(2, None)]
        );
        // Every problem of a row has its own column.
        let e = parse(b"action,room,client,opening\nfreeze,,u1,7\n", None).unwrap_err();
        let got: Vec<_> = e
            .errors
            .iter()
            .map(|e| (e.column, e.message.as_str()))
            .collect();
        assert_eq!(got[0], (Some(12), "opening must be 0 or 1, not \"7\""));
        assert_eq!(got[1], (Some(8), "room: id is empty"));
        assert!(got[2].1.contains("takes no client") && got[2].0 == Some(9));
        assert!(got[3].1.contains("takes no update fields") && got[3].0 == Some(12));
        // Ids from a rooms_file too.
        let mut errs = ManifestErrors::default();
        read_id_list(
            b"name,room\nA,ok\nB,\"a\tb\"\n",
            Path::new("r.csv"),
            "room",
            &mut errs,
        );
        assert_eq!(
            errs.to_string(),
            "r.csv:3:3: room: id contains a control character ('\\t')"
        );
    }

    /// A stray quote used to swallow the rest of the file into one cell (reported, if at
    /// all, as an id with a control character); on the last line it was silently dropped.
    #[test]
    fn unclosed_quotes_are_errors_at_the_quote() {
        let e = err(
            "action,room\nfreeze,lobby-1\nfreeze,\"lobby-2\nfreeze,lobby-3\n",
            None,
        );
        assert_eq!(
            e,
            "m.csv:3:8: this quote opens a cell that is never closed, so the rest of the file \
             was read as that one cell: close the quote (a quote inside a quoted cell is \
             written \"\")"
        );
        let e = err("room\nok\n\"last", Some(Action::Freeze));
        assert!(e.starts_with("m.csv:3:1: this quote opens a cell"), "{e}");
        // After a closed multi-line cell, the line and column are the quote's own.
        let e = err("action,room,name\nupdate,r,\"a\nb\",\"x\n", None);
        assert!(e.starts_with("m.csv:3:4: this quote opens"), "{e}");
        assert_eq!(unclosed_quote(b"a,\"b\"\"c\",d\n"), None);
        assert_eq!(unclosed_quote(b"# \"\na,\"b"), Some((0, 3)));
        let mut errs = ManifestErrors::default();
        read_id_list(b"room\n\"a\nb\n", Path::new("r.csv"), "room", &mut errs);
        assert!(
            errs.to_string().starts_with("r.csv:2:1: this quote opens"),
            "{errs}"
        );
    }

    #[test]
    fn cell_column_edges() {
        assert_eq!(cell_column(b"a,b,c\n", 0), Some(1));
        assert_eq!(cell_column(b"a,b,c\n", 2), Some(5));
        assert_eq!(cell_column(b"a,b,c\n", 3), None);
        assert_eq!(cell_column(b"\n# x,y\n\r\nab,  cd\n", 1), Some(6));
        assert_eq!(cell_column(b"\"x\"\"\",y", 1), Some(7));
        assert_eq!(cell_column(b"\"unterminated,y", 1), None);
        assert_eq!(cell_column(b"", 0), Some(1));
    }

    #[test]
    fn all_errors_are_reported() {
        let e = parse(b"action,room\nfreze,a\nfreeze,\nfreeze,ok\nmute,b\n", None).unwrap_err();
        let lines: Vec<u32> = e.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 5]);
    }

    #[test]
    fn list_fields_split_and_trim() {
        let ops = parse(
            b"action,room,roomTags,managers,status\nupdate,r,\" a ; ;b;\",m1;m2,0\n",
            None,
        )
        .unwrap();
        let f = ops[0].op.fields.as_ref().unwrap();
        assert_eq!(f.room_tags.as_deref(), Some(&["a".into(), "b".into()][..]));
        assert_eq!(f.managers.as_deref(), Some(&["m1".into(), "m2".into()][..]));
        assert_eq!(f.status, Some(0));
    }

    #[test]
    fn id_lists() {
        let mut errs = ManifestErrors::default();
        let ids = read_id_list(
            b"name,room\nA,r1\n\n# c\nB,r2\n",
            Path::new("rooms.csv"),
            "room",
            &mut errs,
        );
        assert!(errs.is_empty());
        assert_eq!(ids, vec![("r1".into(), 2), ("r2".into(), 5)]);
        let ids = read_id_list(b"rooms\nr1\n", Path::new("rooms.csv"), "room", &mut errs);
        assert!(ids.is_empty());
        assert!(errs.to_string().contains("rooms.csv:1: no `room` column"));
    }
}
