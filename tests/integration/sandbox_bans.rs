//! The sandbox's ban endpoints against the vendor's pages (docs/api.md, Bans): ban, unban and
//! the ban list, each documented answer with its whole body compared to the page's example
//! (ids, appID and times aside where the sandbox cannot share them), who may do what (owner,
//! manager, other user, admin token, API key, with and without `admin_may_unban` and
//! `api_key_on_rooms`), faults, latency and the rate limit on them, their counts and log
//! kinds, seeded bans, the control API and reset; and the `sandbox` command's `--ban`,
//! `--admin-may-unban` and `--refuse-api-key-on-rooms`. Servers run in process on 127.0.0.1
//! port 0, except where the binary is the point.

use std::time::{Duration, Instant};

use imkit_batch::sandbox::{
    ADMIN_ID, DEFAULT_OWNER, FaultRates, OpKind, Profile, SandboxConfig, SandboxHandle,
};
use serde_json::{Value, json};

use crate::sandbox::{
    ADMIN, APIKEY, Answer, as_user, blocking_send, expect, http, line_value, sandbox_cmd, send,
    start,
};
use crate::util::{CLIENT_KEY, TOKEN, sandbox_credentials};

/// The room of the pages' examples, owned by `aaa`.
const ROOM: &str = "demo-room";
/// How the ban and unban pages show Cathy (`ccc`); the list page shows her with another.
const BAN_PAGE_AVATAR: &str = "http://loremflickr.com/240/240/style?1628093304";
const LIST_PAGE_AVATAR: &str = "http://loremflickr.com/240/240/style?1628093667";
const OWNER: [(&str, &str); 2] = [
    ("IM-CLIENT-KEY", CLIENT_KEY),
    ("IM-Authorization", "tok-aaa"),
];

/// The pages' cast: `demo-room` owned by `aaa` (Alecia) with manager `mgr`, `other-room`
/// owned by the default owner, client `ccc` (Cathy, shown with `ccc_avatar`); users
/// `tok-aaa` (the owner), `tok-mgr` (the manager), `tok-ccc`.
fn config(ccc_avatar: &str) -> SandboxConfig {
    let mut c = SandboxConfig::new(sandbox_credentials());
    c.add_room(ROOM, "aaa", &["mgr"]);
    c.add_room("other-room", DEFAULT_OWNER, &[]);
    let profile = |nickname: &str, avatar: &str, login: u64| Profile {
        nickname: nickname.into(),
        avatar_url: avatar.into(),
        last_login_ms: login,
    };
    c.set_profile("ccc", profile("Cathy", ccc_avatar, 1_600_006_869_368));
    let alecia = "http://loremflickr.com/240/240/style?1628093717";
    c.set_profile("aaa", profile("Alecia", alecia, 1_583_726_632_592));
    c.add_user("tok-aaa", "aaa");
    c.add_user("tok-mgr", "mgr");
    c.add_user("tok-ccc", "ccc");
    c
}

/// `METHOD /blockStatus/room/{room}/{client}` (POST bans, DELETE unbans).
async fn block(
    sb: &SandboxHandle,
    method: &str,
    h: &[(&str, &str)],
    room: &str,
    client: &str,
) -> Answer {
    let path = format!("/blockStatus/room/{room}/{client}");
    send(sb, method, &path, h, None).await.unwrap()
}

/// `GET /blockStatus/room/{room}`.
async fn list(sb: &SandboxHandle, h: &[(&str, &str)], room: &str) -> Answer {
    let path = format!("/blockStatus/room/{room}");
    send(sb, "GET", &path, h, None).await.unwrap()
}

/// `v` with what the pages' examples and the sandbox cannot share set aside: every
/// `createdAt`/`updatedAt` (checked to be a timestamp in the pages' format, e.g.
/// `2021-08-04T16:08:53.057Z`) becomes `"T"`, `appID` becomes `"APP"`, a room's
/// `createdTimeMS` (checked to be a number) becomes 0.
fn aside(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let x = match k.as_str() {
                    "createdAt" | "updatedAt" => {
                        assert_page_time(x);
                        json!("T")
                    }
                    "appID" => json!("APP"),
                    "createdTimeMS" => {
                        assert!(x.is_u64(), "{k}: {x}");
                        json!(0)
                    }
                    _ => aside(x),
                };
                out.insert(k.clone(), x);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(aside).collect()),
        _ => v.clone(),
    }
}

/// A timestamp as the ban pages write one: RFC 3339 in UTC with milliseconds.
fn assert_page_time(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    let b = s.as_bytes();
    assert!(s.len() == 24 && b[19] == b'.' && s.ends_with('Z'), "{s}");
    assert!(s.parse::<jiff::Timestamp>().is_ok(), "{s}");
}

