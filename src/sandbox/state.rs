//! The emulated platform's data: rooms and clients, the JSON objects the vendor pages show
//! for them, and the state changes of the endpoints (partial room update with a type check
//! on every field, mute as a set) and the world's ban book ([`super::bans`]). No HTTP here:
//! [`super::handlers`] maps outcomes to answers.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::bans::BanBook;
use super::config::{DEFAULT_OWNER, MessageSeed, Profile, RoomSeed, SandboxConfig};
use crate::op::{Field, FieldKind, FieldValue, RoomFields};

/// App id shown in client objects and ban records.
pub(crate) const APP_ID: &str = "SandboxApp";

/// A room: its status, and the rest once it differs from a plain room's (owned by
/// [`DEFAULT_OWNER`], no managers and no other members, every other field its default, the
/// made-up welcome message), which is all a manifest's rooms start as. A plain room costs its
/// id, its status and a null pointer; its object is built from its id when asked for.
#[derive(Clone, Debug)]
pub struct Room {
    pub status: u8,
    detail: Option<Box<Detail>>,
}

/// Everything of a room besides its status.
#[derive(Clone, Debug)]
struct Detail {
    name: String,
    cover: String,
    description: String,
    room_tags: Vec<String>,
    webhook: String,
    bot_mode: bool,
    ext_params: String,
    opening: u8,
    owner: String,
    managers: Vec<String>,
    /// Member ids in join order (owner and managers included).
    members: Vec<String>,
    last_message: MessageSeed,
}

#[derive(Clone, Debug)]
pub struct Client {
    /// Muted room ids in the order they were muted; never twice the same id.
    pub mute: Vec<String>,
    pub updated_at: jiff::Timestamp,
    /// How the client is shown; `None`: as [`Profile::default_for`] its id.
    pub profile: Option<Box<Profile>>,
}

/// All rooms and clients, and who is banned where.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Rooms by id (a boxed `str`: 8 bytes less than a `String` a room).
    pub rooms: HashMap<Box<str>, Room>,
    pub clients: HashMap<String, Client>,
    pub bans: BanBook,
}

/// A validated partial update of a room: the fields of [`RoomFields`] the body gives (read
/// through the deref).
#[derive(Debug, Default, PartialEq)]
pub struct RoomPatch(RoomFields);

impl std::ops::Deref for RoomPatch {
    type Target = RoomFields;
    fn deref(&self) -> &RoomFields {
        &self.0
    }
}

impl RoomPatch {
    /// True when the body sets nothing but `status` (a freeze or unfreeze, whose page shows its
    /// own messages).
    pub fn is_status_only(&self) -> bool {
        self.status.is_some() && self.sets_only_status()
    }

    /// True when the body sets no field besides `status` (given or not).
    fn sets_only_status(&self) -> bool {
        self.0
            == RoomFields {
                status: self.status,
                ..Default::default()
            }
    }

    /// True when the update changes who runs the room (platform admins only).
    pub fn touches_roles(&self) -> bool {
        self.owner.is_some() || self.managers.is_some()
    }
}

/// Parses a PUT body into a patch, checking the type of every documented field. Unknown
/// fields are ignored, as the service's schema-based storage plausibly strips them (the page
/// is silent); `null` is a wrong type. Errors are messages for a 400.
pub fn parse_patch(body: &[u8]) -> Result<RoomPatch, String> {
    // An empty body is an empty update, as an Express JSON parser reads it.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RoomPatch::default());
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("Request body is not valid JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("Request body must be a JSON object".into());
    };
    let mut p = RoomFields::default();
    for (k, v) in &map {
        let Some(field) = Field::parse(k) else {
            continue;
        };
        field
            .set(&mut p, json_value(field, v)?)
            .map_err(|v| format!("{k} cannot hold {v:?}"))?;
    }
    Ok(RoomPatch(p))
}

