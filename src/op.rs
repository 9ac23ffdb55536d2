//! The operation model: the seven actions of docs/behaviour.md §1, their targets and update
//! fields, the rules every id must obey, and what each op needs to run (the credential it is
//! sent with, see [`Auth`], and the key that serialises it against other ops on the same
//! room, client or pair). [`Field`] is the one model
//! of the update fields (name, kind, CSV cell form, access in [`RoomFields`]) that manifests,
//! duplicate detection, CSV writing, revert and the sandbox all go through.
//!
//! An [`Op`] is one API call's worth of intent. Manifests expand into ops, the journal stores
//! them, the runner schedules them and the API client turns each into exactly one request.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id accepted, in bytes (docs/behaviour.md §1).
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
    /// `POST /blockStatus/room/{room}/{client}`
    Ban,
    /// `DELETE /blockStatus/room/{room}/{client}`
    Unban,
}

/// What an action changes: a room itself, a client's mute list, or a room's ban list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    /// Freeze, unfreeze, update.
    Room,
    /// Mute, unmute.
    Mute,
    /// Ban, unban.
    Ban,
}

impl Action {
    /// Every action, in the order used for counts and reports.
    pub const ALL: [Action; 7] = [
        Action::Freeze,
        Action::Unfreeze,
        Action::Update,
        Action::Mute,
        Action::Unmute,
        Action::Ban,
        Action::Unban,
    ];

    /// How many actions there are.
    pub const COUNT: usize = Action::ALL.len();

    /// The position in [`Action::ALL`] (for counts per action).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The manifest spelling of this action.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Freeze => "freeze",
            Action::Unfreeze => "unfreeze",
            Action::Update => "update",
            Action::Mute => "mute",
            Action::Unmute => "unmute",
            Action::Ban => "ban",
            Action::Unban => "unban",
        }
    }

    /// Parses the manifest spelling (exact, lower case).
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// What this action changes.
    pub const fn kind(self) -> ActionKind {
        match self {
            Action::Freeze | Action::Unfreeze | Action::Update => ActionKind::Room,
            Action::Mute | Action::Unmute => ActionKind::Mute,
            Action::Ban | Action::Unban => ActionKind::Ban,
        }
    }

    /// True for mute, unmute, ban and unban, which act on a (client, room) pair.
    pub fn needs_client(self) -> bool {
        self.kind() != ActionKind::Room
    }

    /// True for freeze, unfreeze and update, which change the room itself (its status or
    /// fields); mute and unmute change a client's mute list, ban and unban a room's ban list.
    pub fn changes_room(self) -> bool {
        self.kind() == ActionKind::Room
    }

    /// The action that undoes this one on the same target, for the actions that have one
    /// (an update has none: its inverse is another update).
    pub fn inverse(self) -> Option<Action> {
        match self {
            Action::Freeze => Some(Action::Unfreeze),
            Action::Unfreeze => Some(Action::Freeze),
            Action::Update => None,
            Action::Mute => Some(Action::Unmute),
            Action::Unmute => Some(Action::Mute),
            Action::Ban => Some(Action::Unban),
            Action::Unban => Some(Action::Ban),
        }
    }

    /// The error code of the answer that means this action's desired state already holds,
    /// with its HTTP status: an unmute answered 400 `ROOM_NOT_MUTED`, a ban 409
    /// `USER_ALREADY_BLOCKED`, an unban 404 `BLOCK_NOT_FOUND` (docs/api.md, Status codes).
    pub fn already_answer(self) -> Option<(u16, &'static str)> {
        match self {
            Action::Unmute => Some((400, "ROOM_NOT_MUTED")),
            Action::Ban => Some((409, "USER_ALREADY_BLOCKED")),
            Action::Unban => Some((404, "BLOCK_NOT_FOUND")),
            _ => None,
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

/// How room ops and bans authenticate when the operator says so (`--room-auth`,
/// `settings.room_auth`); without a choice, [`Auth::resolve`] picks one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomAuth {
    /// The client key and token (`IMKIT_CLIENT_KEY` + `IMKIT_TOKEN`).
    Token,
    /// The API key (`IMKIT_API_KEY`).
    ApiKey,
}

impl RoomAuth {
    /// Both choices, in the order `--help` lists them.
    pub const ALL: [RoomAuth; 2] = [RoomAuth::Token, RoomAuth::ApiKey];

    /// The spelling of the flag and the setting.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomAuth::Token => "token",
            RoomAuth::ApiKey => "api-key",
        }
    }

    /// Parses the spelling of the flag and the setting (exact).
    pub fn parse(s: &str) -> Option<RoomAuth> {
        RoomAuth::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The credential this choice sends room ops and bans with.
    pub fn credential(self) -> Credential {
        match self {
            RoomAuth::Token => Credential::ClientToken,
            RoomAuth::ApiKey => Credential::ApiKey,
        }
    }
}

