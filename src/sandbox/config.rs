//! What a sandbox starts with: the credentials it accepts, the rooms, clients and users it
//! knows, and the faults it injects. Built by `imkit-batch sandbox`, by `run --sandbox` (via
//! [`SandboxConfig::seed_from_ops`]) and by tests.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{RngCore, SeedableRng};

use crate::op::Op;
use crate::units::Rate;

/// Client id of the platform admin that owns [`SandboxCredentials::token`].
pub const ADMIN_ID: &str = "sandbox-admin";
/// Client id of the owner given to every room a manifest names.
pub const DEFAULT_OWNER: &str = "sandbox-owner";

/// The three secrets the sandbox accepts. `token` belongs to a platform admin.
#[derive(Clone, PartialEq, Eq)]
pub struct SandboxCredentials {
    pub client_key: String,
    pub token: String,
    pub api_key: String,
}

impl std::fmt::Debug for SandboxCredentials {
    // Secrets never reach logs, even the sandbox's own.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SandboxCredentials { .. }")
    }
}

impl SandboxCredentials {
    /// Exactly `IMKIT_CLIENT_KEY`, `IMKIT_TOKEN` and `IMKIT_API_KEY` when set (and not empty),
    /// otherwise made-up random values. The flag is true when at least one value was made up;
    /// [`SandboxCredentials::from_env_or_made_up`] says which.
    pub(crate) fn from_env_or_generate() -> (SandboxCredentials, bool) {
        let (creds, made_up) = SandboxCredentials::from_env_or_made_up();
        (creds, made_up.any())
    }

    /// Like [`SandboxCredentials::from_env_or_generate`], telling for each value whether it
    /// was made up (only those may ever be printed: the others are the user's secrets).
    pub(crate) fn from_env_or_made_up() -> (SandboxCredentials, MadeUp) {
        SandboxCredentials::from_vars(|var| std::env::var(var).ok())
    }

    /// The same over any source of variables (tests).
    fn from_vars(get_var: impl Fn(&str) -> Option<String>) -> (SandboxCredentials, MadeUp) {
        let get = |var: &str, bytes: usize| match get_var(var) {
            Some(v) if !v.is_empty() => (v, false),
            _ => (random_hex(bytes), true),
        };
        let (client_key, ck) = get("IMKIT_CLIENT_KEY", 24);
        let (token, tok) = get("IMKIT_TOKEN", 16);
        let (api_key, ak) = get("IMKIT_API_KEY", 24);
        let creds = SandboxCredentials {
            client_key,
            token,
            api_key,
        };
        let made_up = MadeUp {
            client_key: ck,
            token: tok,
            api_key: ak,
        };
        (creds, made_up)
    }

    /// Made-up random values.
    pub fn generate() -> SandboxCredentials {
        SandboxCredentials {
            client_key: random_hex(24),
            token: random_hex(16),
            api_key: random_hex(24),
        }
    }
}

/// Which of the three credentials were made up (true) rather than taken from the environment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MadeUp {
    pub client_key: bool,
    pub token: bool,
    pub api_key: bool,
}

impl MadeUp {
    pub(crate) fn any(&self) -> bool {
        self.client_key || self.token || self.api_key
    }

    /// The `export` lines of the made-up values only, in a fixed order. A value taken from
    /// the environment is never part of them.
    pub(crate) fn export_lines(&self, c: &SandboxCredentials) -> Vec<String> {
        let mut out = Vec::new();
        if self.client_key {
            out.push(format!("export IMKIT_CLIENT_KEY={}", c.client_key));
        }
        if self.token {
            out.push(format!("export IMKIT_TOKEN={}", c.token));
        }
        if self.api_key {
            out.push(format!("export IMKIT_API_KEY={}", c.api_key));
        }
        out
    }
}