/// The value of `field` in a body, checked against the field's type.
fn json_value(field: Field, v: &Value) -> Result<FieldValue, String> {
    let k = field.name();
    Ok(match field.kind() {
        FieldKind::Text | FieldKind::Id => FieldValue::Text(string(k, v)?),
        FieldKind::TextList | FieldKind::IdList => FieldValue::List(strings(k, v)?),
        FieldKind::Bool => FieldValue::Bool(
            v.as_bool()
                .ok_or_else(|| format!("{k} must be a boolean"))?,
        ),
        FieldKind::ZeroOne => FieldValue::Flag(zero_one(k, v)?),
    })
}

fn string(k: &str, v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{k} must be a string"))
}

fn strings(k: &str, v: &Value) -> Result<Vec<String>, String> {
    let arr = v
        .as_array()
        .ok_or_else(|| format!("{k} must be an array of strings"))?;
    arr.iter()
        .map(|e| {
            e.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{k} must be an array of strings"))
        })
        .collect()
}

/// 0 or 1 as a JSON number: `1` and `1.0` are the same number in JSON (RFC 8259 §6), so
/// both are accepted, as a JavaScript service reads them.
fn zero_one(k: &str, v: &Value) -> Result<u8, String> {
    match v.as_f64() {
        Some(0.0) => Ok(0),
        Some(1.0) => Ok(1),
        _ if v.is_number() => Err(format!("{k} must be 0 or 1")),
        _ => Err(format!("{k} must be a number (0 or 1)")),
    }
}

/// The `time_ms` of a made-up welcome message.
const WELCOME_MS: u64 = 1_485_251_491_375;

/// The made-up id of a room's welcome message.
fn welcome_id(room: &str) -> String {
    format!("{:024x}", fnv(room.as_bytes()))
}

/// The made-up last message of a room seeded without one: a welcome from its owner.
fn welcome(id: &str, name: &str, owner: &str) -> MessageSeed {
    MessageSeed {
        id: welcome_id(id),
        message: format!("Welcome to {name}"),
        message_type: "text".to_owned(),
        sender: owner.to_owned(),
        time_ms: WELCOME_MS,
    }
}

impl Detail {
    /// A room as its seed describes it.
    fn new(id: &str, seed: &RoomSeed) -> Detail {
        let name = seed.name.clone().unwrap_or_else(|| id.to_owned());
        let last_message = seed
            .last_message
            .clone()
            .unwrap_or_else(|| welcome(id, &name, &seed.owner));
        let mut d = Detail {
            name,
            cover: seed.cover.clone(),
            description: seed.description.clone(),
            room_tags: Vec::new(),
            webhook: String::new(),
            bot_mode: false,
            ext_params: String::new(),
            opening: 1,
            owner: seed.owner.clone(),
            managers: seed.managers.clone(),
            members: Vec::new(),
            last_message,
        };
        d.add_member(&seed.owner);
        for m in seed.managers.iter().chain(&seed.members) {
            d.add_member(m);
        }
        d
    }

    /// What a plain room ([`RoomSeed::is_plain`]) reads as.
    fn plain(id: &str) -> Detail {
        Detail::new(id, &RoomSeed::plain(DEFAULT_OWNER))
    }

    fn add_member(&mut self, id: &str) {
        if !self.members.iter().any(|m| m == id) {
            self.members.push(id.to_owned());
        }
    }

    /// Applies the fields of a patch besides `status`; new owner and managers become members.
    fn apply(&mut self, p: RoomFields) {
        // Every field named (no `..`): a new update field must be applied here too.
        let RoomFields {
            name,
            cover,
            description,
            room_tags,
            webhook,
            bot_mode,
            ext_params,
            opening,
            owner,
            managers,
            status: _,
        } = p;
        fn set<T>(slot: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        set(&mut self.name, name);
        set(&mut self.cover, cover);
        set(&mut self.description, description);
        set(&mut self.room_tags, room_tags);
        set(&mut self.webhook, webhook);
        set(&mut self.bot_mode, bot_mode);
        set(&mut self.ext_params, ext_params);
        set(&mut self.opening, opening);
        if let Some(o) = owner {
            self.add_member(&o);
            self.owner = o;
        }
        if let Some(ms) = managers {
            for m in &ms {
                self.add_member(m);
            }
            self.managers = ms;
        }
    }
}

impl Room {
    /// A room as its seed describes it (`None`: a plain room).
    fn new(id: &str, seed: Option<&RoomSeed>) -> Room {
        match seed {
            None => Room {
                status: 1,
                detail: None,
            },
            Some(seed) => Room {
                status: seed.status,
                detail: Some(Box::new(Detail::new(id, seed))),
            },
        }
    }