fn time_of(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

/// The ban page's example response.
fn ban_page_example() -> Value {
    json!({
      "RC": 0,
      "RM": "OK",
      "result": {
        "appID": "SampleApp",
        "blockee": {
          "_id": "ccc",
          "avatarUrl": "http://loremflickr.com/240/240/style?1628093304",
          "nickname": "Cathy",
          "id": "ccc",
          "lastLoginTimeMS": 1600006869368u64
        },
        "blocker": "aaa",
        "room": "demo-room",
        "createdAt": "2021-08-04T16:08:53.057Z",
        "updatedAt": "2021-08-04T16:08:53.057Z"
      }
    })
}

fn unauthorized() -> Value {
    json!({"RC":401,"RM":"Unauthorized","error":{"code":"INVALID_TOKEN","message":"Invalid or expired token"}})
}

fn forbidden(message: &str) -> Value {
    json!({"RC":403,"RM":"Access denied","error":{"code":"INSUFFICIENT_PERMISSIONS","message":message}})
}

const BAN_DENIED: &str = "Only platform admin and room owner can block users in group chat rooms";
const UNBAN_DENIED: &str = "Only room owner can unblock users in group chat rooms";
const LIST_DENIED: &str = "Only room owner can view blocklist in group chat rooms";

/// Headers no credential authenticates: the 401 of every ban page.
fn bad_credentials() -> Vec<Vec<(&'static str, &'static str)>> {
    vec![
        vec![],
        vec![("IM-Authorization", TOKEN)],
        vec![("IM-CLIENT-KEY", CLIENT_KEY)],
        vec![("IM-CLIENT-KEY", "wrong"), ("IM-Authorization", TOKEN)],
        vec![("IM-CLIENT-KEY", CLIENT_KEY), ("IM-Authorization", "wrong")],
        vec![("IM-API-KEY", "wrong")],
    ]
}

// ---- Ban a member ----

#[tokio::test]
async fn doc_ban_example_response_literally() {
    let sb = start(config(BAN_PAGE_AVATAR)).await;
    let before = jiff::Timestamp::now();
    let a = block(&sb, "POST", &OWNER, ROOM, "ccc").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(aside(&v), aside(&ban_page_example()));
    let r = &v["result"];
    assert_eq!(r["appID"], "SandboxApp");
    assert_eq!(r["createdAt"], r["updatedAt"]);
    let made = time_of(&r["createdAt"]);
    // Shown to the millisecond: made at most 1ms before `before`, and not in the future.
    let one_ms = jiff::SignedDuration::from_millis(1);
    assert!(made.checked_add(one_ms).unwrap() >= before && made <= jiff::Timestamp::now());
    assert_eq!(sb.banned(ROOM), Some(vec!["ccc".to_owned()]));
    // The admin token and the API key ban as the platform admin: the blocker is its id.
    for (h, room) in [(ADMIN, ROOM), (APIKEY, "other-room")] {
        let client = if room == ROOM { "mgr" } else { "ccc" };
        let a = block(&sb, "POST", h, room, client).await;
        assert_eq!(a.status, 200, "{}", a.text);
        let r = &a.json()["result"];
        assert_eq!(
            (r["blocker"].as_str(), r["room"].as_str()),
            (Some(ADMIN_ID), Some(room))
        );
        assert_eq!(r["blockee"]["id"], client);
    }
    assert_eq!(
        sb.banned(ROOM),
        Some(vec!["ccc".to_owned(), "mgr".to_owned()])
    );
    assert_eq!(sb.banned("other-room"), Some(vec!["ccc".to_owned()]));
    assert_eq!(sb.stats().applied_total, 3);
}

#[tokio::test]
async fn doc_ban_errors_match_the_page() {
    let sb = start(config(BAN_PAGE_AVATAR)).await;
    // 403: a manager and other users may not ban, not even themselves.
    for (token, client) in [("tok-mgr", "ccc"), ("tok-ccc", "mgr"), ("tok-ccc", "ccc")] {
        let a = block(&sb, "POST", &as_user(token), ROOM, client).await;
        expect(&a, 403, forbidden(BAN_DENIED));
    }
    // 404: the room, the user or both do not exist; whoever asks (the target is checked
    // before permissions).
    let not_found = json!({"RC":404,"RM":"Resource not found","error":{"code":"ROOM_OR_USER_NOT_FOUND","message":"The specified room or user does not exist"}});
    for (h, room, client) in [
        (&OWNER[..], "ghost", "ccc"),
        (&OWNER[..], ROOM, "ghost"),
        (ADMIN, "ghost", "ghost"),
        (&as_user("tok-ccc")[..], "ghost", "ccc"),
    ] {
        expect(
            &block(&sb, "POST", h, room, client).await,
            404,
            not_found.clone(),
        );
    }
    // 409: banned already, whoever bans again; the ban keeps its first blocker.
    assert_eq!(block(&sb, "POST", &OWNER, ROOM, "ccc").await.status, 200);
    let conflict = json!({"RC":409,"RM":"User already blocked","error":{"code":"USER_ALREADY_BLOCKED","message":"This user is already blocked in this room"}});
    for h in [&OWNER[..], ADMIN, APIKEY] {
        expect(
            &block(&sb, "POST", h, ROOM, "ccc").await,
            409,
            conflict.clone(),
        );
    }
    assert_eq!(sb.room(ROOM).unwrap()["bans"][0]["blocker"], "aaa");
    // 401 before anything else, even for a room that does not exist.
    for h in bad_credentials() {
        for room in [ROOM, "ghost"] {
            expect(
                &block(&sb, "POST", &h, room, "mgr").await,
                401,
                unauthorized(),
            );
        }
    }
    assert_eq!(sb.banned(ROOM), Some(vec!["ccc".to_owned()]));
    assert_eq!(sb.stats().applied_total, 1);
}

// ---- Unban a member ----

#[tokio::test]
async fn doc_unban_example_response_literally() {
    let sb = start(config(BAN_PAGE_AVATAR)).await;
    let banned = block(&sb, "POST", &OWNER, ROOM, "ccc").await.json();
    std::thread::sleep(Duration::from_millis(5));
    let a = block(&sb, "DELETE", &OWNER, ROOM, "ccc").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    // The unban page's example response is the ban page's.
    assert_eq!(aside(&v), aside(&ban_page_example()));
    let (was, r) = (&banned["result"], &v["result"]);
    assert_eq!(r["createdAt"], was["createdAt"], "the original ban's time");
    assert!(
        time_of(&r["updatedAt"]) > time_of(&was["updatedAt"]),
        "the unban's time"
    );
    assert_eq!(sb.banned(ROOM), Some(vec![]));
    // Banned again: a new ban of its own time.
    let again = block(&sb, "POST", &OWNER, ROOM, "ccc").await.json();
    assert!(time_of(&again["result"]["createdAt"]) >= time_of(&r["updatedAt"]));
    assert_eq!(sb.stats().applied_total, 3);
}

#[tokio::test]
async fn doc_unban_errors_and_who_may_unban() {
    let sb = start(config(BAN_PAGE_AVATAR)).await;
    assert_eq!(block(&sb, "POST", ADMIN, ROOM, "ccc").await.status, 200);
    // 403: only the owner, by default: not a manager, other users, the admin token or the API
    // key (though the admin banned).
    for h in [&as_user("tok-mgr")[..], &as_user("tok-ccc"), ADMIN, APIKEY] {
        expect(
            &block(&sb, "DELETE", h, ROOM, "ccc").await,
            403,
            forbidden(UNBAN_DENIED),
        );
    }
    assert_eq!(sb.banned(ROOM), Some(vec!["ccc".to_owned()]));
    // 404 BLOCK_NOT_FOUND: a client that exists and is not banned (after its unban too).
    let no_block = json!({"RC":404,"RM":"Block relationship not found","error":{"code":"BLOCK_NOT_FOUND","message":"No block relationship exists for this user in the specified room"}});
    expect(
        &block(&sb, "DELETE", &OWNER, ROOM, "mgr").await,
        404,
        no_block.clone(),
    );
    assert_eq!(block(&sb, "DELETE", &OWNER, ROOM, "ccc").await.status, 200);
    expect(
        &block(&sb, "DELETE", &OWNER, ROOM, "ccc").await,
        404,
        no_block,
    );
    // 400 INVALID_USER_ID: no such client.
    let bad_user = json!({"RC":400,"RM":"Invalid parameters","error":{"code":"INVALID_USER_ID","message":"The specified user ID is not valid"}});
    expect(
        &block(&sb, "DELETE", &OWNER, ROOM, "ghost").await,
        400,
        bad_user,
    );
    // An unknown room: the ban list page's 404 (the unban page documents none).
    let no_room = json!({"RC":404,"RM":"Room not found","error":{"code":"ROOM_NOT_FOUND","message":"The specified room does not exist"}});
    for client in ["ccc", "ghost"] {
        expect(
            &block(&sb, "DELETE", &OWNER, "ghost", client).await,
            404,
            no_room.clone(),
        );
    }
    for h in bad_credentials() {
        expect(
            &block(&sb, "DELETE", &h, ROOM, "ccc").await,
            401,
            unauthorized(),
        );
    }
    assert_eq!(sb.stats().applied_total, 2);

    // `admin_may_unban`: the admin token and the API key unban too; other users still not.
    let mut c = config(BAN_PAGE_AVATAR);
    c.admin_may_unban = true;
    c.add_ban(ROOM, "ccc");
    c.add_ban(ROOM, "mgr");
    let sb = start(c).await;
    for (token, client) in [("tok-mgr", "ccc"), ("tok-ccc", "mgr")] {
        let a = block(&sb, "DELETE", &as_user(token), ROOM, client).await;
        expect(&a, 403, forbidden(UNBAN_DENIED));
    }
    for (h, client) in [(ADMIN, "ccc"), (APIKEY, "mgr")] {
        let a = block(&sb, "DELETE", h, ROOM, client).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(
            a.json()["result"]["blocker"],
            "aaa",
            "the seeded ban's blocker"
        );
    }
    assert_eq!(sb.banned(ROOM), Some(vec![]));
}

// ---- List banned members ----

#[tokio::test]
async fn doc_ban_list_example_response_literally() {
    let sb = start(config(LIST_PAGE_AVATAR)).await;
    expect(
        &list(&sb, &OWNER, ROOM).await,
        200,
        json!({"RC":0,"RM":"OK","result":{"data":[]}}),
    );
    let made = block(&sb, "POST", &OWNER, ROOM, "ccc").await.json();
    let a = list(&sb, &OWNER, ROOM).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let page = json!({
      "RC": 0,
      "RM": "OK",
      "result": {
        "data": [
          {
            "blockee": {
              "_id": "ccc",
              "avatarUrl": "http://loremflickr.com/240/240/style?1628093667",
              "nickname": "Cathy",
              "id": "ccc",
              "lastLoginTimeMS": 1600006869368u64
            },
            "blocker": {
              "_id": "aaa",
              "avatarUrl": "http://loremflickr.com/240/240/style?1628093717",
              "nickname": "Alecia",
              "id": "aaa",
              "lastLoginTimeMS": 1583726632592u64
            },
            "room": {
              "_id": "demo-room",
              "roomType": "group",
              "id": "demo-room",
              "createdTimeMS": 1525001412492u64
            },
            "createdAt": "2021-08-04T16:08:53.057Z",
            "updatedAt": "2021-08-04T16:08:53.057Z"
          }
        ]
      }
    });
    let v = a.json();
    assert_eq!(aside(&v), aside(&page));
    assert_eq!(
        v["result"]["data"][0]["createdAt"],
        made["result"]["createdAt"]
    );
    // In ban order; a ban by the admin shows the admin's user object.
    assert_eq!(block(&sb, "POST", ADMIN, ROOM, "mgr").await.status, 200);
    let data = list(&sb, &OWNER, ROOM).await.json()["result"]["data"].clone();
    let blockees: Vec<&str> = data
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["blockee"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(blockees, ["ccc", "mgr"]);
    assert_eq!(
        data[1]["blocker"],
        json!({"_id":ADMIN_ID,"avatarUrl":"http://example.com/avatarUrl","nickname":ADMIN_ID,"id":ADMIN_ID,"lastLoginTimeMS":0})
    );
    // Another room's list holds none of them; a read changes nothing.
    let other = list(&sb, ADMIN, "other-room").await;
    assert_eq!(
        other.status, 403,
        "owner only: the admin is not other-room's owner"
    );
    assert_eq!(sb.stats().applied_total, 2);
}

#[tokio::test]
async fn doc_ban_list_errors_and_who_may_list() {
    let mut c = config(LIST_PAGE_AVATAR);
    c.add_ban(ROOM, "ccc");
    let sb = start(c.clone()).await;
    for h in [&as_user("tok-mgr")[..], &as_user("tok-ccc"), ADMIN, APIKEY] {
        expect(&list(&sb, h, ROOM).await, 403, forbidden(LIST_DENIED));
    }
    let no_room = json!({"RC":404,"RM":"Room not found","error":{"code":"ROOM_NOT_FOUND","message":"The specified room does not exist"}});
    for h in [&OWNER[..], &as_user("tok-ccc"), ADMIN] {
        expect(&list(&sb, h, "ghost").await, 404, no_room.clone());
    }
    for h in bad_credentials() {
        expect(&list(&sb, &h, ROOM).await, 401, unauthorized());
    }
    // `admin_may_unban` lets platform admins read it too.
    c.admin_may_unban = true;
    let sb = start(c).await;
    for h in [ADMIN, APIKEY, &OWNER[..]] {
        let a = list(&sb, h, ROOM).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.json()["result"]["data"][0]["blockee"]["id"], "ccc");
    }
    expect(
        &list(&sb, &as_user("tok-mgr"), ROOM).await,
        403,
        forbidden(LIST_DENIED),
    );
}

// ---- The API key ----

/// The API key acts as a platform admin on room and ban endpoints by default; with
/// `api_key_on_rooms` off it is refused there with the pages' 401 (flat under `flat_401`),
/// while the mute endpoints still take it and the admin token still works.
#[tokio::test]
async fn the_api_key_on_room_and_ban_endpoints_by_default_and_refused_on_request() {
    let calls = [
        ("PUT", "/rooms/demo-room"),
        ("GET", "/rooms/demo-room"),
        ("POST", "/blockStatus/room/demo-room/ccc"),
        ("GET", "/blockStatus/room/demo-room"),
        ("DELETE", "/blockStatus/room/demo-room/ccc"),
    ];
    let body = |m: &str| (m == "PUT").then_some(r#"{"name":"n"}"#);
    let sb = start(config(BAN_PAGE_AVATAR)).await;
    let got: Vec<u16> = {
        let mut v = Vec::new();
        for (m, p) in calls {
            v.push(send(&sb, m, p, APIKEY, body(m)).await.unwrap().status);
        }
        v
    };
    // Admin rights: update, read, ban; not the owner's unban and list.
    assert_eq!(got, [200, 200, 200, 403, 403]);
    assert_eq!(sb.room(ROOM).unwrap()["name"], "n");

    for flat in [false, true] {
        let mut c = config(BAN_PAGE_AVATAR);
        c.api_key_on_rooms = false;
        c.flat_401 = flat;
        let sb = start(c).await;
        let want = if flat {
            json!({"error":"INVALID_TOKEN","message":"Invalid or expired token"})
        } else {
            unauthorized()
        };
        for (m, p) in calls {
            let a = send(&sb, m, p, APIKEY, body(m)).await.unwrap();
            expect(&a, 401, want.clone());
        }
        assert_eq!(sb.stats().applied_total, 0);
        let mute = send(
            &sb,
            "POST",
            "/admin/clients/ccc/mute/demo-room",
            APIKEY,
            None,
        )
        .await;
        assert_eq!(mute.unwrap().status, 200);
        assert_eq!(block(&sb, "POST", ADMIN, ROOM, "ccc").await.status, 200);
        assert_eq!(
            send(&sb, "PUT", "/rooms/demo-room", ADMIN, body("PUT"))
                .await
                .unwrap()
                .status,
            200
        );
    }
}

// ---- counts, faults, latency, rate limit ----

#[tokio::test]
async fn ban_requests_are_counted_and_logged_by_kind_and_target() {
    let mut c = config(BAN_PAGE_AVATAR);
    c.add_room("hall/1", "aaa", &[]);
    let sb = start(c).await;
    for (m, h) in [
        ("POST", &OWNER[..]),
        ("POST", ADMIN),
        ("DELETE", &OWNER),
        ("DELETE", &OWNER),
    ] {
        block(&sb, m, h, ROOM, "ccc").await;
    }
    list(&sb, &OWNER, ROOM).await;
    let c = |k: OpKind, p: &str| {
        let c = sb.op_counts(k, p);
        (c.received, c.applied)
    };
    // The second ban (409) and the second unban (404) arrived and applied nothing.
    assert_eq!(c(OpKind::Ban, "/blockStatus/room/demo-room/ccc"), (2, 1));
    assert_eq!(c(OpKind::Unban, "/blockStatus/room/demo-room/ccc"), (2, 1));
    assert_eq!(c(OpKind::Bans, "/blockStatus/room/demo-%72oom"), (1, 0));
    assert_eq!(sb.applied("POST", "/blockStatus/room/demo-room/%63cc"), 1);
    assert_eq!(sb.applied("DELETE", "/blockStatus/room/demo-room/ccc"), 1);
    let log = sb.log(100);
    let kinds: Vec<OpKind> = log.iter().map(|e| e.kind).collect();
    use OpKind::*;
    assert_eq!(kinds, [Ban, Ban, Unban, Unban, Bans]);
    let statuses: Vec<Option<u16>> = log.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [Some(200), Some(409), Some(200), Some(404), Some(200)]
    );
    assert_eq!(log[4].request, "GET /blockStatus/room/demo-room");
    let st = sb.stats();
    assert_eq!(st.requests["POST /blockStatus/room/{roomID}/{blockee}"], 2);
    assert_eq!(
        st.requests["DELETE /blockStatus/room/{roomID}/{blockee}"],
        2
    );
    assert_eq!(st.requests["GET /blockStatus/room/{roomID}"], 1);
    assert_eq!(
        st.ops["ban /blockStatus/room/demo-room/ccc"],
        sb.op_counts(Ban, "/blockStatus/room/demo-room/ccc")
    );
    assert_eq!(st.applied_total, 2);
    // Through the control API, and with an id that is encoded in the path.
    let url = format!(
        "{}/_sandbox/applied?kind=unban&path=/blockStatus/room/demo-room/ccc",
        sb.base_url()
    );
    let a: Value = http().get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        a,
        json!({"kind":"unban","target":"/blockStatus/room/demo-room/ccc","received":2,"applied":1})
    );
    assert_eq!(
        block(&sb, "POST", &OWNER, "hall%2F1", "ccc").await.status,
        200
    );
    assert_eq!(sb.banned("hall/1"), Some(vec!["ccc".to_owned()]));
    assert_eq!(sb.log(1)[0].request, "POST /blockStatus/room/hall%2F1/ccc");
    assert_eq!(c(Ban, "/blockStatus/room/hall%2f1/ccc"), (1, 1));
}