/// Random hex from a generator seeded by the process's random hash keys and the clock (the
/// crate's `rand` has no OS entropy feature; these are throw-away local secrets).
fn random_hex(bytes: usize) -> String {
    let mut h = std::hash::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    let mut rng = rand::rngs::StdRng::seed_from_u64(h.finish());
    let mut buf = vec![0u8; bytes];
    rng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Probabilities, each in 0..=1 and summing to at most 1, that a request to an API endpoint
/// meets a given fault instead of (or besides) its normal answer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultRates {
    /// 429, half in each documented shape (header + RC envelope; flat body with retryAfter).
    pub too_many_requests: f64,
    /// 500 (JSON envelope), 502 and 503 (a proxy's HTML page), a third each.
    pub server_error: f64,
    /// Connection closed before the change is applied, without a response.
    pub drop_before: f64,
    /// Change applied, then the connection closed without a response (the ambiguous case).
    pub drop_after: f64,
    /// Change applied, answer sent only after [`SandboxConfig::slow_duration`].
    pub slow: f64,
}

impl FaultRates {
    pub(crate) fn total(&self) -> f64 {
        self.too_many_requests + self.server_error + self.drop_before + self.drop_after + self.slow
    }

    /// Checks every rate is in 0..=1 and that they sum to at most 1.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, r) in [
            ("429", self.too_many_requests),
            ("5xx", self.server_error),
            ("drop-before", self.drop_before),
            ("drop-after", self.drop_after),
            ("slow", self.slow),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!(
                    "fault rate {name} must be between 0 and 1, not {r}"
                ));
            }
        }
        if self.total() > 1.0 + 1e-9 {
            return Err(format!(
                "fault rates add up to {:.3}; their sum must be at most 1",
                self.total()
            ));
        }
        Ok(())
    }
}

/// A room to create at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSeed {
    pub owner: String,
    pub managers: Vec<String>,
    /// Other members besides owner and managers.
    pub members: Vec<String>,
    /// 1 active, 0 frozen.
    pub status: u8,
    /// Shown name; the room id when `None`.
    pub name: Option<String>,
    pub cover: String,
    pub description: String,
    /// The room's last message; when `None`, a made-up welcome message from the owner.
    pub last_message: Option<MessageSeed>,
}

impl RoomSeed {
    /// An active room owned by `owner`, nothing else set.
    pub fn plain(owner: impl Into<String>) -> RoomSeed {
        RoomSeed {
            owner: owner.into(),
            managers: Vec::new(),
            members: Vec::new(),
            status: 1,
            name: None,
            cover: String::new(),
            description: String::new(),
            last_message: None,
        }
    }

    /// True for `RoomSeed::plain(DEFAULT_OWNER)`: what every room a manifest names starts as.
    pub fn is_plain(&self) -> bool {
        // Every field named (no `..`): a new seed field must be judged here too.
        let RoomSeed {
            owner,
            managers,
            members,
            status,
            name,
            cover,
            description,
            last_message,
        } = self;
        owner == DEFAULT_OWNER
            && managers.is_empty()
            && members.is_empty()
            && *status == 1
            && name.is_none()
            && cover.is_empty()
            && description.is_empty()
            && last_message.is_none()
    }
}

/// The rooms a sandbox starts with, by id. A plain room ([`RoomSeed::is_plain`], as
/// [`SandboxConfig::seed_from_ops`] makes them) is kept as its id alone, so a million of them
/// fit in a few dozen MiB; any other as its seed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomSeeds(BTreeMap<Box<str>, Option<Box<RoomSeed>>>);

impl RoomSeeds {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Is there a room `id` (any string-like id, as a map's lookup takes it)?
    pub fn contains_key(&self, id: &(impl AsRef<str> + ?Sized)) -> bool {
        self.0.contains_key(id.as_ref())
    }

    /// The seed of room `id` (a plain room's is [`RoomSeed::plain`] of [`DEFAULT_OWNER`]).
    pub fn get(&self, id: &str) -> Option<&RoomSeed> {
        self.0
            .get(id)
            .map(|s| s.as_deref().unwrap_or_else(|| plain_seed()))
    }

    /// Creates or replaces room `id`.
    pub fn insert(&mut self, id: impl Into<String>, seed: RoomSeed) {
        let seed = (!seed.is_plain()).then(|| Box::new(seed));
        self.0.insert(id.into().into_boxed_str(), seed);
    }

    /// The seed of room `id`, to change it (a plain room's is made in full first).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut RoomSeed> {
        let seed = self.0.get_mut(id)?;
        Some(seed.get_or_insert_with(|| Box::new(RoomSeed::plain(DEFAULT_OWNER))))
    }