impl fmt::Display for RoomAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which credential each kind of op is sent with (docs/behaviour.md §1): room ops (freeze,
/// unfreeze, update, and the `--snapshot` room read) and bans (ban, unban, the ban-list
/// read) share one, `rooms`; mute and unmute always use the API key. The default is that of a job with
/// every credential set: room ops and bans on the client key and token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Auth {
    /// The credential of room ops and bans.
    pub rooms: Credential,
}

impl Default for Auth {
    fn default() -> Auth {
        Auth {
            rooms: Credential::ClientToken,
        }
    }
}

impl Auth {
    /// The operator's choice when there is one; otherwise the client key and token when both
    /// are set (`token_set`), else the API key, which the vendor documents as a platform
    /// admin that may call every endpoint.
    pub fn resolve(choice: Option<RoomAuth>, token_set: bool) -> Auth {
        let rooms = match choice {
            Some(c) => c.credential(),
            None if token_set => Credential::ClientToken,
            None => Credential::ApiKey,
        };
        Auth { rooms }
    }

    /// The credential `action` is sent with.
    pub fn for_action(self, action: Action) -> Credential {
        match action.kind() {
            ActionKind::Mute => Credential::ApiKey,
            ActionKind::Room | ActionKind::Ban => self.rooms,
        }
    }

    /// The credential `op` is sent with.
    pub fn for_op(self, op: &Op) -> Credential {
        self.for_action(op.action)
    }

    /// The credentials `actions` are sent with, each once, in a stable order.
    pub fn needed(self, actions: impl IntoIterator<Item = Action>) -> Vec<Credential> {
        let mut v: Vec<Credential> = actions.into_iter().map(|a| self.for_action(a)).collect();
        v.sort();
        v.dedup();
        v
    }

    /// One line per kind of op among `kinds`, saying which credential it is sent with (names
    /// only): `room ops and bans: API key (IMKIT_API_KEY)`, `mutes: API key (IMKIT_API_KEY)`.
    /// Room ops and bans share a line when both are there.
    pub fn describe(self, kinds: impl IntoIterator<Item = ActionKind>) -> Vec<String> {
        self.uses(kinds)
            .into_iter()
            .map(|(what, c)| format!("{what}: {}", c.describe()))
            .collect()
    }

    /// What [`Auth::describe`] says, as (the kinds of op, their credential) pairs.
    pub fn uses(
        self,
        kinds: impl IntoIterator<Item = ActionKind>,
    ) -> Vec<(&'static str, Credential)> {
        let mut kinds: Vec<ActionKind> = kinds.into_iter().collect();
        kinds.sort();
        kinds.dedup();
        let has = |k: ActionKind| kinds.contains(&k);
        let rooms = match (has(ActionKind::Room), has(ActionKind::Ban)) {
            (true, true) => Some("room ops and bans"),
            (true, false) => Some("room ops"),
            (false, true) => Some("bans"),
            (false, false) => None,
        };
        let mut out = Vec::new();
        if let Some(what) = rooms {
            out.push((what, self.rooms));
        }
        if has(ActionKind::Mute) {
            out.push(("mutes", Credential::ApiKey));
        }
        out
    }
}

