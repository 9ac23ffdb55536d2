//! The operation model: the five actions of SPEC §1, their targets and update fields, the
//! rules every id must obey, and what each op needs to run (its credential and the key that
//! serialises it against other ops on the same room or client).
//!
//! An [`Op`] is one API call's worth of intent. Manifests expand into ops, the journal stores
//! them, the runner schedules them and the API client turns each into exactly one request.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id accepted, in bytes (SPEC §1).
pub const MAX_ID_BYTES: usize = 256;

/// What an op does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `PUT /rooms/{room}` `{"status":0}`
    Freeze,
    /// `PUT /rooms/{room}` `{"status":1}`
    Unfreeze,
    /// `PUT /rooms/{room}` with only the given fields
    Update,
    /// `POST /admin/clients/{client}/mute/{room}`
    Mute,
    /// `DELETE /admin/clients/{client}/mute/{room}`
    Unmute,
}

impl Action {
    /// Every action, in the order used for counts and reports.
    pub const ALL: [Action; 5] = [
        Action::Freeze,
        Action::Unfreeze,
        Action::Update,
        Action::Mute,
        Action::Unmute,
    ];

    /// The manifest spelling of this action.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Freeze => "freeze",
            Action::Unfreeze => "unfreeze",
            Action::Update => "update",
            Action::Mute => "mute",
            Action::Unmute => "unmute",
        }
    }

    /// Parses the manifest spelling (exact, lower case).
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// True for mute and unmute, which act on a (client, room) pair.
    pub fn needs_client(self) -> bool {
        matches!(self, Action::Mute | Action::Unmute)
    }

    /// The credential this action is sent with (api/NOTES.md, Endpoints).
    pub fn credential(self) -> Credential {
        if self.needs_client() {
            Credential::ApiKey
        } else {
            Credential::ClientToken
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two credentials the API knows. Names only: the secret values live in `api::Credentials`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// `IM-CLIENT-KEY` + `IM-Authorization`, from `IMKIT_CLIENT_KEY` and `IMKIT_TOKEN`.
    ClientToken,
    /// `IM-API-KEY`, from `IMKIT_API_KEY`.
    ApiKey,
}

impl Credential {
    /// The environment variables that hold this credential.
    pub fn env_vars(self) -> &'static [&'static str] {
        match self {
            Credential::ClientToken => &["IMKIT_CLIENT_KEY", "IMKIT_TOKEN"],
            Credential::ApiKey => &["IMKIT_API_KEY"],
        }
    }

    /// A human name, for messages such as "the API key (IMKIT_API_KEY) was rejected".
    pub fn describe(self) -> &'static str {
        match self {
            Credential::ClientToken => "client key and token (IMKIT_CLIENT_KEY, IMKIT_TOKEN)",
            Credential::ApiKey => "API key (IMKIT_API_KEY)",
        }
    }
}

/// The fields an `update` may set (SPEC §2, api/update-a-room.txt). `None` means "not given":
/// only given fields are sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoomFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_params: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u8>,
}

impl RoomFields {
    /// The field names as they appear in manifests and request bodies.
    pub const NAMES: [&'static str; 11] = [
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

    /// True when no field is given.
    pub fn is_empty(&self) -> bool {
        *self == RoomFields::default()
    }

    /// The JSON request body: only the given fields.
    pub fn to_body(&self) -> serde_json::Value {
        // Serialising a struct of strings, bools, numbers and string lists cannot fail.
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}))
    }

    /// The names of the given fields, in [`RoomFields::NAMES`] order.
    pub fn given(&self) -> Vec<&'static str> {
        let v = self.to_body();
        RoomFields::NAMES
            .into_iter()
            .filter(|n| v.get(n).is_some())
            .collect()
    }
}

/// One API call's worth of intent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Op {
    pub action: Action,
    pub room: Box<str>,
    /// Present exactly for mute and unmute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Box<str>>,
    /// Present exactly for update, and then never empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Box<RoomFields>>,
}

/// What serialises ops: two ops with the same key never run at the same time and run in
/// manifest order (SPEC §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockKey<'a> {
    Room(&'a str),
    Client(&'a str),
}

impl Op {
    pub fn freeze(room: impl Into<Box<str>>) -> Op {
        Op {
            action: Action::Freeze,
            room: room.into(),
            client: None,
            fields: None,
        }
    }

    pub fn unfreeze(room: impl Into<Box<str>>) -> Op {
        Op {
            action: Action::Unfreeze,
            room: room.into(),
            client: None,
            fields: None,
        }
    }

    pub fn update(room: impl Into<Box<str>>, fields: RoomFields) -> Op {
        Op {
            action: Action::Update,
            room: room.into(),
            client: None,
            fields: Some(Box::new(fields)),
        }
    }

    pub fn mute(client: impl Into<Box<str>>, room: impl Into<Box<str>>) -> Op {
        Op {
            action: Action::Mute,
            room: room.into(),
            client: Some(client.into()),
            fields: None,
        }
    }

    pub fn unmute(client: impl Into<Box<str>>, room: impl Into<Box<str>>) -> Op {
        Op {
            action: Action::Unmute,
            room: room.into(),
            client: Some(client.into()),
            fields: None,
        }
    }

    /// The key that serialises this op: the room for room ops, the client for mute/unmute.
    pub fn lock_key(&self) -> LockKey<'_> {
        match &self.client {
            Some(c) if self.action.needs_client() => LockKey::Client(c),
            _ => LockKey::Room(&self.room),
        }
    }

    pub fn credential(&self) -> Credential {
        self.action.credential()
    }

    /// Checks the structural rules: ids valid, client present exactly for mute/unmute,
    /// fields present and non-empty exactly for update, enum-like fields in range.
    pub fn check(&self) -> Result<(), String> {
        validate_id(&self.room).map_err(|e| format!("room: {e}"))?;
        match (&self.client, self.action.needs_client()) {
            (Some(c), true) => validate_id(c).map_err(|e| format!("client: {e}"))?,
            (None, true) => return Err(format!("{} needs a client", self.action)),
            (Some(_), false) => return Err(format!("{} takes no client", self.action)),
            (None, false) => {}
        }
        match (&self.fields, self.action) {
            (Some(f), Action::Update) => check_fields(f)?,
            (None, Action::Update) => return Err("update needs at least one field".into()),
            (Some(_), a) => return Err(format!("{a} takes no fields")),
            (None, _) => {}
        }
        Ok(())
    }
}