    /// Every room in id order, with its seed (`None`: a plain room).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, Option<&RoomSeed>)> {
        self.0.iter().map(|(id, s)| (&**id, s.as_deref()))
    }
}

/// The seed every plain room reads as.
fn plain_seed() -> &'static RoomSeed {
    static PLAIN: std::sync::LazyLock<RoomSeed> =
        std::sync::LazyLock::new(|| RoomSeed::plain(DEFAULT_OWNER));
    &PLAIN
}

impl std::ops::Index<&str> for RoomSeeds {
    type Output = RoomSeed;

    /// The seed of room `id`; panics when there is no such room, as a map's index does.
    fn index(&self, id: &str) -> &RoomSeed {
        match self.get(id) {
            Some(seed) => seed,
            None => panic!("no room {id:?} in the sandbox's seeds"),
        }
    }
}

/// A room's last message, as the room object's `lastMessage` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageSeed {
    pub id: String,
    pub message: String,
    pub message_type: String,
    /// Client id of the sender (shown with its profile).
    pub sender: String,
    pub time_ms: u64,
}

/// How a client is shown in `members`, a message's `sender` and the client object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub nickname: String,
    pub avatar_url: String,
    pub last_login_ms: u64,
}

/// The pages' placeholder avatar, shown for a client without a profile.
const DEFAULT_AVATAR_URL: &str = "http://example.com/avatarUrl";

impl Profile {
    /// Nickname = the id, the pages' placeholder avatar, never logged in.
    pub fn default_for(id: &str) -> Profile {
        let p = Profile::shown(id, None);
        Profile {
            nickname: p.nickname.to_owned(),
            avatar_url: p.avatar_url.to_owned(),
            last_login_ms: p.last_login_ms,
        }
    }

    /// How client `id` is shown: its profile `p`, or else (`None`) what
    /// [`Profile::default_for`] gives, borrowed.
    pub(crate) fn shown<'a>(id: &'a str, p: Option<&'a Profile>) -> ProfileShown<'a> {
        match p {
            Some(p) => ProfileShown {
                nickname: &p.nickname,
                avatar_url: &p.avatar_url,
                last_login_ms: p.last_login_ms,
            },
            None => ProfileShown {
                nickname: id,
                avatar_url: DEFAULT_AVATAR_URL,
                last_login_ms: 0,
            },
        }
    }
}

/// A [`Profile`], borrowed.
#[derive(Clone, Copy)]
pub(crate) struct ProfileShown<'a> {
    pub nickname: &'a str,
    pub avatar_url: &'a str,
    pub last_login_ms: u64,
}