/// The fields an `update` may set (docs/behaviour.md §2; docs/api.md, Update a room). `None` means "not given":
/// only given fields are sent. Code that handles fields one by one goes through [`Field`].
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
    /// The field names as they appear in manifests and request bodies, in [`Field::ALL`] order.
    pub const NAMES: [&'static str; Field::COUNT] = {
        let mut names = [""; Field::COUNT];
        let mut i = 0;
        while i < Field::COUNT {
            names[i] = Field::ALL[i].name();
            i += 1;
        }
        names
    };

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
        Field::ALL
            .into_iter()
            .filter(|k| k.is_given(self))
            .map(Field::name)
            .collect()
    }
}

/// One field of [`RoomFields`]: its name, the kind of value it holds, how it is read from a
/// CSV cell and written to one, and access to it in a [`RoomFields`]. Every reader, writer
/// and checker of update fields works through this enum, so a new field is added here (a
/// variant, its entry in [`Field::ALL`], its name, kind and member) and in [`RoomFields`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Name,
    Cover,
    Description,
    RoomTags,
    Webhook,
    BotMode,
    ExtParams,
    Opening,
    Owner,
    Managers,
    /// The room status: 0 frozen, 1 active. Freeze and unfreeze set it too.
    Status,
}

/// What a [`Field`] holds, which decides how it is parsed, checked and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// Any text.
    Text,
    /// One id, under the rules of [`validate_id`].
    Id,
    /// A list of texts (in a CSV cell, `;`-separated).
    TextList,
    /// A list of ids (in a CSV cell, `;`-separated).
    IdList,
    /// `true` or `false`.
    Bool,
    /// `0` or `1`.
    ZeroOne,
}

/// A field's value, borrowed from a [`RoomFields`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldRef<'a> {
    /// A [`FieldKind::Text`] or [`FieldKind::Id`] value.
    Text(&'a str),
    /// A [`FieldKind::TextList`] or [`FieldKind::IdList`] value.
    List(&'a [String]),
    Bool(bool),
    /// A [`FieldKind::ZeroOne`] value.
    Flag(u8),
}

/// A field's value, owned (see [`FieldRef`] for the variants).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FieldValue {
    Text(String),
    List(Vec<String>),
    Bool(bool),
    Flag(u8),
}

impl Field {
    /// Every field, in the order of manifests' columns and of [`RoomFields::NAMES`].
    pub const ALL: [Field; 11] = [
        Field::Name,
        Field::Cover,
        Field::Description,
        Field::RoomTags,
        Field::Webhook,
        Field::BotMode,
        Field::ExtParams,
        Field::Opening,
        Field::Owner,
        Field::Managers,
        Field::Status,
    ];

    /// How many fields there are.
    pub const COUNT: usize = Field::ALL.len();