    /// The client id of the room's owner.
    pub fn owner(&self) -> &str {
        self.detail.as_ref().map_or(DEFAULT_OWNER, |d| &d.owner)
    }

    /// May this client change the room (owner, manager)? Admins are checked by the caller.
    pub fn is_run_by(&self, client: &str) -> bool {
        match &self.detail {
            None => client == DEFAULT_OWNER,
            Some(d) => d.owner == client || d.managers.iter().any(|m| m == client),
        }
    }

    /// Applies a validated patch to room `id`; new owner and managers become members. A
    /// patch of nothing but `status` (a freeze or an unfreeze) leaves a plain room plain.
    pub fn apply(&mut self, id: &str, p: RoomPatch) {
        if let Some(s) = p.status {
            self.status = s;
        }
        if p.sets_only_status() {
            return;
        }
        self.detail
            .get_or_insert_with(|| Box::new(Detail::plain(id)))
            .apply(p.0);
    }

    /// The room object as the vendor pages show it: `_id`, `name`, `cover`, `description`,
    /// `status`, `lastMessage`, `members`. With `extra`, also the fields an update can set
    /// (`roomTags`, `webhook`, `botMode`, `extParams`, `opening`, `owner`, `managers`), which
    /// the pages do not list (the `room_extra_fields` variant).
    pub fn to_json(&self, id: &str, clients: &HashMap<String, Client>, extra: bool) -> Value {
        let d = self.shown(id);
        let members: Vec<Value> = d
            .members
            .iter()
            .map(|m| member_json(m, profile(clients, m), true))
            .collect();
        let mut o = Map::new();
        o.insert("_id".into(), json!(id));
        o.insert("name".into(), json!(d.name));
        o.insert("cover".into(), json!(d.cover));
        o.insert("description".into(), json!(d.description));
        o.insert("status".into(), json!(self.status));
        if extra {
            o.insert("roomTags".into(), json!(d.room_tags));
            o.insert("webhook".into(), json!(d.webhook));
            o.insert("botMode".into(), json!(d.bot_mode));
            o.insert("extParams".into(), json!(d.ext_params));
            o.insert("opening".into(), json!(d.opening));
            o.insert("owner".into(), json!(d.owner));
            o.insert("managers".into(), json!(d.managers));
        }
        o.insert(
            "lastMessage".into(),
            json!({
                "_id": Value::String(d.message_id.into_owned()),
                "message": Value::String(d.message.into_owned()),
                "messageType": d.message_type,
                // As both pages show a message's sender: lastLoginTimeMS 0.
                "sender": member_json(d.sender, profile(clients, d.sender), false),
                "messageTimeMS": d.time_ms,
            }),
        );
        o.insert("members".into(), Value::Array(members));
        Value::Object(o)
    }