#[tokio::test]
async fn the_rate_limit_counts_ban_requests_per_credential() {
    let mut c = config(BAN_PAGE_AVATAR);
    c.rate_limit = Some("3/min".parse().unwrap());
    let sb = start(c).await;
    // The API key's budget: a mute, a ban and a room update spend it.
    let mute = send(
        &sb,
        "POST",
        "/admin/clients/ccc/mute/demo-room",
        APIKEY,
        None,
    )
    .await;
    assert_eq!(mute.unwrap().status, 200);
    assert_eq!(block(&sb, "POST", APIKEY, ROOM, "ccc").await.status, 200);
    let put = send(&sb, "PUT", "/rooms/demo-room", APIKEY, Some("{}")).await;
    assert_eq!(put.unwrap().status, 200);
    let a = block(&sb, "POST", APIKEY, ROOM, "mgr").await;
    assert_eq!(a.status, 429);
    let v = a.json();
    assert_eq!(v["error"], "RATE_LIMIT_EXCEEDED");
    assert!(v["retryAfter"].as_u64().unwrap() >= 1);
    assert_eq!(list(&sb, APIKEY, ROOM).await.status, 429);
    assert_eq!(
        sb.banned(ROOM),
        Some(vec!["ccc".to_owned()]),
        "the refused ban changed nothing"
    );
    // The owner's token has a budget of its own.
    assert_eq!(block(&sb, "POST", &OWNER, ROOM, "mgr").await.status, 200);
    assert_eq!(list(&sb, &OWNER, ROOM).await.status, 200);
    assert_eq!(block(&sb, "DELETE", &OWNER, ROOM, "mgr").await.status, 200);
    assert_eq!(block(&sb, "DELETE", &OWNER, ROOM, "ccc").await.status, 429);
    assert_eq!(sb.stats().rate_limited, 3);
}

