//! `validate` without holding the update fields: a CSV manifest is read row by row as
//! [`load`](super::load) reads it (the same checks, the same errors), but each op is kept as a
//! [`LeanOp`]: its action, ids and line, which fields it gives, the true/false and 0/1 fields
//! (`botMode`, `opening`, `status`) as one bit each, and a 64-bit hash of each other given
//! field's value instead of the value (in one arena for all ops, so no allocation per op
//! besides its ids).
//! [`super::expand::finish`] then finds the same duplicates and conflicts as for full ops,
//! so `validate` prints what `load` would, in a fraction of the memory for update-heavy
//! files (the text of a million updates is most of a 100 MiB file).
//!
//! The one difference: two different values of one field whose hashes collide (odds about
//! 2^-64 per pair of updates of one room) would count as equal, so a repeated update could be
//! reported as a duplicate that `run` sends. `run` and `plan` always load the full ops.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::expand::ExpandOp;
use super::{
    Format, LoadOptions, Location, Manifest, ManifestErrors, PlannedOp, Settings, Warnings, Window,
    csv, hash_part, load,
};
use crate::op::{Action, Field, FieldKind, FieldRef};

// Field sets are `u16` bit sets, bit `k.index()` for field `k`.
const _: () = assert!(
    Field::COUNT <= 16,
    "a LeanOp keeps its fields in u16 bit sets"
);

/// True for the fields kept as hashes: texts, ids and lists. The others (true/false, 0/1)
/// are kept as one bit each.
const fn is_hashed(k: Field) -> bool {
    !matches!(k.kind(), FieldKind::Bool | FieldKind::ZeroOne)
}

/// The fields kept as hashes, as a bit set.
const HASHED: u16 = {
    let mut mask = 0;
    let mut i = 0;
    while i < Field::COUNT {
        if is_hashed(Field::ALL[i]) {
            mask |= 1 << i;
        }
        i += 1;
    }
    mask
};

const fn bit(k: Field) -> u16 {
    1 << k.index()
}

/// An op as `validate` keeps it: 56 bytes plus its ids, and 8 bytes in the [`Hashes`] arena
/// per given text or list field.
struct LeanOp {
    room: Box<str>,
    client: Option<Box<str>>,
    source: Location,
    /// Where this op's hashes start in the arena: one per given hashed field, in
    /// [`Field::ALL`] order.
    hashes_at: u32,
    /// The given fields. Only for updates.
    mask: u16,
    /// The values of the given fields that are not hashed: `true` and `1` are a set bit.
    values: u16,
    action: Action,
    /// Whether the op is an update carrying its fields (always, for a valid manifest).
    has_fields: bool,
}

fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    // Fixed keys: the same value always hashes the same within and across runs.
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The field hashes of every [`LeanOp`], one allocation for all of them.
type Hashes = Vec<u64>;

impl LeanOp {
    /// The compact form of `p`, its field hashes appended to `arena`.
    fn new(p: PlannedOp, arena: &mut Hashes) -> LeanOp {
        let op = p.op;
        let mut lean = LeanOp {
            room: op.room,
            client: op.client,
            hashes_at: u32::try_from(arena.len()).unwrap_or(u32::MAX),
            source: p.source,
            mask: 0,
            values: 0,
            action: op.action,
            has_fields: op.fields.is_some(),
        };
        if let Some(f) = op.fields.as_deref() {
            for k in Field::ALL {
                let Some(v) = k.get(f) else { continue };
                lean.mask |= bit(k);
                match v {
                    FieldRef::Text(s) => arena.push(hash_of(s)),
                    FieldRef::List(items) => arena.push(hash_of(items)),
                    // A valid op's 0/1 fields are 0 or 1.
                    FieldRef::Bool(true) | FieldRef::Flag(1..) => lean.values |= bit(k),
                    FieldRef::Bool(false) | FieldRef::Flag(0) => {}
                }
            }
        }
        lean
    }

