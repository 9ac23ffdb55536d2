//! The three ban endpoints and their documented answers: ban
//! (`POST /blockStatus/room/{roomID}/{blockee}`), unban (`DELETE` on the same path) and a
//! room's ban list (`GET /blockStatus/room/{roomID}`), with the permission rules of their
//! pages and their success and error bodies exactly as the pages show them.
//!
//! - Ban: a platform admin (the admin token, the API key where accepted) or the room's owner;
//!   managers and other users get 403. 404 `ROOM_OR_USER_NOT_FOUND` for an unknown room or
//!   client, 409 `USER_ALREADY_BLOCKED` for a ban that exists (nothing changes).
//! - Unban and the list: the room's owner only, as their pages say; `admin_may_unban` lets
//!   platform admins too. Unban of a pair not banned: 404 `BLOCK_NOT_FOUND`; of a client that
//!   does not exist: 400 `INVALID_USER_ID`.
//! - The blocker of a ban is the caller's client id ([`super::ADMIN_ID`] for an admin).
//!
//! Where the pages are silent, the checks go in the order of the other endpoints: credentials
//! (401, in the shape the other endpoints answer), the target (404, or the unban page's 400
//! for the user), permissions (403), then the state (409, 404 `BLOCK_NOT_FOUND`).

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::bans::{list_entry_json, record_json, user_json};
use super::handlers::{Caller, caller, error, invalid_token, ok};
use super::route::Route;
use super::shared::Shared;
use super::state::{APP_ID, World, profile};
use crate::sync::lock;

const BAN_DENIED: &str = "Only platform admin and room owner can block users in group chat rooms";
const UNBAN_DENIED: &str = "Only room owner can unblock users in group chat rooms";
const LIST_DENIED: &str = "Only room owner can view blocklist in group chat rooms";

fn forbidden(message: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "Access denied",
        "INSUFFICIENT_PERMISSIONS",
        message,
    )
}

fn room_or_user_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Resource not found",
        "ROOM_OR_USER_NOT_FOUND",
        "The specified room or user does not exist",
    )
}

/// The ban list page's answer for a room that does not exist. The unban page documents no
/// answer for one; it answers this too: its own 404 `BLOCK_NOT_FOUND` would tell the caller
/// that the desired state holds (nothing to lift) and so hide a wrong room id, while this is
/// what the same service answers for the same room on the same path.
fn room_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Room not found",
        "ROOM_NOT_FOUND",
        "The specified room does not exist",
    )
}

fn already_blocked() -> Response {
    error(
        StatusCode::CONFLICT,
        "User already blocked",
        "USER_ALREADY_BLOCKED",
        "This user is already blocked in this room",
    )
}

fn block_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Block relationship not found",
        "BLOCK_NOT_FOUND",
        "No block relationship exists for this user in the specified room",
    )
}

fn invalid_user_id() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "Invalid parameters",
        "INVALID_USER_ID",
        "The specified user ID is not valid",
    )
}

/// May `who` act on a room owned by `owner`? Its owner may; platform admins when `admins`.
fn may(who: &Caller, owner: &str, admins: bool) -> bool {
    (admins && matches!(who, Caller::Admin)) || who.client_id() == owner
}

/// `POST /blockStatus/room/{roomID}/{blockee}`: the answer, and whether a ban was made.
pub(super) fn ban(sb: &Shared, route: &Route, h: &HeaderMap) -> (Response, bool) {
    let Some(who) = caller(sb, h) else {
        return (invalid_token(sb), false);
    };
    let blockee = route.client.as_deref().unwrap_or_default();
    let mut world = lock(&sb.world);
    let World {
        rooms,
        clients,
        bans,
    } = &mut *world;
    let (Some(room), Some(client)) = (rooms.get(route.room.as_str()), clients.get(blockee)) else {
        return (room_or_user_not_found(), false);
    };
    if !may(&who, room.owner(), true) {
        return (forbidden(BAN_DENIED), false);
    }
    let Some(made) = bans.ban(&route.room, blockee, who.client_id()) else {
        return (already_blocked(), false);
    };
    let blockee_json = user_json(blockee, client.profile.as_deref());
    let result = record_json(APP_ID, &route.room, blockee_json, made);
    drop(world);
    (ok("OK", result), true)
}

/// `DELETE /blockStatus/room/{roomID}/{blockee}`: the answer, and whether a ban was lifted.
pub(super) fn unban(sb: &Shared, route: &Route, h: &HeaderMap) -> (Response, bool) {
    let Some(who) = caller(sb, h) else {
        return (invalid_token(sb), false);
    };
    let blockee = route.client.as_deref().unwrap_or_default();
    let mut world = lock(&sb.world);
    let World {
        rooms,
        clients,
        bans,
    } = &mut *world;
    let Some(room) = rooms.get(route.room.as_str()) else {
        return (room_not_found(), false);
    };
    let Some(client) = clients.get(blockee) else {
        return (invalid_user_id(), false);
    };
    if !may(&who, room.owner(), sb.config.admin_may_unban) {
        return (forbidden(UNBAN_DENIED), false);
    }
    let Some(lifted) = bans.unban(&route.room, blockee) else {
        return (block_not_found(), false);
    };
    let blockee_json = user_json(blockee, client.profile.as_deref());
    let result = record_json(APP_ID, &route.room, blockee_json, &lifted);
    drop(world);
    (ok("OK", result), true)
}

/// `GET /blockStatus/room/{roomID}`: the room's bans in the order they were made.
pub(super) fn list(sb: &Shared, route: &Route, h: &HeaderMap) -> Response {
    let Some(who) = caller(sb, h) else {
        return invalid_token(sb);
    };
    let world = lock(&sb.world);
    let Some(room) = world.rooms.get(route.room.as_str()) else {
        return room_not_found();
    };
    if !may(&who, room.owner(), sb.config.admin_may_unban) {
        return forbidden(LIST_DENIED);
    }
    let data: Vec<Value> = world
        .bans
        .of_room(&route.room)
        .into_iter()
        .map(|(blockee, ban)| {
            let blockee_json = user_json(blockee, profile(&world.clients, blockee));
            let blocker_json = user_json(&ban.blocker, profile(&world.clients, &ban.blocker));
            list_entry_json(&route.room, blockee_json, blocker_json, ban)
        })
        .collect();
    drop(world);
    ok("OK", json!({ "data": data }))
}
