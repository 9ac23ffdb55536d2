//! What a request is: the endpoint it names, its decoded ids, the canonical key that fault
//! replay and the counts go by, and its kind (freeze, unfreeze, update, get, mute, unmute,
//! ban, unban, bans).
//! Routing goes on the raw path, each id one percent-decoded segment, so an encoded id can
//! never reach another endpoint.

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::request::segment;

/// What a request does, as the counts and the log tell requests apart: a PUT body of exactly
/// `{"status":0}` is a freeze, exactly `{"status":1}` an unfreeze, any other PUT an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Freeze,
    Unfreeze,
    Update,
    Get,
    Mute,
    Unmute,
    Ban,
    Unban,
    /// A read of a room's ban list.
    Bans,
    /// No such route (answered 404 `NOT_FOUND`).
    Unknown,
}

impl OpKind {
    pub(crate) const ALL: [OpKind; 10] = [
        OpKind::Freeze,
        OpKind::Unfreeze,
        OpKind::Update,
        OpKind::Get,
        OpKind::Mute,
        OpKind::Unmute,
        OpKind::Ban,
        OpKind::Unban,
        OpKind::Bans,
        OpKind::Unknown,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OpKind::Freeze => "freeze",
            OpKind::Unfreeze => "unfreeze",
            OpKind::Update => "update",
            OpKind::Get => "get",
            OpKind::Mute => "mute",
            OpKind::Unmute => "unmute",
            OpKind::Ban => "ban",
            OpKind::Unban => "unban",
            OpKind::Bans => "bans",
            OpKind::Unknown => "unknown",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<OpKind> {
        OpKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

/// The endpoints the sandbox emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    GetRoom,
    PutRoom,
    Mute,
    Unmute,
    Ban,
    Unban,
    ListBans,
}

impl Endpoint {
    pub const COUNT: usize = 7;
    pub const ALL: [Endpoint; Endpoint::COUNT] = [
        Endpoint::GetRoom,
        Endpoint::PutRoom,
        Endpoint::Mute,
        Endpoint::Unmute,
        Endpoint::Ban,
        Endpoint::Unban,
        Endpoint::ListBans,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::GetRoom => "GET /rooms/{id}",
            Endpoint::PutRoom => "PUT /rooms/{id}",
            Endpoint::Mute => "POST /admin/clients/{uid}/mute/{room}",
            Endpoint::Unmute => "DELETE /admin/clients/{uid}/mute/{room}",
            Endpoint::Ban => "POST /blockStatus/room/{roomID}/{blockee}",
            Endpoint::Unban => "DELETE /blockStatus/room/{roomID}/{blockee}",
            Endpoint::ListBans => "GET /blockStatus/room/{roomID}",
        }
    }

    pub(crate) fn uses_api_key(self) -> bool {
        matches!(self, Endpoint::Mute | Endpoint::Unmute)
    }
}

/// A request matched to an endpoint, with its decoded ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub endpoint: Endpoint,
    pub room: String,
    pub client: Option<String>,
}

impl Route {
    /// Matches a raw (still percent-encoded) path. Each id is exactly one segment, decoded
    /// after splitting, so `%2F` inside an id never makes a new segment.
    pub fn parse(method: &str, path: &str) -> Option<Route> {
        let rest = path.strip_prefix('/')?;
        let segs: Vec<&str> = rest.split('/').collect();
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (endpoint, room, client) = match (method, segs.as_slice()) {
            ("GET", ["rooms", id]) if !id.is_empty() => (Endpoint::GetRoom, *id, None),
            ("PUT", ["rooms", id]) if !id.is_empty() => (Endpoint::PutRoom, *id, None),
            ("POST", ["admin", "clients", uid, "mute", room])
                if !uid.is_empty() && !room.is_empty() =>
            {
                (Endpoint::Mute, *room, Some(*uid))
            }
            ("DELETE", ["admin", "clients", uid, "mute", room])
                if !uid.is_empty() && !room.is_empty() =>
            {
                (Endpoint::Unmute, *room, Some(*uid))
            }
            (m, ["blockStatus", "room", room, blockee])
                if !room.is_empty() && !blockee.is_empty() && (m == "POST" || m == "DELETE") =>
            {
                let e = if m == "POST" {
                    Endpoint::Ban
                } else {
                    Endpoint::Unban
                };
                (e, *room, Some(*blockee))
            }
            ("GET", ["blockStatus", "room", room]) if !room.is_empty() => {
                (Endpoint::ListBans, *room, None)
            }
            _ => return None,
        };
        Some(Route {
            endpoint,
            room: decode(room),
            client: client.map(decode),
        })
    }