    /// The room's fields as its object shows them: borrowed, a plain room's made up from its
    /// id on the spot (what [`Detail::plain`] holds; a test checks the two agree).
    fn shown<'a>(&'a self, id: &'a str) -> Shown<'a> {
        let Some(d) = &self.detail else {
            static OWNER_ONLY: std::sync::LazyLock<[String; 1]> =
                std::sync::LazyLock::new(|| [DEFAULT_OWNER.to_owned()]);
            return Shown {
                name: id,
                cover: "",
                description: "",
                room_tags: &[],
                webhook: "",
                bot_mode: false,
                ext_params: "",
                opening: 1,
                owner: DEFAULT_OWNER,
                managers: &[],
                members: &*OWNER_ONLY,
                message_id: Cow::Owned(welcome_id(id)),
                message: Cow::Owned(format!("Welcome to {id}")),
                message_type: "text",
                sender: DEFAULT_OWNER,
                time_ms: WELCOME_MS,
            };
        };
        let lm = &d.last_message;
        Shown {
            name: &d.name,
            cover: &d.cover,
            description: &d.description,
            room_tags: &d.room_tags,
            webhook: &d.webhook,
            bot_mode: d.bot_mode,
            ext_params: &d.ext_params,
            opening: d.opening,
            owner: &d.owner,
            managers: &d.managers,
            members: &d.members,
            message_id: Cow::Borrowed(&lm.id),
            message: Cow::Borrowed(&lm.message),
            message_type: &lm.message_type,
            sender: &lm.sender,
            time_ms: lm.time_ms,
        }
    }
}

/// A room's fields as its object shows them, borrowed.
struct Shown<'a> {
    name: &'a str,
    cover: &'a str,
    description: &'a str,
    room_tags: &'a [String],
    webhook: &'a str,
    bot_mode: bool,
    ext_params: &'a str,
    opening: u8,
    owner: &'a str,
    managers: &'a [String],
    members: &'a [String],
    message_id: Cow<'a, str>,
    message: Cow<'a, str>,
    message_type: &'a str,
    sender: &'a str,
    time_ms: u64,
}

/// The profile a client was given; `None` for one shown by default (or no such client).
pub(crate) fn profile<'a>(clients: &'a HashMap<String, Client>, id: &str) -> Option<&'a Profile> {
    clients.get(id).and_then(|c| c.profile.as_deref())
}

/// A member as shown in a room's `members` (with its last login) and a message's `sender`
/// (`lastLoginTimeMS` 0, as the pages show it).
fn member_json(id: &str, p: Option<&Profile>, with_login: bool) -> Value {
    let p = Profile::shown(id, p);
    json!({
        "_id": id,
        "nickname": p.nickname,
        "avatarUrl": p.avatar_url,
        "lastLoginTimeMS": if with_login { p.last_login_ms } else { 0 },
    })
}

/// A stable 64-bit hash for made-up object ids (FNV-1a; not security relevant).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Client {
    fn new(mute: Vec<String>, profile: Option<&Profile>) -> Client {
        Client {
            mute,
            updated_at: jiff::Timestamp::now(),
            profile: profile.cloned().map(Box::new),
        }
    }

    /// The client object as the mute page shows it.
    pub fn to_json(&self, id: &str) -> Value {
        let mut m = Map::new();
        m.insert("mute".into(), json!(self.mute));
        m.insert("isRobot".into(), json!(false));
        m.insert("_id".into(), json!(id));
        m.insert("__v".into(), json!(0));
        m.insert("appID".into(), json!(APP_ID));
        m.insert("description".into(), json!(""));
        let profile = Profile::shown(id, self.profile.as_deref());
        m.insert("avatarUrl".into(), json!(profile.avatar_url));
        m.insert("nickname".into(), json!(profile.nickname));
        m.insert("email".into(), json!(""));
        m.insert(
            "address".into(),
            json!({"address": "127.0.0.1", "family": "IPv4", "port": 0}),
        );
        m.insert("userAgent".into(), json!("imkit-batch-sandbox"));
        m.insert("updatedAt".into(), json!(format!("{:.3}", self.updated_at)));
        m.insert("id".into(), json!(id));
        m.insert("lastLoginTimeMS".into(), json!(profile.last_login_ms));
        Value::Object(m)
    }

    /// Adds `room` to the mute set; false when it was already there.
    pub fn mute(&mut self, room: &str) -> bool {
        self.updated_at = jiff::Timestamp::now();
        if self.mute.iter().any(|r| r == room) {
            return false;
        }
        self.mute.push(room.to_owned());
        true
    }

    /// Removes `room` from the mute set; false when it was not there.
    pub fn unmute(&mut self, room: &str) -> bool {
        let before = self.mute.len();
        self.mute.retain(|r| r != room);
        let removed = self.mute.len() != before;
        if removed {
            self.updated_at = jiff::Timestamp::now();
        }
        removed
    }
}