/// Checks the value rules of update fields (SPEC §2).
pub fn check_fields(f: &RoomFields) -> Result<(), String> {
    if f.is_empty() {
        return Err("update needs at least one field".into());
    }
    for (name, v) in [("opening", f.opening), ("status", f.status)] {
        if let Some(v) = v
            && v > 1
        {
            return Err(format!("{name} must be 0 or 1, not {v}"));
        }
    }
    if let Some(owner) = &f.owner {
        validate_id(owner).map_err(|e| format!("owner: {e}"))?;
    }
    if let Some(managers) = &f.managers {
        for m in managers {
            validate_id(m).map_err(|e| format!("managers: {e}"))?;
        }
    }
    Ok(())
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.client {
            Some(c) => write!(f, "{} client {:?} in room {:?}", self.action, c, self.room),
            None => write!(f, "{} room {:?}", self.action, self.room),
        }
    }
}

/// Why an id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is {0} bytes long; the limit is {MAX_ID_BYTES}")]
    TooLong(usize),
    #[error("id contains a control character ({0:?})")]
    Control(char),
    #[error("id {0:?} cannot be sent: URLs treat it as a relative path segment, not an id")]
    DotSegment(&'static str),
    #[error(
        "id {0:?} begins or ends with a space: remove the spaces around it (a CSV cell is \
         trimmed, so the same id must not differ between CSV and YAML)"
    )]
    EdgeSpace(String),
}

/// An id is a non-empty string without control characters, at most 256 bytes (SPEC §1).
/// Any other character is allowed: the API client percent-encodes it as one path segment.
/// The ids `.` and `..` are refused: URL parsers resolve them (even written `%2E%2E`) as
/// dot-segments, so no request could name them as one segment. An id may not begin or end
/// with white space: a CSV cell is trimmed, so `" lobby-1 "` in YAML would otherwise name a
/// different room than the same cell in a CSV (spaces inside an id are fine).
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.trim() != id {
        if id.trim().is_empty() {
            return Err(IdError::Empty);
        }
        let shown: String = id.chars().take(64).collect();
        return Err(IdError::EdgeSpace(shown));
    }
    if id == "." || id == ".." {
        return Err(IdError::DotSegment(if id == "." { "." } else { ".." }));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong(id.len()));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(IdError::Control(c));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rules() {
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id(&"a".repeat(256)), Ok(()));
        assert_eq!(validate_id(&"a".repeat(257)), Err(IdError::TooLong(257)));
        assert_eq!(validate_id("a\tb"), Err(IdError::Control('\t')));
        assert_eq!(validate_id("a\u{85}b"), Err(IdError::Control('\u{85}')));
        assert_eq!(validate_id("../admin"), Ok(()));
        assert_eq!(validate_id(".."), Err(IdError::DotSegment("..")));
        assert_eq!(validate_id("."), Err(IdError::DotSegment(".")));
        assert_eq!(validate_id("..."), Ok(()));
        assert_eq!(validate_id("房間 1"), Ok(()));
        assert_eq!(validate_id("   "), Err(IdError::Empty));
        for edged in [" lobby-1", "lobby-1 ", " lobby-1 ", "\u{3000}lobby-1"] {
            assert!(
                matches!(validate_id(edged), Err(IdError::EdgeSpace(_))),
                "{edged:?}"
            );
        }
    }

    #[test]
    fn lock_keys_follow_the_target() {
        assert_eq!(Op::freeze("r").lock_key(), LockKey::Room("r"));
        assert_eq!(Op::mute("c", "r").lock_key(), LockKey::Client("c"));
    }

    #[test]
    fn check_enforces_shape() {
        assert!(Op::freeze("r").check().is_ok());
        assert!(Op::update("r", RoomFields::default()).check().is_err());
        let f = RoomFields {
            opening: Some(2),
            ..Default::default()
        };
        assert!(Op::update("r", f).check().unwrap_err().contains("opening"));
        let mut bad = Op::freeze("r");
        bad.client = Some("c".into());
        assert!(bad.check().is_err());
    }

    #[test]
    fn body_has_only_given_fields() {
        let f = RoomFields {
            name: Some("Help Desk".into()),
            opening: Some(0),
            room_tags: Some(vec!["a".into()]),
            ..Default::default()
        };
        assert_eq!(
            f.to_body(),
            serde_json::json!({"name":"Help Desk","opening":0,"roomTags":["a"]})
        );
        assert_eq!(f.given(), vec!["name", "roomTags", "opening"]);
    }
}
