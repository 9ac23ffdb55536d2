//! The emulated platform's bans: who is banned in which room, by whom and since when, and the
//! JSON objects the ban pages show for them (the ban record of ban and unban, the records of
//! a room's ban list, the user and room objects inside them). No HTTP and no permissions
//! here: [`super::ban_api`] decides who may do what and maps outcomes to answers.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::config::Profile;

/// The ban list page's `room.createdTimeMS`: rooms come into being with their made-up
/// welcome message, so the time of that message (the room object's default `lastMessage`).
const ROOM_CREATED_MS: u64 = 1_485_251_491_375;

/// One ban of one client in one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ban {
    /// Client id of who banned (the sandbox's admin id for the admin token and the API key).
    pub blocker: String,
    pub created_at: jiff::Timestamp,
    pub updated_at: jiff::Timestamp,
    /// Order of banning across the whole book: the ban list shows a room's bans in it.
    seq: u64,
}

/// Every ban, per room then per banned client.
#[derive(Clone, Debug, Default)]
pub(crate) struct BanBook {
    rooms: HashMap<String, HashMap<String, Ban>>,
    next_seq: u64,
}

impl BanBook {
    /// Bans `blockee` in `room`, by `blocker`, now; `None` (and nothing changed) when that ban
    /// already exists.
    pub fn ban(&mut self, room: &str, blockee: &str, blocker: &str) -> Option<&Ban> {
        let seq = self.next_seq;
        let bans = self.rooms.entry(room.to_owned()).or_default();
        if bans.contains_key(blockee) {
            return None;
        }
        self.next_seq += 1;
        let now = jiff::Timestamp::now();
        let ban = Ban {
            blocker: blocker.to_owned(),
            created_at: now,
            updated_at: now,
            seq,
        };
        Some(bans.entry(blockee.to_owned()).or_insert(ban))
    }

    /// Lifts the ban of `blockee` in `room`: the record as it was, its `updated_at` the time
    /// of the unban (as the unban page shows it); `None` when there was no such ban.
    pub fn unban(&mut self, room: &str, blockee: &str) -> Option<Ban> {
        let bans = self.rooms.get_mut(room)?;
        let mut ban = bans.remove(blockee)?;
        if bans.is_empty() {
            self.rooms.remove(room);
        }
        ban.updated_at = jiff::Timestamp::now();
        Some(ban)
    }

    /// The bans of `room` in the order they were made: (banned client, ban).
    pub fn of_room(&self, room: &str) -> Vec<(&str, &Ban)> {
        let mut out: Vec<(&str, &Ban)> = self
            .rooms
            .get(room)
            .map(|bans| bans.iter().map(|(c, b)| (c.as_str(), b)).collect())
            .unwrap_or_default();
        out.sort_by_key(|(_, b)| b.seq);
        out
    }
}

/// A timestamp as the ban pages show one: `2021-08-04T16:08:53.057Z`.
fn time(t: jiff::Timestamp) -> String {
    format!("{t:.3}")
}

/// A user as the ban pages show one (`blockee`, and `blocker` in the list): `_id`,
/// `avatarUrl`, `nickname`, `id`, `lastLoginTimeMS`.
pub(crate) fn user_json(id: &str, profile: Option<&Profile>) -> Value {
    let p = Profile::shown(id, profile);
    json!({
        "_id": id,
        "avatarUrl": p.avatar_url,
        "nickname": p.nickname,
        "id": id,
        "lastLoginTimeMS": p.last_login_ms,
    })
}

/// The ban record of the ban and unban answers: `blocker` and `room` are ids.
pub(crate) fn record_json(app_id: &str, room: &str, blockee: Value, ban: &Ban) -> Value {
    json!({
        "appID": app_id,
        "blockee": blockee,
        "blocker": ban.blocker,
        "room": room,
        "createdAt": time(ban.created_at),
        "updatedAt": time(ban.updated_at),
    })
}

/// One record of the ban list: `blockee` and `blocker` are user objects, `room` a room object.
pub(crate) fn list_entry_json(room: &str, blockee: Value, blocker: Value, ban: &Ban) -> Value {
    json!({
        "blockee": blockee,
        "blocker": blocker,
        "room": {
            "_id": room,
            "roomType": "group",
            "id": room,
            "createdTimeMS": ROOM_CREATED_MS,
        },
        "createdAt": time(ban.created_at),
        "updatedAt": time(ban.updated_at),
    })
}

/// The control API's view of one ban: ids and times only.
pub(crate) fn control_json(blockee: &str, ban: &Ban) -> Value {
    json!({
        "blockee": blockee,
        "blocker": ban.blocker,
        "createdAt": time(ban.created_at),
        "updatedAt": time(ban.updated_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_is_made_once_and_lifted_once() {
        let mut b = BanBook::default();
        let made = b.ban("r", "c", "o").cloned().unwrap();
        assert_eq!(made.blocker, "o");
        assert_eq!(made.created_at, made.updated_at);
        assert!(b.ban("r", "c", "someone").is_none());
        assert_eq!(
            b.of_room("r"),
            [("c", &made)],
            "a refused ban changes nothing"
        );
        let lifted = b.unban("r", "c").unwrap();
        assert_eq!(
            (lifted.blocker.as_str(), lifted.created_at),
            ("o", made.created_at)
        );
        assert!(lifted.updated_at >= made.updated_at);
        assert!(b.unban("r", "c").is_none());
        assert!(b.of_room("r").is_empty());
        assert!(b.unban("nope", "c").is_none());
    }

    #[test]
    fn a_rooms_bans_list_in_ban_order_and_apart_from_other_rooms() {
        let mut b = BanBook::default();
        for c in ["z", "a", "m"] {
            b.ban("r", c, "o");
        }
        b.ban("other", "a", "o");
        let order: Vec<&str> = b.of_room("r").iter().map(|(c, _)| *c).collect();
        assert_eq!(order, ["z", "a", "m"]);
        b.unban("r", "a");
        b.ban("r", "a", "o");
        let order: Vec<&str> = b.of_room("r").iter().map(|(c, _)| *c).collect();
        assert_eq!(order, ["z", "m", "a"]);
        assert_eq!(b.of_room("other").len(), 1);
    }

    #[test]
    fn objects_have_the_pages_keys() {
        let u = user_json("ccc", None);
        assert_eq!(
            u,
            json!({"_id":"ccc","avatarUrl":"http://example.com/avatarUrl","nickname":"ccc",
                   "id":"ccc","lastLoginTimeMS":0})
        );
        let mut b = BanBook::default();
        let ban = b.ban("demo-room", "ccc", "aaa").cloned().unwrap();
        let r = record_json("App", "demo-room", u.clone(), &ban);
        assert_eq!(r["blocker"], "aaa");
        assert_eq!(r["room"], "demo-room");
        let t = r["createdAt"].as_str().unwrap();
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[19] == b'.',
            "{t}"
        );
        let e = list_entry_json("demo-room", u.clone(), u, &ban);
        assert_eq!(
            e["room"],
            json!({"_id":"demo-room","roomType":"group","id":"demo-room",
                   "createdTimeMS": ROOM_CREATED_MS})
        );
    }
}
