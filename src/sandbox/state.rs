//! The emulated platform's data: rooms and clients, the JSON objects the vendor pages show
//! for them, and the state changes of the endpoints (partial room update with a type check
//! on every field, mute as a set) and the world's ban book ([`super::bans`]). No HTTP here:
//! [`super::handlers`] maps outcomes to answers.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::bans::BanBook;
use super::config::{MessageSeed, Profile, SandboxConfig};
use crate::op::{Field, FieldKind, FieldValue, RoomFields};

/// App id shown in client objects and ban records.
pub(crate) const APP_ID: &str = "SandboxApp";

#[derive(Clone, Debug)]
pub struct Room {
    pub name: String,
    pub cover: String,
    pub description: String,
    pub status: u8,
    pub room_tags: Vec<String>,
    pub webhook: String,
    pub bot_mode: bool,
    pub ext_params: String,
    pub opening: u8,
    pub owner: String,
    pub managers: Vec<String>,
    /// Member ids in join order (owner and managers included).
    pub members: Vec<String>,
    pub last_message: MessageSeed,
}

#[derive(Clone, Debug)]
pub struct Client {
    /// Muted room ids in the order they were muted; never twice the same id.
    pub mute: Vec<String>,
    pub updated_at: jiff::Timestamp,
    pub profile: Profile,
}

/// All rooms and clients, and who is banned where.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub rooms: HashMap<String, Room>,
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
        self.status.is_some()
            && self.0
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

impl Room {
    fn new(id: &str, seed: &super::config::RoomSeed) -> Room {
        let name = seed.name.clone().unwrap_or_else(|| id.to_owned());
        let last_message = seed.last_message.clone().unwrap_or_else(|| MessageSeed {
            id: format!("{:024x}", fnv(id.as_bytes())),
            message: format!("Welcome to {name}"),
            message_type: "text".to_owned(),
            sender: seed.owner.clone(),
            time_ms: 1_485_251_491_375,
        });
        let mut r = Room {
            name,
            cover: seed.cover.clone(),
            description: seed.description.clone(),
            status: seed.status,
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
        r.add_member(&seed.owner);
        for m in seed.managers.iter().chain(&seed.members) {
            r.add_member(m);
        }
        r
    }

    fn add_member(&mut self, id: &str) {
        if !self.members.iter().any(|m| m == id) {
            self.members.push(id.to_owned());
        }
    }

    /// May this client change the room (owner, manager)? Admins are checked by the caller.
    pub fn is_run_by(&self, client: &str) -> bool {
        self.owner == client || self.managers.iter().any(|m| m == client)
    }

    /// Applies a validated patch; new owner and managers become members.
    pub fn apply(&mut self, p: RoomPatch) {
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
            status,
        } = p.0;
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
        set(&mut self.status, status);
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

    /// The room object as the vendor pages show it: `_id`, `name`, `cover`, `description`,
    /// `status`, `lastMessage`, `members`. With `extra`, also the fields an update can set
    /// (`roomTags`, `webhook`, `botMode`, `extParams`, `opening`, `owner`, `managers`), which
    /// the pages do not list (the `room_extra_fields` variant).
    pub fn to_json(&self, id: &str, clients: &HashMap<String, Client>, extra: bool) -> Value {
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|m| member_json(m, profile(clients, m), true))
            .collect();
        let lm = &self.last_message;
        let mut o = Map::new();
        o.insert("_id".into(), json!(id));
        o.insert("name".into(), json!(self.name));
        o.insert("cover".into(), json!(self.cover));
        o.insert("description".into(), json!(self.description));
        o.insert("status".into(), json!(self.status));
        if extra {
            o.insert("roomTags".into(), json!(self.room_tags));
            o.insert("webhook".into(), json!(self.webhook));
            o.insert("botMode".into(), json!(self.bot_mode));
            o.insert("extParams".into(), json!(self.ext_params));
            o.insert("opening".into(), json!(self.opening));
            o.insert("owner".into(), json!(self.owner));
            o.insert("managers".into(), json!(self.managers));
        }
        o.insert(
            "lastMessage".into(),
            json!({
                "_id": lm.id,
                "message": lm.message,
                "messageType": lm.message_type,
                // As both pages show a message's sender: lastLoginTimeMS 0.
                "sender": member_json(&lm.sender, profile(clients, &lm.sender), false),
                "messageTimeMS": lm.time_ms,
            }),
        );
        o.insert("members".into(), Value::Array(members));
        Value::Object(o)
    }
}

fn profile<'a>(clients: &'a HashMap<String, Client>, id: &str) -> Option<&'a Profile> {
    clients.get(id).map(|c| &c.profile)
}

/// A member as shown in a room's `members` (with its last login) and a message's `sender`
/// (`lastLoginTimeMS` 0, as the pages show it).
fn member_json(id: &str, p: Option<&Profile>, with_login: bool) -> Value {
    let d;
    let p = match p {
        Some(p) => p,
        None => {
            d = Profile::default_for(id);
            &d
        }
    };
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
    fn new(id: &str, mute: Vec<String>, profile: Option<&Profile>) -> Client {
        Client {
            mute,
            updated_at: jiff::Timestamp::now(),
            profile: profile.cloned().unwrap_or_else(|| Profile::default_for(id)),
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
        m.insert("avatarUrl".into(), json!(self.profile.avatar_url));
        m.insert("nickname".into(), json!(self.profile.nickname));
        m.insert("email".into(), json!(""));
        m.insert(
            "address".into(),
            json!({"address": "127.0.0.1", "family": "IPv4", "port": 0}),
        );
        m.insert("userAgent".into(), json!("imkit-batch-sandbox"));
        m.insert("updatedAt".into(), json!(format!("{:.3}", self.updated_at)));
        m.insert("id".into(), json!(id));
        m.insert("lastLoginTimeMS".into(), json!(self.profile.last_login_ms));
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
                (id.clone(), Client::new(id, set, c.profiles.get(id)))
            })
            .collect();
        let mut ensure = |id: &str| {
            clients
                .entry(id.to_owned())
                .or_insert_with(|| Client::new(id, Vec::new(), c.profiles.get(id)));
        };
        let mut rooms = HashMap::with_capacity(c.rooms.len());
        for (id, s) in &c.rooms {
            ensure(&s.owner);
            for m in s.managers.iter().chain(&s.members) {
                ensure(m);
            }
            rooms.insert(id.clone(), Room::new(id, s));
        }
        for client in c.users.values().chain(c.bans.values().flatten()) {
            ensure(client);
        }
        let bans = seeded_bans(c, &rooms);
        World {
            rooms,
            clients,
            bans,
        }
    }
}

/// The bans a config seeds, each made by its room's owner; a ban in a room that does not
/// exist is left out ([`SandboxConfig::check`] refuses such a config).
fn seeded_bans(c: &SandboxConfig, rooms: &HashMap<String, Room>) -> BanBook {
    let mut book = BanBook::default();
    for (room_id, blockees) in &c.bans {
        let Some(room) = rooms.get(room_id) else {
            continue;
        };
        for blockee in blockees {
            book.ban(room_id, blockee, &room.owner);
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
        let mut c = Client::new("c", Vec::new(), None);
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
        let mut room = Room::new("r", &seed);
        room.apply(patch);
        let shown = room.to_json("r", &HashMap::new(), true);
        for k in Field::ALL {
            assert_eq!(shown[k.name()], body[k.name()], "{k}");
        }
        assert_eq!(shown["members"].as_array().map(Vec::len), Some(3));
    }
}