    /// This op's hashes in `arena`.
    fn hashes<'a>(&self, arena: &'a [u64]) -> &'a [u64] {
        let n = (self.mask & HASHED).count_ones() as usize;
        let at = self.hashes_at as usize;
        arena.get(at..at + n).unwrap_or_default()
    }

    fn given(&self, k: Field) -> bool {
        self.mask & bit(k) != 0
    }

    /// The hash of hashed field `k`, which must be given.
    fn hash(&self, k: Field, arena: &[u64]) -> Option<u64> {
        let before = (self.mask & HASHED & (bit(k) - 1)).count_ones() as usize;
        self.hashes(arena).get(before).copied()
    }
}

impl ExpandOp for LeanOp {
    type Ctx = [u64];
    fn action(&self) -> Action {
        self.action
    }
    fn room(&self) -> &str {
        &self.room
    }
    fn client(&self) -> Option<&str> {
        self.client.as_deref()
    }
    fn source(&self) -> Location {
        self.source
    }
    fn has_fields(&self) -> bool {
        self.has_fields
    }
    fn update_status(&self) -> Option<u8> {
        let status = Field::Status;
        self.given(status)
            .then_some(u8::from(self.values & bit(status) != 0))
    }
    fn field_given(&self, k: Field) -> bool {
        self.given(k)
    }
    fn field_eq(&self, other: &Self, k: Field, arena: &[u64]) -> bool {
        if self.given(k) != other.given(k) {
            return false;
        }
        if !self.given(k) {
            return true;
        }
        if is_hashed(k) {
            self.hash(k, arena) == other.hash(k, arena)
        } else {
            self.values & bit(k) == other.values & bit(k)
        }
    }
    fn op_cmp(&self, other: &Self, arena: &[u64]) -> Ordering {
        (
            self.action,
            &self.room,
            &self.client,
            self.has_fields,
            self.mask,
        )
            .cmp(&(
                other.action,
                &other.room,
                &other.client,
                other.has_fields,
                other.mask,
            ))
            .then_with(|| self.values.cmp(&other.values))
            .then_with(|| self.hashes(arena).cmp(other.hashes(arena)))
    }
}

/// What `validate` prints of a valid manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub path: PathBuf,
    pub format: Format,
    pub name: Option<String>,
    pub checksum: String,
    pub window: Option<Window>,
    pub settings: Settings,
    pub sources: Vec<PathBuf>,
    /// Ops after duplicates are removed.
    pub ops: usize,
    /// Ops per action, in [`Action::ALL`] order.
    pub counts: [(Action, usize); Action::COUNT],
    pub rooms: usize,
    pub clients: usize,
    /// As [`Manifest::warnings`].
    pub warnings: Vec<String>,
}

impl Summary {
    /// The summary of a loaded manifest.
    pub fn of(m: &Manifest) -> Summary {
        Summary {
            path: m.path.clone(),
            format: m.format,
            name: m.name.clone(),
            checksum: m.checksum.clone(),
            window: m.window.clone(),
            settings: m.settings.clone(),
            sources: m.sources.clone(),
            ops: m.ops.len(),
            counts: m.counts(),
            rooms: m.distinct_rooms(),
            clients: m.distinct_clients(),
            warnings: m.warnings.clone(),
        }
    }

    /// How many warnings there are in all (see [`Manifest::warning_count`]).
    pub fn warning_count(&self) -> usize {
        super::count_warnings(&self.warnings)
    }
}