    pub fn method(&self) -> &'static str {
        match self.endpoint {
            Endpoint::GetRoom | Endpoint::ListBans => "GET",
            Endpoint::PutRoom => "PUT",
            Endpoint::Mute | Endpoint::Ban => "POST",
            Endpoint::Unmute | Endpoint::Unban => "DELETE",
        }
    }

    /// `METHOD /path` with canonically encoded ids: the key of fault replay and applied counts.
    pub fn key(&self) -> String {
        let room = segment(&self.room);
        let client = || segment(self.client.as_deref().unwrap_or_default());
        let method = self.method();
        match self.endpoint {
            Endpoint::GetRoom | Endpoint::PutRoom => format!("{method} /rooms/{room}"),
            Endpoint::Mute | Endpoint::Unmute => {
                format!("{method} /admin/clients/{}/mute/{room}", client())
            }
            Endpoint::Ban | Endpoint::Unban => {
                format!("{method} /blockStatus/room/{room}/{}", client())
            }
            Endpoint::ListBans => format!("{method} /blockStatus/room/{room}"),
        }
    }
}

/// The kind of a PUT body: exactly `{"status":0}` is a freeze, exactly `{"status":1}` an
/// unfreeze (the freeze page's two example bodies; 0.0 and 1.0 are the same JSON numbers),
/// any other body an update.
pub(crate) fn put_kind(body: &[u8]) -> OpKind {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let status = v
        .as_ref()
        .and_then(Value::as_object)
        .filter(|m| m.len() == 1)
        .and_then(|m| m.get("status"))
        .and_then(Value::as_f64);
    match status {
        Some(0.0) => OpKind::Freeze,
        Some(1.0) => OpKind::Unfreeze,
        _ => OpKind::Update,
    }
}

/// The kind of a request to a known route.
pub(crate) fn op_kind(endpoint: Endpoint, body: &[u8]) -> OpKind {
    match endpoint {
        Endpoint::GetRoom => OpKind::Get,
        Endpoint::PutRoom => put_kind(body),
        Endpoint::Mute => OpKind::Mute,
        Endpoint::Unmute => OpKind::Unmute,
        Endpoint::Ban => OpKind::Ban,
        Endpoint::Unban => OpKind::Unban,
        Endpoint::ListBans => OpKind::Bans,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_take_one_segment_per_id() {
        let r = Route::parse("PUT", "/rooms/..%2Fadmin").unwrap();
        assert_eq!(r.room, "../admin");
        assert_eq!(r.key(), "PUT /rooms/..%2Fadmin");
        assert!(Route::parse("PUT", "/rooms/a/b").is_none());
        assert!(Route::parse("PUT", "/rooms/").is_none());
        assert!(Route::parse("PATCH", "/rooms/a").is_none());
        let r = Route::parse("DELETE", "/admin/clients/u%201/mute/%E6%88%BF").unwrap();
        assert_eq!(r.client.as_deref(), Some("u 1"));
        assert_eq!(r.room, "房");
        assert_eq!(
            Route::parse("GET", "/rooms/%41").unwrap().key(),
            "GET /rooms/A"
        );
    }

    #[test]
    fn ban_routes_put_the_room_first() {
        let r = Route::parse("POST", "/blockStatus/room/demo-room/c%2Fc").unwrap();
        assert_eq!(r.endpoint, Endpoint::Ban);
        assert_eq!(
            (r.room.as_str(), r.client.as_deref()),
            ("demo-room", Some("c/c"))
        );
        assert_eq!(r.key(), "POST /blockStatus/room/demo-room/c%2Fc");
        let r = Route::parse("DELETE", "/blockStatus/room/%41/b").unwrap();
        assert_eq!(
            (r.endpoint, r.key().as_str()),
            (Endpoint::Unban, "DELETE /blockStatus/room/A/b")
        );
        let r = Route::parse("GET", "/blockStatus/room/demo-room").unwrap();
        assert_eq!(
            (r.endpoint, r.client.as_deref()),
            (Endpoint::ListBans, None)
        );
        assert_eq!(r.key(), "GET /blockStatus/room/demo-room");
        assert_eq!(op_kind(r.endpoint, b""), OpKind::Bans);
        for (m, p) in [
            ("GET", "/blockStatus/room/r/c"),
            ("PUT", "/blockStatus/room/r/c"),
            ("POST", "/blockStatus/room/r"),
            ("DELETE", "/blockStatus/room/r"),
            ("POST", "/blockStatus/room//c"),
            ("POST", "/blockStatus/room/r/"),
            ("GET", "/blockStatus/room/"),
            ("POST", "/blockStatus/room/r/c/d"),
        ] {
            assert!(Route::parse(m, p).is_none(), "{m} {p}");
        }
        assert_eq!(OpKind::parse("BANS"), Some(OpKind::Bans));
    }
}