impl World {
    /// The state a config describes.
    pub fn from_config(c: &SandboxConfig) -> World {
        let mut clients: HashMap<String, Client> = c
            .clients
            .iter()
            .map(|(id, mute)| {
                let mut set = Vec::new();
                for r in mute {
                    if !set.contains(r) {
                        set.push(r.clone());
                    }
                }
                (id.clone(), Client::new(set, c.profiles.get(id)))
            })
            .collect();
        let mut ensure = |id: &str| {
            if !clients.contains_key(id) {
                let client = Client::new(Vec::new(), c.profiles.get(id));
                clients.insert(id.to_owned(), client);
            }
        };
        let mut plain = false;
        for (_, seed) in c.rooms.iter() {
            let Some(s) = seed else {
                plain = true;
                continue;
            };
            ensure(&s.owner);
            for m in s.managers.iter().chain(&s.members) {
                ensure(m);
            }
        }
        if plain {
            ensure(DEFAULT_OWNER);
        }
        for client in c.users.values().chain(c.bans.values().flatten()) {
            ensure(client);
        }
        let rooms = World::rooms_of(c);
        let bans = seeded_bans(c, &rooms);
        World {
            rooms,
            clients,
            bans,
        }
    }

    /// The rooms a config describes, as they start.
    pub fn rooms_of(c: &SandboxConfig) -> HashMap<Box<str>, Room> {
        let mut rooms = HashMap::with_capacity(c.rooms.len());
        for (id, seed) in c.rooms.iter() {
            rooms.insert(Box::from(id), Room::new(id, seed));
        }
        rooms
    }
}