    /// The name in manifests and request bodies.
    pub const fn name(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Cover => "cover",
            Field::Description => "description",
            Field::RoomTags => "roomTags",
            Field::Webhook => "webhook",
            Field::BotMode => "botMode",
            Field::ExtParams => "extParams",
            Field::Opening => "opening",
            Field::Owner => "owner",
            Field::Managers => "managers",
            Field::Status => "status",
        }
    }

    pub const fn kind(self) -> FieldKind {
        match self {
            Field::Name | Field::Cover | Field::Description | Field::Webhook | Field::ExtParams => {
                FieldKind::Text
            }
            Field::Owner => FieldKind::Id,
            Field::RoomTags => FieldKind::TextList,
            Field::Managers => FieldKind::IdList,
            Field::BotMode => FieldKind::Bool,
            Field::Opening | Field::Status => FieldKind::ZeroOne,
        }
    }

    /// The field named `name` (exact spelling).
    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The position in [`Field::ALL`] (for arrays and bit sets indexed by field).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The value of this field in `f`, if given.
    pub fn get(self, f: &RoomFields) -> Option<FieldRef<'_>> {
        fn text(v: &Option<String>) -> Option<FieldRef<'_>> {
            v.as_deref().map(FieldRef::Text)
        }
        match self {
            Field::Name => text(&f.name),
            Field::Cover => text(&f.cover),
            Field::Description => text(&f.description),
            Field::RoomTags => f.room_tags.as_deref().map(FieldRef::List),
            Field::Webhook => text(&f.webhook),
            Field::BotMode => f.bot_mode.map(FieldRef::Bool),
            Field::ExtParams => text(&f.ext_params),
            Field::Opening => f.opening.map(FieldRef::Flag),
            Field::Owner => text(&f.owner),
            Field::Managers => f.managers.as_deref().map(FieldRef::List),
            Field::Status => f.status.map(FieldRef::Flag),
        }
    }

    /// True when this field is given in `f`.
    pub fn is_given(self, f: &RoomFields) -> bool {
        self.get(f).is_some()
    }

    /// Gives this field the value `v` in `f`; `Err(v)` when `v` is not of this field's kind.
    /// Values are not checked here (see [`check_fields`]).
    pub fn set(self, f: &mut RoomFields, v: FieldValue) -> Result<(), FieldValue> {
        fn put<T>(slot: &mut Option<T>, v: Result<T, FieldValue>) -> Result<(), FieldValue> {
            *slot = Some(v?);
            Ok(())
        }
        match self {
            Field::Name => put(&mut f.name, v.into_text()),
            Field::Cover => put(&mut f.cover, v.into_text()),
            Field::Description => put(&mut f.description, v.into_text()),
            Field::RoomTags => put(&mut f.room_tags, v.into_list()),
            Field::Webhook => put(&mut f.webhook, v.into_text()),
            Field::BotMode => put(&mut f.bot_mode, v.into_bool()),
            Field::ExtParams => put(&mut f.ext_params, v.into_text()),
            Field::Opening => put(&mut f.opening, v.into_flag()),
            Field::Owner => put(&mut f.owner, v.into_text()),
            Field::Managers => put(&mut f.managers, v.into_list()),
            Field::Status => put(&mut f.status, v.into_flag()),
        }
    }

    /// Sets this field in `f` from the text of a CSV cell (trimmed, not empty): lists are
    /// `;`-separated (items trimmed, empty items dropped), `true`/`false`, `0`/`1`, ids
    /// checked. The error is the message a manifest error shows.
    pub fn set_cell(self, f: &mut RoomFields, cell: &str) -> Result<(), String> {
        let v = self.parse_cell(cell)?;
        self.set(f, v)
            .map_err(|v| format!("{self}: {v:?} is not a value of this field"))
    }

    /// The value of a CSV cell, as [`Field::set_cell`] reads it.
    fn parse_cell(self, v: &str) -> Result<FieldValue, String> {
        let name = self.name();
        let id = |v: &str| validate_id(v).map_err(|e| format!("{name}: {e}"));
        match self.kind() {
            FieldKind::Text => Ok(FieldValue::Text(v.into())),
            FieldKind::Id => {
                id(v)?;
                Ok(FieldValue::Text(v.into()))
            }
            FieldKind::TextList => Ok(FieldValue::List(split_list(v))),
            FieldKind::IdList => {
                let list = split_list(v);
                for m in &list {
                    id(m)?;
                }
                Ok(FieldValue::List(list))
            }
            FieldKind::Bool => match v {
                "true" => Ok(FieldValue::Bool(true)),
                "false" => Ok(FieldValue::Bool(false)),
                _ => Err(format!("{name} must be true or false, not {v:?}")),
            },
            FieldKind::ZeroOne => match v {
                "0" => Ok(FieldValue::Flag(0)),
                "1" => Ok(FieldValue::Flag(1)),
                _ => Err(format!("{name} must be 0 or 1, not {v:?}")),
            },
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FieldRef<'_> {
    /// The text of this value in a CSV cell, as [`Field::set_cell`] reads it back: lists
    /// `;`-joined, `true`/`false`, `0`/`1`. (Whether the reader gives back exactly this value
    /// is for the writer to check.)
    pub fn to_cell(self) -> String {
        match self {
            FieldRef::Text(s) => s.to_owned(),
            FieldRef::List(items) => items.join(";"),
            FieldRef::Bool(b) => b.to_string(),
            FieldRef::Flag(n) => n.to_string(),
        }
    }

    pub fn to_owned_value(self) -> FieldValue {
        match self {
            FieldRef::Text(s) => FieldValue::Text(s.to_owned()),
            FieldRef::List(items) => FieldValue::List(items.to_vec()),
            FieldRef::Bool(b) => FieldValue::Bool(b),
            FieldRef::Flag(n) => FieldValue::Flag(n),
        }
    }
}

impl FieldValue {
    fn into_text(self) -> Result<String, FieldValue> {
        match self {
            FieldValue::Text(s) => Ok(s),
            v => Err(v),
        }
    }

    fn into_list(self) -> Result<Vec<String>, FieldValue> {
        match self {
            FieldValue::List(l) => Ok(l),
            v => Err(v),
        }
    }

    fn into_bool(self) -> Result<bool, FieldValue> {
        match self {
            FieldValue::Bool(b) => Ok(b),
            v => Err(v),
        }
    }

    fn into_flag(self) -> Result<u8, FieldValue> {
        match self {
            FieldValue::Flag(n) => Ok(n),
            v => Err(v),
        }
    }
}

/// Splits a `;`-separated list cell: items trimmed, empty items dropped.
fn split_list(v: &str) -> Vec<String> {
    v.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// One API call's worth of intent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Op {
    pub action: Action,
    pub room: Box<str>,
    /// Present exactly for mute, unmute, ban and unban.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Box<str>>,
    /// Present exactly for update, and then never empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Box<RoomFields>>,
}

/// What serialises ops: two ops with the same key never run at the same time and run in
/// manifest order (docs/behaviour.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockKey<'a> {
    /// Freeze, unfreeze, update: the room.
    Room(&'a str),
    /// Mute, unmute: every mute of one client, whatever the room. Each mute adds the room to
    /// the client's one mute array (docs/api.md, Endpoints), a read-modify-write of one
    /// record that concurrent mutes of the client could race on the server.
    Client(&'a str),
    /// Ban, unban: the (client, room) pair. A ban is a record of its own per pair, so a
    /// sweep of one client over many rooms runs concurrently.
    Ban { client: &'a str, room: &'a str },
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

    pub fn ban(client: impl Into<Box<str>>, room: impl Into<Box<str>>) -> Op {
        Op {
            action: Action::Ban,
            room: room.into(),
            client: Some(client.into()),
            fields: None,
        }
    }

    pub fn unban(client: impl Into<Box<str>>, room: impl Into<Box<str>>) -> Op {
        Op {
            action: Action::Unban,
            room: room.into(),
            client: Some(client.into()),
            fields: None,
        }
    }

    /// The key that serialises this op (see [`LockKey`]): the room for room ops, the client
    /// for mute and unmute, the (client, room) pair for ban and unban.
    pub fn lock_key(&self) -> LockKey<'_> {
        match (&self.client, self.action.kind()) {
            (Some(c), ActionKind::Mute) => LockKey::Client(c),
            (Some(c), ActionKind::Ban) => LockKey::Ban {
                client: c,
                room: &self.room,
            },
            _ => LockKey::Room(&self.room),
        }
    }

    /// Checks the structural rules: ids valid, client present exactly for pair actions,
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

/// Checks the value rules of update fields (docs/behaviour.md §2): at least one given, `0`/`1` fields in
/// range, then ids valid. The first problem is the error.
pub fn check_fields(f: &RoomFields) -> Result<(), String> {
    if f.is_empty() {
        return Err("update needs at least one field".into());
    }
    for k in Field::ALL {
        if let Some(FieldRef::Flag(v)) = k.get(f)
            && v > 1
        {
            return Err(format!("{k} must be 0 or 1, not {v}"));
        }
    }
    for k in Field::ALL {
        let id = |id: &str| validate_id(id).map_err(|e| format!("{k}: {e}"));
        match (k.kind(), k.get(f)) {
            (FieldKind::Id, Some(FieldRef::Text(v))) => id(v)?,
            (FieldKind::IdList, Some(FieldRef::List(items))) => {
                for v in items {
                    id(v)?;
                }
            }
            _ => {}
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

/// An id is a non-empty string without control characters, at most 256 bytes (docs/behaviour.md §1).
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
        assert_eq!(Op::unmute("c", "s").lock_key(), LockKey::Client("c"));
        let pair = LockKey::Ban {
            client: "c",
            room: "r",
        };
        assert_eq!(Op::ban("c", "r").lock_key(), pair);
        assert_eq!(Op::unban("c", "r").lock_key(), pair);
        // One client's bans in two rooms, and a ban and a mute of one pair, do not wait for
        // each other.
        assert_ne!(Op::ban("c", "s").lock_key(), pair);
        assert_ne!(Op::mute("c", "r").lock_key(), pair);
    }

    #[test]
    fn credentials_per_kind_of_op() {
        let all = Auth::resolve(None, true);
        assert_eq!(all, Auth::default());
        assert_eq!(all.for_op(&Op::freeze("r")), Credential::ClientToken);
        assert_eq!(all.for_op(&Op::ban("c", "r")), Credential::ClientToken);
        assert_eq!(all.for_op(&Op::mute("c", "r")), Credential::ApiKey);
        // Without a token (or without the client key), room ops and bans fall back to the
        // API key; a choice wins either way.
        let key_only = Auth::resolve(None, false);
        for a in Action::ALL {
            assert_eq!(key_only.for_action(a), Credential::ApiKey, "{a}");
        }
        assert_eq!(key_only.needed(Action::ALL), vec![Credential::ApiKey]);
        assert_eq!(
            Auth::resolve(Some(RoomAuth::ApiKey), true).rooms,
            Credential::ApiKey
        );
        let forced = Auth::resolve(Some(RoomAuth::Token), false);
        assert_eq!(forced.for_action(Action::Unban), Credential::ClientToken);
        assert_eq!(forced.for_action(Action::Unmute), Credential::ApiKey);
        assert_eq!(
            forced.needed([Action::Unban, Action::Mute, Action::Freeze]),
            vec![Credential::ClientToken, Credential::ApiKey]
        );
        for c in RoomAuth::ALL {
            assert_eq!(RoomAuth::parse(c.as_str()), Some(c));
        }
        assert_eq!(RoomAuth::parse("api_key"), None);
    }

    #[test]
    fn credential_lines_name_each_kind_once() {
        let key_only = Auth::resolve(None, false);
        assert_eq!(
            key_only.describe([ActionKind::Ban, ActionKind::Room, ActionKind::Mute]),
            [
                "room ops and bans: API key (IMKIT_API_KEY)",
                "mutes: API key (IMKIT_API_KEY)"
            ]
        );
        assert_eq!(
            Auth::default().describe([ActionKind::Ban]),
            ["bans: client key and token (IMKIT_CLIENT_KEY, IMKIT_TOKEN)"]
        );
        assert_eq!(
            Auth::default().describe([ActionKind::Room, ActionKind::Room]),
            ["room ops: client key and token (IMKIT_CLIENT_KEY, IMKIT_TOKEN)"]
        );
        assert!(Auth::default().describe([]).is_empty());
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

    /// Every member of [`RoomFields`], set (a literal without `..`, so a new member must be
    /// added here).
    fn every_field() -> RoomFields {
        RoomFields {
            name: Some("n".into()),
            cover: Some("c".into()),
            description: Some("d".into()),
            room_tags: Some(vec!["t".into()]),
            webhook: Some("w".into()),
            bot_mode: Some(true),
            ext_params: Some("e".into()),
            opening: Some(1),
            owner: Some("o".into()),
            managers: Some(vec!["m".into()]),
            status: Some(0),
        }
    }

    /// The field model and the serde shape of [`RoomFields`] agree: the same names, in the
    /// same order, each field reaching its own member.
    #[test]
    fn the_field_model_covers_room_fields() {
        let full = every_field();
        assert_eq!(full.given(), RoomFields::NAMES.to_vec());
        let body = full.to_body();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut names = RoomFields::NAMES.to_vec();
        names.sort_unstable();
        assert_eq!(keys, names);
        for (i, k) in Field::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(Field::parse(k.name()), Some(k));
            assert_eq!(k.to_string(), k.name());
            // Set alone, a field is the only one given, with the value set.
            let v = k.get(&full).unwrap().to_owned_value();
            let mut one = RoomFields::default();
            k.set(&mut one, v.clone()).unwrap();
            assert_eq!(one.given(), vec![k.name()]);
            assert_eq!(k.get(&one).map(FieldRef::to_owned_value), Some(v.clone()));
            assert_eq!(one.to_body()[k.name()], body[k.name()], "{k}");
            // A value of another kind is handed back.
            let other = match v {
                FieldValue::Bool(_) => FieldValue::Flag(1),
                _ => FieldValue::Bool(true),
            };
            assert_eq!(k.set(&mut one, other.clone()), Err(other));
        }
        assert_eq!(Field::parse("room_tags"), None);
    }

    #[test]
    fn cells_parse_by_kind() {
        let cell = |k: Field, v: &str| k.parse_cell(v);
        assert_eq!(
            cell(Field::Name, "a; b"),
            Ok(FieldValue::Text("a; b".into()))
        );
        assert_eq!(
            cell(Field::RoomTags, " a ; ;b;"),
            Ok(FieldValue::List(vec!["a".into(), "b".into()]))
        );
        assert_eq!(cell(Field::BotMode, "false"), Ok(FieldValue::Bool(false)));
        assert_eq!(cell(Field::Status, "1"), Ok(FieldValue::Flag(1)));
        assert_eq!(
            cell(Field::Opening, "2"),
            Err("opening must be 0 or 1, not \"2\"".into())
        );
        assert_eq!(
            cell(Field::BotMode, "yes"),
            Err("botMode must be true or false, not \"yes\"".into())
        );
        assert_eq!(
            cell(Field::Owner, ".."),
            Err(format!("owner: {}", IdError::DotSegment("..")))
        );
        assert!(
            cell(Field::Managers, "ok;a\u{1}b")
                .unwrap_err()
                .starts_with("managers: ")
        );
        let full = every_field();
        for k in Field::ALL {
            let back = k.get(&full).unwrap();
            assert_eq!(
                k.parse_cell(&back.to_cell()),
                Ok(back.to_owned_value()),
                "{k}"
            );
        }
    }

    #[test]
    fn field_checks_report_ranges_before_ids() {
        let f = RoomFields {
            status: Some(2),
            owner: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(check_fields(&f), Err("status must be 0 or 1, not 2".into()));
        let f = RoomFields {
            managers: Some(vec!["m".into(), "..".into()]),
            ..Default::default()
        };
        assert!(
            check_fields(&f)
                .unwrap_err()
                .starts_with("managers: id \"..\"")
        );
        assert!(check_fields(&every_field()).is_ok());
    }

    #[test]
    fn actions_in_order() {
        for (i, a) in Action::ALL.into_iter().enumerate() {
            assert_eq!(a.index(), i);
            assert_eq!(Action::parse(a.as_str()), Some(a));
            assert_eq!(a.changes_room(), !a.needs_client());
            if let Some(b) = a.inverse() {
                assert_eq!((b.inverse(), b.kind()), (Some(a), a.kind()), "{a}");
            }
        }
        assert_eq!(Action::parse("ban"), Some(Action::Ban));
        assert_eq!(Action::parse("unban"), Some(Action::Unban));
        assert!(Op::ban("c", "r").check().is_ok());
        assert!(Op::unban("c", "r").check().is_ok());
        let mut no_client = Op::ban("c", "r");
        no_client.client = None;
        assert_eq!(no_client.check(), Err("ban needs a client".into()));
        let answers: Vec<_> = Action::ALL
            .iter()
            .filter_map(|a| a.already_answer())
            .collect();
        assert_eq!(
            answers,
            [
                (400, "ROOM_NOT_MUTED"),
                (409, "USER_ALREADY_BLOCKED"),
                (404, "BLOCK_NOT_FOUND")
            ]
        );
    }
}