/// Everything a sandbox starts with.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub credentials: SandboxCredentials,
    /// Rooms by id.
    pub rooms: RoomSeeds,
    /// Clients by id, each with the rooms muted for it at start.
    pub clients: BTreeMap<String, Vec<String>>,
    /// Extra non-admin users: token -> client id (created as a client).
    pub users: BTreeMap<String, String>,
    /// Profiles of clients (others get [`Profile::default_for`]).
    pub profiles: BTreeMap<String, Profile>,
    /// Bans at start: room id -> the clients banned in it, in ban order, each ban made by the
    /// room's owner. Every room must exist ([`SandboxConfig::add_ban`] checks it).
    pub bans: BTreeMap<String, Vec<String>>,
    /// Added to every API answer.
    pub latency: Duration,
    /// A uniform extra delay in `0..=latency_jitter`, drawn from the fault seed.
    pub latency_jitter: Duration,
    pub faults: FaultRates,
    /// Seed of every fault decision: the same seed replays the same faults.
    pub fault_seed: u64,
    /// How long a `slow` answer is held back (make it longer than the client's timeout).
    pub slow_duration: Duration,
    /// `Retry-After` / `retryAfter` seconds of an injected 429.
    pub fault_retry_after_secs: u64,
    /// Server-side limit per credential; the excess is answered 429 (flat documented shape).
    pub rate_limit: Option<Rate>,
    /// With `rate_limit`: a token bucket holding this many requests, refilled at the rate,
    /// instead of a fixed window (see `limit`).
    pub rate_limit_burst: Option<u32>,
    /// `GET /rooms/{id}` omits `status`, like the documented example (docs/api.md, Get a room).
    pub get_room_omits_status: bool,
    /// Room and ban endpoints also accept `IM-API-KEY`, as a platform admin: the API key "can
    /// call all APIs" (docs/api.md, API key). On by default; off emulates a deployment that
    /// takes only the client key + token the endpoint pages document there (answered 401
    /// without them).
    pub api_key_on_rooms: bool,
    /// Platform admins (the admin token, the API key) may also unban and read a room's ban
    /// list. Off by default: the unban and ban-list pages say only the room's owner may.
    pub admin_may_unban: bool,
    /// Room objects in PUT and GET answers also carry roomTags, webhook, botMode, extParams,
    /// opening, owner and managers. Off by default: the vendor pages' room object has only
    /// _id, name, cover, description, status, lastMessage and members; whether the live
    /// service shows more is unverified.
    pub room_extra_fields: bool,
    /// 401s in the flat documented shape `{"error":CODE,"message":..}` (docs/api.md, API key)
    /// instead of the RC envelope of the endpoint pages.
    pub flat_401: bool,
    /// Entries kept in the request log ring.
    pub log_capacity: usize,
    /// How long shutdown lets in-flight answers finish before cutting their connections.
    pub shutdown_grace: Duration,
}

impl SandboxConfig {
    /// No rooms, no faults; the admin token's client exists.
    pub fn new(credentials: SandboxCredentials) -> SandboxConfig {
        let mut c = SandboxConfig {
            credentials,
            rooms: RoomSeeds::default(),
            clients: BTreeMap::new(),
            users: BTreeMap::new(),
            profiles: BTreeMap::new(),
            bans: BTreeMap::new(),
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            faults: FaultRates::default(),
            fault_seed: 0,
            slow_duration: Duration::from_secs(60),
            fault_retry_after_secs: 1,
            rate_limit: None,
            rate_limit_burst: None,
            get_room_omits_status: false,
            api_key_on_rooms: true,
            admin_may_unban: false,
            room_extra_fields: false,
            flat_401: false,
            log_capacity: 10_000,
            shutdown_grace: Duration::from_secs(2),
        };
        c.add_client(ADMIN_ID);
        c
    }

    /// Creates a client (no-op when it exists).
    pub fn add_client(&mut self, id: impl Into<String>) -> &mut Self {
        self.clients.entry(id.into()).or_default();
        self
    }

    /// Creates (or replaces) an active room with this owner and managers, creating them as
    /// clients too.
    pub fn add_room(
        &mut self,
        id: impl Into<String>,
        owner: impl Into<String>,
        managers: &[&str],
    ) -> &mut Self {
        let owner = owner.into();
        self.add_client(owner.clone());
        for m in managers {
            self.add_client(*m);
        }
        let seed = RoomSeed {
            managers: managers.iter().map(|m| m.to_string()).collect(),
            ..RoomSeed::plain(owner)
        };
        self.rooms.insert(id, seed);
        self
    }

    /// Adds `member` (created as a client) to the members of an existing room; false when
    /// there is no such room.
    pub(crate) fn add_member(&mut self, room: &str, member: impl Into<String>) -> bool {
        let member = member.into();
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        if r.owner != member && !r.managers.contains(&member) && !r.members.contains(&member) {
            r.members.push(member.clone());
        }
        self.add_client(member);
        true
    }

    /// Sets how `client` (created if needed) is shown.
    pub fn set_profile(&mut self, client: impl Into<String>, profile: Profile) -> &mut Self {
        let client = client.into();
        self.add_client(client.clone());
        self.profiles.insert(client, profile);
        self
    }

    /// Starts `client` (created if needed) with `room` muted.
    pub fn add_mute(&mut self, client: impl Into<String>, room: impl Into<String>) -> &mut Self {
        let room = room.into();
        let mutes = self.clients.entry(client.into()).or_default();
        if !mutes.contains(&room) {
            mutes.push(room);
        }
        self
    }