#[tokio::test]
async fn faults_and_latency_meet_ban_requests() {
    let faulty = |rates: FaultRates| {
        let mut c = config(BAN_PAGE_AVATAR);
        c.faults = rates;
        c
    };
    // Dropped after the change: banned, no answer; before it: nothing.
    let sb = start(faulty(FaultRates {
        drop_after: 1.0,
        ..Default::default()
    }))
    .await;
    assert!(
        send(&sb, "POST", "/blockStatus/room/demo-room/ccc", &OWNER, None)
            .await
            .is_err()
    );
    assert_eq!(sb.banned(ROOM), Some(vec!["ccc".to_owned()]));
    assert_eq!(
        sb.op_counts(OpKind::Ban, "/blockStatus/room/demo-room/ccc")
            .applied,
        1
    );
    assert!(
        send(
            &sb,
            "DELETE",
            "/blockStatus/room/demo-room/ccc",
            &OWNER,
            None
        )
        .await
        .is_err()
    );
    assert_eq!(sb.banned(ROOM), Some(vec![]));
    let sb = start(faulty(FaultRates {
        drop_before: 1.0,
        ..Default::default()
    }))
    .await;
    assert!(
        send(&sb, "POST", "/blockStatus/room/demo-room/ccc", &OWNER, None)
            .await
            .is_err()
    );
    assert_eq!(sb.banned(ROOM), Some(vec![]));
    // 5xx and 429 on every ban endpoint, nothing applied.
    let sb = start(faulty(FaultRates {
        server_error: 0.5,
        too_many_requests: 0.5,
        ..Default::default()
    }))
    .await;
    for _ in 0..10 {
        for m in ["POST", "DELETE"] {
            let s = block(&sb, m, &OWNER, ROOM, "ccc").await.status;
            assert!([429, 500, 502, 503].contains(&s), "{m}: {s}");
        }
        let s = list(&sb, &OWNER, ROOM).await.status;
        assert!([429, 500, 502, 503].contains(&s), "list: {s}");
    }
    assert_eq!(
        (sb.banned(ROOM), sb.stats().applied_total),
        (Some(vec![]), 0)
    );
    assert_eq!(sb.faults_total(), 30);
    // Latency delays their answers too.
    let mut c = config(BAN_PAGE_AVATAR);
    c.latency = Duration::from_millis(40);
    let sb = start(c).await;
    for m in ["POST", "DELETE"] {
        let t = Instant::now();
        assert_eq!(block(&sb, m, &OWNER, ROOM, "ccc").await.status, 200);
        assert!(
            t.elapsed() >= Duration::from_millis(40),
            "{m}: {:?}",
            t.elapsed()
        );
    }
    let t = Instant::now();
    assert_eq!(list(&sb, &OWNER, ROOM).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(40));
}