/// The bans a config seeds, each made by its room's owner; a ban in a room that does not
/// exist is left out ([`SandboxConfig::check`] refuses such a config).
fn seeded_bans(c: &SandboxConfig, rooms: &HashMap<Box<str>, Room>) -> BanBook {
    let mut book = BanBook::default();
    for (room_id, blockees) in &c.bans {
        let Some(room) = rooms.get(room_id.as_str()) else {
            continue;
        };
        for blockee in blockees {
            book.ban(room_id, blockee, room.owner());
        }
    }
    book
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_type_checks() {
        assert_eq!(parse_patch(b"").unwrap(), RoomPatch::default());
        let p = parse_patch(br#"{"status":0}"#).unwrap();
        assert!(p.is_status_only());
        assert!(
            !parse_patch(br#"{"status":0,"name":"x"}"#)
                .unwrap()
                .is_status_only()
        );
        assert!(parse_patch(br#"{"status":"0"}"#).is_err());
        assert!(parse_patch(br#"{"status":2}"#).is_err());
        // 1.0 and 1 are the same JSON number.
        assert_eq!(parse_patch(br#"{"status":1.0}"#).unwrap().status, Some(1));
        assert_eq!(parse_patch(br#"{"status":0.0}"#).unwrap().status, Some(0));
        assert_eq!(parse_patch(br#"{"opening":1e0}"#).unwrap().opening, Some(1));
        assert!(parse_patch(br#"{"status":0.5}"#).is_err());
        assert!(parse_patch(br#"{"status":-1}"#).is_err());
        assert!(parse_patch(br#"{"opening":1.5}"#).is_err());
        assert!(parse_patch(br#"{"name":null}"#).is_err());
        assert!(parse_patch(br#"{"botMode":"true"}"#).is_err());
        assert!(parse_patch(br#"{"roomTags":["a",1]}"#).is_err());
        assert!(parse_patch(br#"{"managers":"a"}"#).is_err());
        assert!(parse_patch(br#"[1]"#).is_err());
        assert!(parse_patch(br#"{"name":"#).is_err());
        let p = parse_patch(br#"{"owner":"o","foo":1}"#).unwrap();
        assert!(p.touches_roles());
    }

    #[test]
    fn mute_is_a_set() {
        let mut c = Client::new(Vec::new(), None);
        assert!(c.mute("r"));
        assert!(!c.mute("r"));
        assert_eq!(c.mute, vec!["r"]);
        assert!(c.unmute("r"));
        assert!(!c.unmute("r"));
    }

    /// A patch setting every update field shows in the room object (with the extra fields)
    /// as it does in the request body.
    #[test]
    fn every_field_of_a_patch_is_applied_and_shown() {
        let body = RoomFields {
            name: Some("n".into()),
            cover: Some("c".into()),
            description: Some("d".into()),
            room_tags: Some(vec!["t".into()]),
            webhook: Some("w".into()),
            bot_mode: Some(true),
            ext_params: Some("e".into()),
            opening: Some(0),
            owner: Some("o".into()),
            managers: Some(vec!["m".into()]),
            status: Some(0),
        }
        .to_body();
        let patch = parse_patch(body.to_string().as_bytes()).unwrap();
        let seed = super::super::config::RoomSeed {
            owner: "x".into(),
            managers: Vec::new(),
            members: Vec::new(),
            status: 1,
            name: None,
            cover: String::new(),
            description: String::new(),
            last_message: None,
        };
        let mut room = Room::new("r", Some(&seed));
        room.apply("r", patch);
        let shown = room.to_json("r", &HashMap::new(), true);
        for k in Field::ALL {
            assert_eq!(shown[k.name()], body[k.name()], "{k}");
        }
        assert_eq!(shown["members"].as_array().map(Vec::len), Some(3));
    }

    /// A plain room stays plain through freezes and shows what a room seeded in full with
    /// the same values shows, before and after an update.
    #[test]
    fn a_plain_room_shows_as_its_seed_in_full() {
        let clients = HashMap::new();
        let full_seed = RoomSeed::plain(DEFAULT_OWNER);
        let mut plain = Room::new("r-1", None);
        let mut full = Room::new("r-1", Some(&full_seed));
        assert!(plain.detail.is_none() && full.detail.is_some());
        for extra in [false, true] {
            assert_eq!(
                plain.to_json("r-1", &clients, extra),
                full.to_json("r-1", &clients, extra)
            );
        }
        assert_eq!(plain.owner(), DEFAULT_OWNER);
        assert!(plain.is_run_by(DEFAULT_OWNER) && !plain.is_run_by("x"));
        for body in [
            r#"{"status":0}"#,
            r#"{"status":1}"#,
            "{}",
            r#"{"status":0}"#,
        ] {
            plain.apply("r-1", parse_patch(body.as_bytes()).unwrap());
            full.apply("r-1", parse_patch(body.as_bytes()).unwrap());
            assert!(plain.detail.is_none(), "{body}");
            assert_eq!(plain.status, full.status);
        }
        let update = br#"{"name":"N","managers":["m"],"status":1}"#;
        plain.apply("r-1", parse_patch(update).unwrap());
        full.apply("r-1", parse_patch(update).unwrap());
        assert!(plain.detail.is_some());
        let shown = plain.to_json("r-1", &clients, true);
        assert_eq!(shown, full.to_json("r-1", &clients, true));
        assert_eq!(shown["lastMessage"]["message"], "Welcome to r-1");
        assert!(plain.is_run_by("m"));
    }

    /// What a room and a client cost before their strings: a plain room its status and a
    /// pointer; a client with the default profile no profile at all.
    #[test]
    fn records_stay_small() {
        assert_eq!(std::mem::size_of::<Room>(), 16);
        assert_eq!(std::mem::size_of::<(Box<str>, Room)>(), 32);
        assert_eq!(std::mem::size_of::<Option<Box<RoomSeed>>>(), 8);
        assert!(std::mem::size_of::<Client>() <= 48);
        assert!(Client::new(Vec::new(), None).profile.is_none());
    }
}