/// Loads a manifest for `validate`: the same checks, errors, warnings and counts as
/// [`load`], holding a CSV's ops as [`LeanOp`]s. A YAML manifest (at most 64 MiB) is loaded
/// in full.
pub fn summarize(path: &Path, opts: &LoadOptions) -> Result<Summary, ManifestErrors> {
    if Format::of(path) == Format::Yaml {
        return load(path, opts).map(|m| Summary::of(&m));
    }
    let mut hasher = Sha256::new();
    let mut ops: Vec<LeanOp> = Vec::new();
    let mut arena = Hashes::new();
    csv::load_csv_with(path, opts, &mut hasher, &mut |p| {
        ops.push(LeanOp::new(p, &mut arena))
    })?;
    if let Some(a) = opts.action {
        hash_part(&mut hasher, b"--action", a.as_str().as_bytes());
    }
    let checksum = hex::encode(hasher.finalize());
    let sources = vec![path.to_path_buf()];
    let mut warnings = Warnings::default();
    let ops = super::expand::finish_with(ops, &arena, &sources, &mut warnings);
    drop(arena);
    if ops.is_empty() {
        warnings.push(format!(
            "{}: the manifest has no ops: nothing to do",
            path.display()
        ));
    }
    Ok(Summary {
        path: path.to_path_buf(),
        format: Format::Csv,
        name: None,
        checksum,
        window: None,
        settings: Settings::default(),
        sources,
        counts: super::count_actions(ops.iter().map(|o| o.action)),
        rooms: super::count_distinct(&ops, |o| Some(&o.room)),
        clients: super::count_distinct(&ops, |o| o.client.as_deref()),
        ops: ops.len(),
        warnings: warnings.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{Op, RoomFields};

    fn lean(op: Op, arena: &mut Hashes) -> LeanOp {
        LeanOp::new(
            PlannedOp {
                op,
                source: Location { file: 0, line: 2 },
            },
            arena,
        )
    }

    #[test]
    fn lean_ops_compare_as_full_ops() {
        let f = |name: &str, tags: &[&str], opening: Option<u8>| RoomFields {
            name: Some(name.into()),
            room_tags: Some(tags.iter().map(|t| t.to_string()).collect()),
            opening,
            ..RoomFields::default()
        };
        let ops = [
            Op::freeze("a"),
            Op::freeze("b"),
            Op::unfreeze("a"),
            Op::mute("u", "a"),
            Op::mute("v", "a"),
            Op::update("a", f("x", &["t"], None)),
            Op::update("a", f("y", &["t"], None)),
            Op::update("a", f("x", &["t", "u"], None)),
            Op::update("a", f("x", &["t"], Some(0))),
            Op::update("a", f("x", &["t"], Some(1))),
        ];
        let mut arena = Hashes::new();
        let leans: Vec<LeanOp> = ops.iter().map(|o| lean(o.clone(), &mut arena)).collect();
        for (i, a) in leans.iter().enumerate() {
            for (j, b) in leans.iter().enumerate() {
                let same = a.op_cmp(b, &arena) == Ordering::Equal;
                assert_eq!(same, i == j, "{:?} vs {:?}", ops[i], ops[j]);
            }
        }
        let (x, y) = (&leans[5], &leans[7]);
        assert!(x.field_eq(y, Field::Name, &arena), "same name");
        assert!(!x.field_eq(y, Field::RoomTags, &arena), "other tags");
        assert_eq!(
            x.hash(Field::RoomTags, &arena),
            Some(hash_of(&["t".to_string()][..]))
        );
        // Hashes skip the fields kept as values: owner's hash is found after botMode and
        // opening.
        let g = lean(
            Op::update(
                "a",
                RoomFields {
                    bot_mode: Some(true),
                    opening: Some(1),
                    owner: Some("o".into()),
                    ext_params: Some("e".into()),
                    ..RoomFields::default()
                },
            ),
            &mut arena,
        );
        assert_eq!(g.hash(Field::ExtParams, &arena), Some(hash_of("e")));
        assert_eq!(g.hash(Field::Owner, &arena), Some(hash_of("o")));
        let (o0, o1) = (&leans[8], &leans[9]);
        assert!(!o0.field_eq(o1, Field::Opening, &arena));
        assert!(o0.field_eq(o1, Field::Name, &arena));
    }

    #[test]
    fn a_lean_op_stays_small() {
        assert_eq!(std::mem::size_of::<LeanOp>(), 56);
    }
}