// ---- seeding, the control API, reset ----

#[tokio::test]
async fn seeded_bans_show_in_the_control_api_and_reset_restores_them() {
    let mut c = config(BAN_PAGE_AVATAR);
    assert!(c.add_ban(ROOM, "ccc") && c.add_ban("other-room", "new-client"));
    assert!(!c.add_ban("ghost", "ccc"), "the room must exist");
    let sb = start(c).await;
    let view = |id: &'static str| {
        let url = format!("{}/_sandbox/rooms/{id}", sb.base_url());
        async move {
            http()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let seeded = view(ROOM).await;
    let bans = &seeded["bans"];
    assert_eq!(
        aside(bans),
        json!([{"blockee":"ccc","blocker":"aaa","createdAt":"T","updatedAt":"T"}])
    );
    assert_eq!(
        (seeded["owner"].clone(), seeded["status"].clone()),
        (json!("aaa"), json!(1))
    );
    assert_eq!(
        view("other-room").await["bans"][0]["blocker"],
        DEFAULT_OWNER
    );
    assert!(
        sb.client("new-client").is_some(),
        "a seeded blockee is a client"
    );
    // A seeded ban is a ban: 409 on ban, listed, lifted by the owner.
    assert_eq!(block(&sb, "POST", &OWNER, ROOM, "ccc").await.status, 409);
    let listed = list(&sb, &OWNER, ROOM).await.json();
    assert_eq!(
        listed["result"]["data"][0]["createdAt"],
        bans[0]["createdAt"]
    );
    assert_eq!(block(&sb, "DELETE", &OWNER, ROOM, "ccc").await.status, 200);
    assert_eq!(block(&sb, "POST", ADMIN, ROOM, "mgr").await.status, 200);
    let changed = view(ROOM).await;
    assert_eq!(changed["bans"].as_array().unwrap().len(), 1);
    assert_eq!(
        (
            changed["bans"][0]["blockee"].as_str(),
            changed["bans"][0]["blocker"].as_str()
        ),
        (Some("mgr"), Some(ADMIN_ID))
    );
    assert_eq!(
        sb.room(ROOM).unwrap()["bans"],
        changed["bans"],
        "the handle shows the same"
    );
    // Reset: exactly the seeded bans again, as they were.
    let r = http()
        .post(format!("{}/_sandbox/reset", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(view(ROOM).await, seeded);
    assert_eq!(sb.banned(ROOM), Some(vec!["ccc".to_owned()]));
    assert_eq!(sb.banned("ghost"), None);
    let mut plain = config(BAN_PAGE_AVATAR);
    plain.add_room("empty", "aaa", &[]);
    let sb = start(plain).await;
    assert_eq!(sb.room("empty").unwrap()["bans"], json!([]));
}

// ---- the `sandbox` command ----

const ENV: [(&str, &str); 3] = [
    ("IMKIT_CLIENT_KEY", "ck"),
    ("IMKIT_TOKEN", "tok"),
    ("IMKIT_API_KEY", "ak"),
];
const CMD_ADMIN: [(&str, &str); 2] = [("IM-CLIENT-KEY", "ck"), ("IM-Authorization", "tok")];
const CMD_OWNER: [(&str, &str); 2] = [("IM-CLIENT-KEY", "ck"), ("IM-Authorization", "tok-o1")];
const CMD_API_KEY: [(&str, &str); 1] = [("IM-API-KEY", "ak")];

/// `--ban ROOM=ID` seeds a ban (the control API shows it, a ban answers 409); by default the
/// API key bans and reads rooms, only the owner unbans and lists; `--ban` of a room no option
/// creates is refused (exit 2).
#[test]
fn sandbox_command_seeds_bans_with_the_documented_defaults() {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--room",
        "r1:o1",
        "--ban",
        "r1=c1",
        "--user",
        "tok-o1=o1",
    ];
    let (mut child, lines) = sandbox_cmd(&args, &ENV);
    let base = line_value(&lines, "IMKIT sandbox listening on ").unwrap();
    let call = |m: &str, p: &str, h: &[(&str, &str)]| blocking_send(m, &format!("{base}{p}"), h);
    let (s, room) = call("GET", "/_sandbox/rooms/r1", &[]);
    assert_eq!(s, 200);
    let room: Value = serde_json::from_str(&room).unwrap();
    assert_eq!(
        (
            room["bans"][0]["blockee"].as_str(),
            room["bans"][0]["blocker"].as_str()
        ),
        (Some("c1"), Some("o1"))
    );
    assert_eq!(call("GET", "/_sandbox/clients/c1", &[]).0, 200);
    assert_eq!(call("POST", "/blockStatus/room/r1/c1", &CMD_API_KEY).0, 409);
    assert_eq!(call("GET", "/rooms/r1", &CMD_API_KEY).0, 200);
    assert_eq!(call("POST", "/blockStatus/room/r1/o1", &CMD_API_KEY).0, 200);
    for h in [&CMD_API_KEY[..], &CMD_ADMIN] {
        assert_eq!(call("GET", "/blockStatus/room/r1", h).0, 403);
        assert_eq!(call("DELETE", "/blockStatus/room/r1/c1", h).0, 403);
    }
    let (s, body) = call("GET", "/blockStatus/room/r1", &CMD_OWNER);
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["result"]["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(call("DELETE", "/blockStatus/room/r1/c1", &CMD_OWNER).0, 200);
    child.kill().unwrap();
    child.wait().unwrap();

    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("imkit-batch"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--ban", "nope=c1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--ban nope=c1") && err.contains("no room \"nope\""),
        "{err}"
    );
}

/// `--refuse-api-key-on-rooms` answers the API key 401 on room and ban endpoints (mutes still
/// take it); `--admin-may-unban` lets the admin token unban and list; `--api-key-on-rooms` is
/// still accepted (the default) and cannot go with the refusal.
#[test]
fn sandbox_command_switches_the_api_key_and_admin_unban() {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--room",
        "r1:o1",
        "--ban",
        "r1=c1",
        "--refuse-api-key-on-rooms",
        "--admin-may-unban",
    ];
    let (mut child, lines) = sandbox_cmd(&args, &ENV);
    let base = line_value(&lines, "IMKIT sandbox listening on ").unwrap();
    let call = |m: &str, p: &str, h: &[(&str, &str)]| blocking_send(m, &format!("{base}{p}"), h);
    for (m, p) in [
        ("PUT", "/rooms/r1"),
        ("GET", "/rooms/r1"),
        ("POST", "/blockStatus/room/r1/o1"),
        ("GET", "/blockStatus/room/r1"),
        ("DELETE", "/blockStatus/room/r1/c1"),
    ] {
        let (s, body) = call(m, p, &CMD_API_KEY);
        assert_eq!(s, 401, "{m} {p}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            unauthorized()
        );
    }
    assert_eq!(
        call("POST", "/admin/clients/c1/mute/r1", &CMD_API_KEY).0,
        200
    );
    assert_eq!(call("GET", "/blockStatus/room/r1", &CMD_ADMIN).0, 200);
    assert_eq!(call("DELETE", "/blockStatus/room/r1/c1", &CMD_ADMIN).0, 200);
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, lines) = sandbox_cmd(
        &[
            "--listen",
            "127.0.0.1:0",
            "--room",
            "r1:o1",
            "--api-key-on-rooms",
        ],
        &ENV,
    );
    let base = line_value(&lines, "IMKIT sandbox listening on ").unwrap();
    assert_eq!(
        blocking_send("GET", &format!("{base}/rooms/r1"), &CMD_API_KEY).0,
        200
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("imkit-batch"))
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--api-key-on-rooms",
            "--refuse-api-key-on-rooms",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