    /// Starts `client` (created as a client) banned in an existing room, banned by the room's
    /// owner; false when there is no such room. Banning twice is one ban.
    pub fn add_ban(&mut self, room: &str, client: impl Into<String>) -> bool {
        let client = client.into();
        if !self.rooms.contains_key(room) {
            return false;
        }
        let bans = self.bans.entry(room.to_owned()).or_default();
        if !bans.contains(&client) {
            bans.push(client.clone());
        }
        self.add_client(client);
        true
    }

    /// Adds a non-admin user whose token acts as `client` (created as a client).
    pub fn add_user(&mut self, token: impl Into<String>, client: impl Into<String>) -> &mut Self {
        let client = client.into();
        self.add_client(client.clone());
        self.users.insert(token.into(), client);
        self
    }

    /// Creates every room and client the ops name: rooms active, not muted, owned by
    /// [`DEFAULT_OWNER`]; owner and managers named in update fields become clients.
    pub fn seed_from_ops<'a>(&mut self, ops: impl IntoIterator<Item = &'a Op>) {
        for op in ops {
            if !self.rooms.contains_key(&*op.room) {
                self.add_room(&*op.room, DEFAULT_OWNER, &[]);
            }
            if let Some(c) = &op.client {
                self.add_client(&**c);
            }
            if let Some(f) = &op.fields {
                if let Some(o) = &f.owner {
                    self.add_client(o.clone());
                }
                for m in f.managers.iter().flatten() {
                    self.add_client(m.clone());
                }
            }
        }
    }

    /// Checks the settings that can be wrong (fault rates, users, bans).
    pub(crate) fn check(&self) -> Result<(), String> {
        self.faults.check()?;
        if self.users.contains_key(&self.credentials.token) {
            return Err("an extra user's token equals the admin token".into());
        }
        if let Some(room) = self.bans.keys().find(|r| !self.rooms.contains_key(*r)) {
            return Err(format!("a ban in room {room:?}, which does not exist"));
        }
        match (self.rate_limit, self.rate_limit_burst) {
            (_, Some(0)) => Err("the rate limit's burst must be at least 1".into()),
            (None, Some(_)) => Err("a rate limit burst needs a rate limit (--rate-limit)".into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_seed_only_in_rooms_that_exist() {
        let mut c = SandboxConfig::new(SandboxCredentials::generate());
        assert!(!c.add_ban("r", "c"));
        assert!(c.bans.is_empty() && !c.clients.contains_key("c"));
        c.add_room("r", "o", &[]);
        assert!(c.add_ban("r", "c") && c.add_ban("r", "c") && c.add_ban("r", "d"));
        assert_eq!(c.bans["r"], ["c", "d"]);
        assert!(c.clients.contains_key("c") && c.check().is_ok());
        c.bans.insert("ghost".into(), vec!["c".into()]);
        assert!(c.check().unwrap_err().contains("\"ghost\""));
        // The documented credentials' defaults.
        let c = SandboxConfig::new(SandboxCredentials::generate());
        assert!(c.api_key_on_rooms && !c.admin_may_unban);
    }

    #[test]
    fn only_made_up_values_are_flagged_and_exported() {
        let (c, m) = SandboxCredentials::from_vars(|v| {
            (v == "IMKIT_TOKEN").then(|| "MY-REAL-PROD-TOKEN".to_owned())
        });
        assert_eq!(c.token, "MY-REAL-PROD-TOKEN");
        assert_eq!(
            m,
            MadeUp {
                client_key: true,
                token: false,
                api_key: true
            }
        );
        let lines = m.export_lines(&c);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("export IMKIT_CLIENT_KEY="));
        assert!(lines[1].starts_with("export IMKIT_API_KEY="));
        assert!(lines.iter().all(|l| !l.contains("MY-REAL-PROD-TOKEN")));
        // An empty value counts as unset.
        let (_, m) = SandboxCredentials::from_vars(|_| Some(String::new()));
        assert!(m.client_key && m.token && m.api_key);
        let (_, m) = SandboxCredentials::from_vars(|_| Some("x".into()));
        assert!(!m.any() && m.export_lines(&SandboxCredentials::generate()).is_empty());
    }
}
