//! The sandbox against the vendor's pages (docs/api.md): every example request replayed
//! with its documented answer checked field by field, permissions, validation, mute set
//! semantics, encoded ids, seeded faults (rates and replay), the rate limit and the control
//! API. Every server runs in process on 127.0.0.1 port 0.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use imkit_batch::api::request::Request as ApiRequest;
use imkit_batch::op::{Op, RoomFields};
use imkit_batch::sandbox::{
    self, DEFAULT_OWNER, Fault, FaultRates, MessageSeed, OpKind, Profile, SandboxConfig,
    SandboxCredentials, SandboxHandle,
};
use serde_json::{Value, json};

use crate::util::{API_KEY, CLIENT_KEY, TOKEN, sandbox_credentials};

/// The room of the pages' examples.
const DOC_ROOM: &str = "58871b877390be11d5f1ab30";

/// Rooms: the doc room (owner `owner-1`, manager `mgr-1`), `lobby-1` (owner `sandbox-owner`);
/// clients `aaa` (the mute page's), users `tok-owner`, `tok-mgr`, `tok-other`.
fn config() -> SandboxConfig {
    let mut c = SandboxConfig::new(sandbox_credentials());
    c.add_room(DOC_ROOM, "owner-1", &["mgr-1"]);
    c.add_room("demo", DEFAULT_OWNER, &[]);
    c.add_room("lobby-1", DEFAULT_OWNER, &[]);
    c.add_client("aaa");
    c.add_user("tok-owner", "owner-1");
    c.add_user("tok-mgr", "mgr-1");
    c.add_user("tok-other", "someone-else");
    c
}

pub(super) async fn start(c: SandboxConfig) -> SandboxHandle {
    sandbox::spawn(c).await.unwrap()
}

pub(super) fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub(super) struct Answer {
    pub(super) status: u16,
    headers: reqwest::header::HeaderMap,
    pub(super) text: String,
}

impl Answer {
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

pub(super) async fn send(
    sb: &SandboxHandle,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Answer, reqwest::Error> {
    send_with(&http(), sb, method, path, headers, body).await
}

async fn send_with(
    client: &reqwest::Client,
    sb: &SandboxHandle,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Answer, reqwest::Error> {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = client.request(m, format!("{}{}", sb.base_url(), path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb
            .header("Content-Type", "application/json; charset=utf-8")
            .body(b.to_owned());
    }
    let r = rb.send().await?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await?;
    Ok(Answer {
        status,
        headers,
        text,
    })
}

pub(super) const ADMIN: &[(&str, &str)] =
    &[("IM-CLIENT-KEY", CLIENT_KEY), ("IM-Authorization", TOKEN)];
pub(super) const APIKEY: &[(&str, &str)] = &[("IM-API-KEY", API_KEY)];

pub(super) fn as_user(token: &'static str) -> [(&'static str, &'static str); 2] {
    [("IM-CLIENT-KEY", CLIENT_KEY), ("IM-Authorization", token)]
}

async fn put(sb: &SandboxHandle, h: &[(&str, &str)], room_path: &str, body: &str) -> Answer {
    send(sb, "PUT", &format!("/rooms/{room_path}"), h, Some(body))
        .await
        .unwrap()
}

/// The answer has this status and exactly this JSON body.
pub(super) fn expect(a: &Answer, status: u16, body: Value) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.json(), body);
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// The keys of the room object the freeze and update pages list (Chatroom / Room Object
/// Structure), and of its `lastMessage` in their example responses.
const ROOM_KEYS: [&str; 7] = [
    "_id",
    "name",
    "cover",
    "description",
    "status",
    "lastMessage",
    "members",
];
const LAST_MESSAGE_KEYS: [&str; 5] = ["_id", "message", "messageType", "sender", "messageTimeMS"];
/// What `room_extra_fields` adds (unverified variant).
const EXTRA_ROOM_KEYS: [&str; 7] = [
    "roomTags",
    "webhook",
    "botMode",
    "extParams",
    "opening",
    "owner",
    "managers",
];

fn key_set(ks: &[&str]) -> BTreeSet<String> {
    ks.iter().map(|k| k.to_string()).collect()
}

/// The room object of the freeze and update pages: exactly their keys, each of its type.
fn assert_room_object(r: &Value) {
    assert_eq!(keys(r), key_set(&ROOM_KEYS), "{r}");
    for k in ["_id", "name", "cover", "description"] {
        assert!(r[k].is_string(), "{k} in {r}");
    }
    assert!(r["status"].is_u64(), "status in {r}");
    let lm = &r["lastMessage"];
    assert_eq!(keys(lm), key_set(&LAST_MESSAGE_KEYS), "{lm}");
    for k in ["_id", "message", "messageType"] {
        assert!(lm[k].is_string(), "lastMessage.{k} in {r}");
    }
    assert!(lm["messageTimeMS"].is_u64());
    assert_member(&lm["sender"]);
    let members = r["members"].as_array().unwrap();
    assert!(!members.is_empty());
    members.iter().for_each(assert_member);
}

fn assert_member(m: &Value) {
    assert_eq!(
        keys(m),
        ["_id", "avatarUrl", "lastLoginTimeMS", "nickname"]
            .map(String::from)
            .into()
    );
    assert!(m["_id"].is_string() && m["nickname"].is_string() && m["avatarUrl"].is_string());
    assert!(m["lastLoginTimeMS"].is_u64());
}

// ---- docs/api.md, Freeze or unfreeze a room ----

#[tokio::test]
async fn doc_freeze_and_unfreeze_examples() {
    let sb = start(config()).await;
    let a = put(&sb, ADMIN, DOC_ROOM, "{\n  \"status\": 0\n}").await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(keys(&v), ["RC", "RM", "result"].map(String::from).into());
    assert_eq!(v["RC"], 0);
    assert_eq!(v["RM"], "Room frozen successfully");
    assert_room_object(&v["result"]);
    assert_eq!(v["result"]["_id"], DOC_ROOM);
    assert_eq!(v["result"]["status"], 0);
    assert_eq!(sb.room_status(DOC_ROOM), Some(0));

    let a = put(&sb, ADMIN, DOC_ROOM, "{\n  \"status\": 1\n}").await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["RC"], 0);
    assert_eq!(v["RM"], "Room unfrozen successfully");
    assert_eq!(v["result"]["status"], 1);
    assert_eq!(sb.room_status(DOC_ROOM), Some(1));

    // 0.0 and 1.0 are the JSON numbers 0 and 1: the same freeze and unfreeze.
    let a = put(&sb, ADMIN, DOC_ROOM, r#"{"status":0.0}"#).await;
    assert_eq!(
        (a.status, a.json()["RM"].clone()),
        (200, json!("Room frozen successfully"))
    );
    assert_eq!(sb.room_status(DOC_ROOM), Some(0));
    let a = put(&sb, ADMIN, DOC_ROOM, r#"{"status":1.0}"#).await;
    assert_eq!(
        (a.status, a.json()["RM"].clone()),
        (200, json!("Room unfrozen successfully"))
    );
    assert_eq!(sb.room_status(DOC_ROOM), Some(1));
}

#[tokio::test]
async fn doc_freeze_errors_match_the_page() {
    let sb = start(config()).await;
    let bad = [("IM-CLIENT-KEY", CLIENT_KEY), ("IM-Authorization", "nope")];
    let a = put(&sb, &bad, DOC_ROOM, r#"{"status":0}"#).await;
    expect(
        &a,
        401,
        json!({"RC":401,"RM":"Unauthorized","error":{"code":"INVALID_TOKEN","message":"Invalid or expired token"}}),
    );
    let a = put(&sb, &as_user("tok-other"), DOC_ROOM, r#"{"status":0}"#).await;
    expect(
        &a,
        403,
        json!({"RC":403,"RM":"Permission denied","error":{"code":"INSUFFICIENT_PERMISSIONS","message":"Only room owner, manager, or platform admin can freeze room"}}),
    );
    let a = put(&sb, ADMIN, "no-such-room", r#"{"status":0}"#).await;
    expect(
        &a,
        404,
        json!({"RC":404,"RM":"Room not found","error":{"code":"ROOM_NOT_FOUND","message":"Room with specified ID does not exist"}}),
    );
    assert_eq!(sb.room_status(DOC_ROOM), Some(1));
    assert_eq!(sb.stats().applied_total, 0);
}

/// The example room of the pages: owner `1485248560558` shown as `nick`, its last message.
fn doc_example_config(nick: &str, message: &str, name: &str, description: &str) -> SandboxConfig {
    let mut c = config();
    c.add_room(DOC_ROOM, "1485248560558", &[]);
    c.set_profile(
        "1485248560558",
        Profile {
            nickname: nick.into(),
            avatar_url: "http://example.com/avatarUrl".into(),
            last_login_ms: 1485764751552,
        },
    );
    let r = c.rooms.get_mut(DOC_ROOM).unwrap();
    r.name = Some(name.into());
    r.cover = "http://loremflickr.com/240/240/style?Kelly".into();
    r.description = description.into();
    r.last_message = Some(MessageSeed {
        id: "588723a346006e17f4d82fe3".into(),
        message: message.into(),
        message_type: "text".into(),
        sender: "1485248560558".into(),
        time_ms: 1485251491375,
    });
    c
}

/// The freeze page's example response, literally, from a room seeded with its data.
#[tokio::test]
async fn doc_freeze_example_response_literally() {
    let c = doc_example_config(
        "Test User",
        "Last message before freeze",
        "Test Room",
        "This room has been frozen",
    );
    let sb = start(c).await;
    let a = put(&sb, ADMIN, DOC_ROOM, "{\n  \"status\": 0\n}").await;
    expect(
        &a,
        200,
        json!({
          "RC": 0,
          "RM": "Room frozen successfully",
          "result": {
            "_id": "58871b877390be11d5f1ab30",
            "name": "Test Room",
            "cover": "http://loremflickr.com/240/240/style?Kelly",
            "description": "This room has been frozen",
            "status": 0,
            "lastMessage": {
              "_id": "588723a346006e17f4d82fe3",
              "message": "Last message before freeze",
              "messageType": "text",
              "sender": {
                "_id": "1485248560558",
                "nickname": "Test User",
                "avatarUrl": "http://example.com/avatarUrl",
                "lastLoginTimeMS": 0
              },
              "messageTimeMS": 1485251491375u64
            },
            "members": [
              {
                "_id": "1485248560558",
                "nickname": "Test User",
                "avatarUrl": "http://example.com/avatarUrl",
                "lastLoginTimeMS": 1485764751552u64
              }
            ]
          }
        }),
    );
}

/// The update page's example request and response, literally.
#[tokio::test]
async fn doc_update_example_response_literally() {
    let c = doc_example_config("Test CCDD", "hhhooo", "Old name", "Old description");
    let sb = start(c).await;
    let body = "{\n\"description\": \"Description La La\",\n\"name\": \"Martena\",\n\"cover\": \"http://loremflickr.com/240/240/style?Kelly\"\n}";
    let a = put(&sb, ADMIN, DOC_ROOM, body).await;
    let documented = json!({
      "RC": 0,
      "RM": "OK",
      "result": {
        "_id": "58871b877390be11d5f1ab30",
        "name": "Martena",
        "cover": "http://loremflickr.com/240/240/style?Kelly",
        "description": "Description La La",
        "status": 1,
        "lastMessage": {
          "_id": "588723a346006e17f4d82fe3",
          "message": "hhhooo",
          "messageType": "text",
          "sender": {
            "_id": "1485248560558",
            "nickname": "Test CCDD",
            "avatarUrl": "http://example.com/avatarUrl",
            "lastLoginTimeMS": 0
          },
          "messageTimeMS": 1485251491375u64
        },
        "members": [
          {
            "_id": "1485248560558",
            "nickname": "Test CCDD",
            "avatarUrl": "http://example.com/avatarUrl",
            "lastLoginTimeMS": 1485764751552u64
          }
        ]
      }
    });
    expect(&a, 200, documented.clone());
    // GET answers the same object.
    let g = send(&sb, "GET", &format!("/rooms/{DOC_ROOM}"), ADMIN, None)
        .await
        .unwrap();
    expect(&g, 200, documented);
}

/// `room_extra_fields`: the unverified variant adds the updatable fields to PUT and GET.
#[tokio::test]
async fn room_extra_fields_variant_adds_the_updatable_fields() {
    let sb = start(config()).await;
    let a = put(&sb, ADMIN, DOC_ROOM, r#"{"roomTags":["t"],"opening":0}"#).await;
    assert_room_object(&a.json()["result"]);
    let mut c = config();
    c.room_extra_fields = true;
    let sb = start(c).await;
    let a = put(&sb, ADMIN, DOC_ROOM, r#"{"roomTags":["t"],"opening":0}"#).await;
    let r = &a.json()["result"];
    let mut want = key_set(&ROOM_KEYS);
    want.extend(key_set(&EXTRA_ROOM_KEYS));
    assert_eq!(keys(r), want, "{r}");
    assert_eq!(r["roomTags"], json!(["t"]));
    assert_eq!(r["opening"], 0);
    assert_eq!(r["owner"], "owner-1");
    assert_eq!(r["managers"], json!(["mgr-1"]));
    assert_eq!(
        (r["botMode"].clone(), r["webhook"].clone()),
        (json!(false), json!(""))
    );
    assert_eq!(r["extParams"], "");
    let g = send(&sb, "GET", &format!("/rooms/{DOC_ROOM}"), ADMIN, None)
        .await
        .unwrap()
        .json();
    assert_eq!(keys(&g["result"]), want);
    assert_eq!(&g["result"], r);
}

// ---- docs/api.md, Update a room ----

#[tokio::test]
async fn doc_update_example() {
    let sb = start(config()).await;
    let body = "{\n\"description\": \"Description La La\",\n\"name\": \"Martena\",\n\"cover\": \"http://loremflickr.com/240/240/style?Kelly\"\n}";
    let a = put(&sb, ADMIN, DOC_ROOM, body).await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["RC"], 0);
    assert_eq!(v["RM"], "OK");
    let r = &v["result"];
    assert_room_object(r);
    assert_eq!(r["_id"], DOC_ROOM);
    assert_eq!(r["name"], "Martena");
    assert_eq!(r["cover"], "http://loremflickr.com/240/240/style?Kelly");
    assert_eq!(r["description"], "Description La La");
    assert_eq!(r["status"], 1);
    // Partial: what was not given is unchanged.
    let full = sb.room(DOC_ROOM).unwrap();
    assert_eq!(full["name"], "Martena");
    assert_eq!(full["opening"], 1);
    assert_eq!(full["owner"], "owner-1");
}

#[tokio::test]
async fn doc_update_errors_match_the_page() {
    let sb = start(config()).await;
    let a = put(&sb, &as_user("tok-other"), DOC_ROOM, r#"{"name":"x"}"#).await;
    expect(
        &a,
        403,
        json!({"RC":403,"RM":"Forbidden","error":{"code":"INSUFFICIENT_PERMISSIONS","message":"Only room owner, manager, or platform admin can update room"}}),
    );
    let a = put(&sb, ADMIN, "nope", r#"{"name":"x"}"#).await;
    expect(
        &a,
        404,
        json!({"RC":404,"RM":"Room not found","error":{"code":"ROOM_NOT_FOUND","message":"Room with specified ID does not exist"}}),
    );
    // The API key on a room endpoint: accepted by default, as a platform admin (it can call
    // every API: docs/api.md, The API key on every endpoint); refused when emulating a
    // deployment that takes only the documented key + token, with the page's 401.
    let mut c = config();
    c.api_key_on_rooms = false;
    let refusing = start(c).await;
    assert_eq!(
        put(&refusing, APIKEY, DOC_ROOM, r#"{"status":0}"#)
            .await
            .status,
        401
    );
    assert_eq!(refusing.room_status(DOC_ROOM), Some(1));
    assert_eq!(
        put(&sb, APIKEY, DOC_ROOM, r#"{"status":0}"#).await.status,
        200
    );
    assert_eq!(sb.room_status(DOC_ROOM), Some(0));
    for (sb, h) in [
        (&sb, vec![("IM-Authorization", TOKEN)]),
        (&sb, vec![("IM-CLIENT-KEY", CLIENT_KEY)]),
        (
            &sb,
            vec![("IM-CLIENT-KEY", "wrong"), ("IM-Authorization", TOKEN)],
        ),
        (&refusing, vec![("IM-API-KEY", API_KEY)]),
    ] {
        let a = put(sb, &h, DOC_ROOM, r#"{"name":"x"}"#).await;
        expect(
            &a,
            401,
            json!({"RC":401,"RM":"Unauthorized","error":{"code":"INVALID_TOKEN","message":"Invalid or expired token"}}),
        );
    }
}

#[tokio::test]
async fn permissions_owner_manager_other_admin() {
    let sb = start(config()).await;
    for (who, code) in [
        (as_user("tok-owner"), 200),
        (as_user("tok-mgr"), 200),
        (as_user("tok-other"), 403),
    ] {
        for body in [r#"{"status":0}"#, r#"{"opening":0,"roomTags":["a"]}"#] {
            assert_eq!(
                put(&sb, &who, DOC_ROOM, body).await.status,
                code,
                "{who:?} {body}"
            );
        }
    }
    // The owner runs only their own room.
    assert_eq!(
        put(&sb, &as_user("tok-owner"), "lobby-1", r#"{"status":0}"#)
            .await
            .status,
        403
    );
    // Owner and managers changes need a platform admin, even for the room's owner.
    for body in [r#"{"owner":"mgr-1"}"#, r#"{"managers":["someone-else"]}"#] {
        for who in [as_user("tok-owner"), as_user("tok-mgr")] {
            let a = put(&sb, &who, DOC_ROOM, body).await;
            // The pages document no wording for this case; the update page's shape and RM.
            expect(
                &a,
                403,
                json!({"RC":403,"RM":"Forbidden","error":{"code":"INSUFFICIENT_PERMISSIONS","message":"Only platform admin can change room owner or managers"}}),
            );
        }
    }
    let a = put(
        &sb,
        ADMIN,
        DOC_ROOM,
        r#"{"owner":"aaa","managers":["someone-else"]}"#,
    )
    .await;
    assert_eq!(a.status, 200);
    let r = a.json()["result"].clone();
    assert_room_object(&r);
    let full = sb.room(DOC_ROOM).unwrap();
    assert_eq!(full["owner"], "aaa");
    assert_eq!(full["managers"], json!(["someone-else"]));
    let members: Vec<&str> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["_id"].as_str().unwrap())
        .collect();
    assert!(members.contains(&"aaa") && members.contains(&"someone-else"));
    // The new manager may now update; the old owner may not.
    assert_eq!(
        put(&sb, &as_user("tok-other"), DOC_ROOM, r#"{"name":"n"}"#)
            .await
            .status,
        200
    );
    assert_eq!(
        put(&sb, &as_user("tok-owner"), DOC_ROOM, r#"{"name":"n"}"#)
            .await
            .status,
        403
    );
    // An owner that is no client.
    let a = put(&sb, ADMIN, DOC_ROOM, r#"{"owner":"ghost"}"#).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"]["code"], "CLIENT_NOT_FOUND");
}

#[tokio::test]
async fn every_field_is_type_checked() {
    let sb = start(config()).await;
    let before = sb.room(DOC_ROOM).unwrap();
    for body in [
        r#"{"name":1}"#,
        r#"{"cover":false}"#,
        r#"{"description":["x"]}"#,
        r#"{"roomTags":"a;b"}"#,
        r#"{"roomTags":["a",2]}"#,
        r#"{"webhook":{}}"#,
        r#"{"botMode":"true"}"#,
        r#"{"botMode":1}"#,
        r#"{"extParams":3}"#,
        r#"{"opening":"1"}"#,
        r#"{"opening":2}"#,
        r#"{"owner":7}"#,
        r#"{"managers":"mgr-1"}"#,
        r#"{"status":"0"}"#,
        r#"{"status":-1}"#,
        r#"{"status":0.5}"#,
        r#"{"name":null}"#,
        r#"{"name":"ok","status":true}"#,
        r#"{"status":0"#,
        r#"[{"status":0}]"#,
        r#""status""#,
    ] {
        let a = put(&sb, ADMIN, DOC_ROOM, body).await;
        assert_eq!(a.status, 400, "{body}");
        let v = a.json();
        assert_eq!(v["RC"], 400, "{body}");
        assert_eq!(v["RM"], "Bad Request");
        assert_eq!(v["error"]["code"], "INVALID_PARAMETER");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }
    // Nothing half-applied.
    assert_eq!(sb.room(DOC_ROOM).unwrap(), before);
    // Every field with its right type is accepted; unknown fields are ignored.
    let body = json!({
        "name": "N", "cover": "C", "description": "D", "roomTags": ["t1", "t2"],
        "webhook": "https://hook", "botMode": true, "extParams": "a=1&b=2", "opening": 0,
        "owner": "owner-1", "managers": ["mgr-1", "aaa"], "status": 0, "unknownField": 1
    });
    let a = put(&sb, ADMIN, DOC_ROOM, &body.to_string()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_room_object(&a.json()["result"]);
    // The answer shows the documented object; the sandbox's whole view shows every field.
    let r = sb.room(DOC_ROOM).unwrap();
    for (k, v) in body.as_object().unwrap() {
        if k != "unknownField" {
            assert_eq!(&r[k], v, "{k}");
        }
    }
    assert!(r.get("unknownField").is_none());
}

// ---- docs/api.md, Mute a member and Unmute a member ----

#[tokio::test]
async fn doc_mute_and_unmute_examples() {
    let sb = start(config()).await;
    let a = send(&sb, "POST", "/admin/clients/aaa/mute/demo", APIKEY, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(keys(&v), ["RC", "RM", "result"].map(String::from).into());
    assert_eq!((v["RC"].clone(), v["RM"].clone()), (json!(0), json!("OK")));
    let r = &v["result"];
    let documented = json!({
        "mute": ["demo"], "isRobot": false, "_id": "aaa", "__v": 0, "appID": "SampleApp",
        "description": "", "avatarUrl": "", "nickname": "AAA", "email": "",
        "address": {"address": "::1", "family": "IPv6", "port": 50392}, "userAgent": "",
        "updatedAt": "2020-10-09T15:11:17.153Z", "id": "aaa", "lastLoginTimeMS": 1583726632592u64
    });
    assert_eq!(keys(r), keys(&documented));
    for (k, d) in documented.as_object().unwrap() {
        let same_type = matches!(
            (&r[k], d),
            (Value::String(_), Value::String(_))
                | (Value::Number(_), Value::Number(_))
                | (Value::Bool(_), Value::Bool(_))
                | (Value::Array(_), Value::Array(_))
                | (Value::Object(_), Value::Object(_))
        );
        assert!(same_type, "{k}: {} vs documented {d}", r[k]);
    }
    assert_eq!(keys(&r["address"]), keys(&documented["address"]));
    assert_eq!(r["mute"], json!(["demo"]));
    assert_eq!(
        (r["_id"].clone(), r["id"].clone()),
        (json!("aaa"), json!("aaa"))
    );
    assert_eq!(r["isRobot"], false);
    let ts = r["updatedAt"].as_str().unwrap();
    assert!(
        ts.parse::<jiff::Timestamp>().is_ok() && ts.ends_with('Z'),
        "{ts}"
    );

    // The JavaScript example sends `{}`: same answer, still one entry.
    let a = send(
        &sb,
        "POST",
        "/admin/clients/aaa/mute/demo",
        APIKEY,
        Some("{}"),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["result"]["mute"], json!(["demo"]));

    let a = send(&sb, "DELETE", "/admin/clients/aaa/mute/demo", APIKEY, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!((v["RC"].clone(), v["RM"].clone()), (json!(0), json!("OK")));
    assert_eq!(v["result"]["mute"], json!([]));
    assert_eq!(keys(&v["result"]), keys(&documented));

    let a = send(&sb, "DELETE", "/admin/clients/aaa/mute/demo", APIKEY, None)
        .await
        .unwrap();
    expect(
        &a,
        400,
        json!({"RC":400,"RM":"Room is not muted","error":{"code":"ROOM_NOT_MUTED","message":"The specified room is not in the mute list"}}),
    );
}

#[tokio::test]
async fn doc_mute_errors_match_the_page() {
    let sb = start(config()).await;
    for method in ["POST", "DELETE"] {
        for h in [vec![], vec![("IM-API-KEY", "wrong")], ADMIN.to_vec()] {
            let a = send(&sb, method, "/admin/clients/aaa/mute/demo", &h, None)
                .await
                .unwrap();
            expect(
                &a,
                401,
                json!({"RC":401,"RM":"Unauthorized","error":{"code":"INVALID_API_KEY","message":"Invalid or missing API key"}}),
            );
        }
        let a = send(&sb, method, "/admin/clients/ghost/mute/demo", APIKEY, None)
            .await
            .unwrap();
        expect(
            &a,
            404,
            json!({"RC":404,"RM":"Client not found","error":{"code":"CLIENT_NOT_FOUND","message":"The specified client does not exist"}}),
        );
        let a = send(&sb, method, "/admin/clients/aaa/mute/ghost", APIKEY, None)
            .await
            .unwrap();
        expect(
            &a,
            404,
            json!({"RC":404,"RM":"Room not found","error":{"code":"ROOM_NOT_FOUND","message":"The specified room does not exist"}}),
        );
    }
    assert_eq!(sb.muted_rooms("aaa"), Some(vec![]));
}

#[tokio::test]
async fn mute_is_a_set_in_mute_order() {
    let sb = start(config()).await;
    for room in ["lobby-1", "demo", "lobby-1", "demo", DOC_ROOM] {
        let path = format!("/admin/clients/aaa/mute/{room}");
        assert_eq!(
            send(&sb, "POST", &path, APIKEY, None).await.unwrap().status,
            200
        );
    }
    assert_eq!(
        sb.muted_rooms("aaa").unwrap(),
        vec!["lobby-1", "demo", DOC_ROOM]
    );
    let a = send(&sb, "DELETE", "/admin/clients/aaa/mute/demo", APIKEY, None)
        .await
        .unwrap();
    assert_eq!(a.json()["result"]["mute"], json!(["lobby-1", DOC_ROOM]));
    assert_eq!(sb.muted_rooms("nobody"), None);
    // Seeded mutes.
    let mut c = config();
    c.add_mute("aaa", "demo").add_mute("aaa", "demo");
    let sb2 = start(c).await;
    assert_eq!(sb2.muted_rooms("aaa").unwrap(), vec!["demo"]);
    let a = send(&sb2, "DELETE", "/admin/clients/aaa/mute/demo", APIKEY, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    // Every successful mute counts as applied, the repeated ones too.
    assert_eq!(sb.applied("POST", "/admin/clients/aaa/mute/lobby-1"), 2);
    assert_eq!(sb.applied_op(&Op::unmute("aaa", "demo")), 1);
}

// ---- GET /rooms/{id} (docs/api.md, Get a room) ----

#[tokio::test]
async fn get_room_with_and_without_status() {
    let sb = start(config()).await;
    let a = send(&sb, "GET", &format!("/rooms/{DOC_ROOM}"), ADMIN, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!((v["RC"].clone(), v["RM"].clone()), (json!(0), json!("OK")));
    assert_room_object(&v["result"]);
    assert_eq!(v["result"]["status"], 1);
    let a = send(&sb, "GET", "/rooms/ghost", ADMIN, None).await.unwrap();
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"]["code"], "ROOM_NOT_FOUND");
    // The API key reads as a platform admin (by default): a room that does not exist is 404.
    let a = send(&sb, "GET", "/rooms/ghost", APIKEY, None)
        .await
        .unwrap();
    assert_eq!(a.status, 404);
    let a = send(&sb, "GET", &format!("/rooms/{DOC_ROOM}"), APIKEY, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    // Refused when the API key is: 401 whether the room exists or not.
    let mut c = config();
    c.api_key_on_rooms = false;
    let refusing = start(c).await;
    let a = send(&refusing, "GET", "/rooms/ghost", APIKEY, None)
        .await
        .unwrap();
    assert_eq!(a.status, 401);
    // Reads change nothing.
    assert_eq!(sb.stats().applied_total, 0);

    let mut c = config();
    c.get_room_omits_status = true;
    let sb = start(c).await;
    let v = send(&sb, "GET", &format!("/rooms/{DOC_ROOM}"), ADMIN, None)
        .await
        .unwrap()
        .json();
    assert!(v["result"].get("status").is_none(), "{v}");
    assert_eq!(v["result"]["_id"], DOC_ROOM);
    // The control API still shows it.
    assert_eq!(sb.room(DOC_ROOM).unwrap()["status"], 1);
}

// ---- ids ----

#[tokio::test]
async fn ids_are_single_decoded_segments() {
    let mut c = config();
    // `.` and `..` are checked over a raw socket below: an HTTP client's URL parser
    // resolves `%2E%2E` as a dot segment before sending.
    let odd = [
        "../admin", "a/b", "a?b#c%d", "房間 1", "a b+c", "_sandbox", "..a", "%2F",
    ];
    for id in [".", ".."] {
        c.add_room(id, DEFAULT_OWNER, &[]);
    }
    for id in odd {
        c.add_room(id, DEFAULT_OWNER, &[]);
        c.add_client(format!("u/{id}"));
    }
    let sb = start(c).await;
    for id in odd {
        let op = Op::freeze(id);
        let r = ApiRequest::for_op(&op);
        let a = send(&sb, "PUT", &r.path, ADMIN, Some(r#"{"status":0}"#))
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{id} via {}: {}", r.path, a.text);
        assert_eq!(a.json()["result"]["_id"], id);
        assert_eq!(sb.room_status(id), Some(0), "{id}");
        assert_eq!(sb.applied_op(&op), 1, "{id}");
        let op = Op::mute(format!("u/{id}"), id);
        let r = ApiRequest::for_op(&op);
        let a = send(&sb, "POST", &r.path, APIKEY, None).await.unwrap();
        assert_eq!(a.status, 200, "{}", r.path);
        assert_eq!(sb.muted_rooms(&format!("u/{id}")).unwrap(), vec![id]);
    }
    // Another encoding of the same id is the same room and the same applied counter.
    assert_eq!(
        put(&sb, ADMIN, "%2E%2E%2Fadmin", r#"{"status":1}"#)
            .await
            .status,
        200
    );
    assert_eq!(sb.applied("PUT", "/rooms/..%2Fadmin"), 2);
    assert_eq!(sb.room_status("../admin"), Some(1));
    // A raw extra segment is no route at all.
    for path in [
        "/rooms/a/b",
        "/rooms/",
        "/rooms",
        "/admin/clients/aaa/mute/",
        "/rooms/x/",
    ] {
        let a = send(&sb, "PUT", path, ADMIN, Some(r#"{"status":0}"#))
            .await
            .unwrap();
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(a.json()["error"]["code"], "NOT_FOUND", "{path}");
    }
    // An encoded control-API path is a room id, never the control API.
    let a = put(&sb, ADMIN, "..%2F_sandbox%2Freset", r#"{"status":0}"#).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"]["code"], "ROOM_NOT_FOUND");
    assert_eq!(sb.room_status("a/b"), Some(0), "no reset happened");
    // Dot segments sent as they are on the wire.
    for (raw, id) in [("%2E%2E", ".."), ("%2E", "."), ("%2e%2E", "..")] {
        put_raw(&sb, raw, id).await;
    }
    // Wrong method on a known path.
    let a = send(&sb, "PATCH", "/rooms/lobby-1", ADMIN, Some("{}"))
        .await
        .unwrap();
    assert_eq!(a.status, 404);
}

/// Sends `PUT /rooms/{raw}` byte for byte over a socket and checks it froze room `id`.
async fn put_raw(sb: &SandboxHandle, raw: &str, id: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let before = sb.applied("PUT", &format!("/rooms/{raw}"));
    let mut s = tokio::net::TcpStream::connect(sb.addr()).await.unwrap();
    let body = r#"{"status":0}"#;
    let req = format!(
        "PUT /rooms/{raw} HTTP/1.1\r\nHost: x\r\nIM-CLIENT-KEY: {CLIENT_KEY}\r\n\
         IM-Authorization: {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{raw}: {out}");
    assert!(out.contains(&format!(r#""_id":"{id}""#)), "{raw}: {out}");
    assert_eq!(sb.room_status(id), Some(0));
    assert_eq!(sb.applied("PUT", &format!("/rooms/{raw}")), before + 1);
}

// ---- seeding ----

#[tokio::test]
async fn seed_from_ops_creates_every_named_room_and_client() {
    let mut c = SandboxConfig::new(sandbox_credentials());
    let fields = RoomFields {
        owner: Some("new-owner".into()),
        managers: Some(vec!["m1".into(), "m2".into()]),
        ..Default::default()
    };
    let ops = [
        Op::freeze("r1"),
        Op::unfreeze("r2"),
        Op::update("r3", fields),
        Op::mute("c1", "r4"),
        Op::unmute("c2", "r1"),
    ];
    c.seed_from_ops(&ops);
    let sb = start(c).await;
    for r in ["r1", "r2", "r3", "r4"] {
        let room = sb.room(r).unwrap();
        assert_eq!(room["status"], 1, "{r} active");
        assert_eq!(room["owner"], DEFAULT_OWNER);
    }
    for c in [
        "c1",
        "c2",
        "new-owner",
        "m1",
        "m2",
        DEFAULT_OWNER,
        sandbox::ADMIN_ID,
    ] {
        assert_eq!(sb.muted_rooms(c), Some(vec![]), "{c}");
    }
    // The manifest's update by the admin token succeeds against the seeded state.
    let r = ApiRequest::for_op(&ops[2]);
    let body = r.body.unwrap().to_string();
    assert_eq!(
        send(&sb, "PUT", &r.path, ADMIN, Some(&body))
            .await
            .unwrap()
            .status,
        200
    );
}

// ---- faults ----

/// The binomial bound: |observed - n p| within 5 standard deviations (false alarm < 1e-6,
/// and the draws are seeded, so a pass is stable).
fn assert_rate(what: &str, observed: u64, n: u64, p: f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (observed as f64 - mean).abs() <= 5.0 * sd + 1.0,
        "{what}: {observed} of {n}, expected {mean:.1} ± {:.1}",
        5.0 * sd
    );
}

/// One request's outcome as the client saw it (`STATUS/SHAPE/HEADER`, or `dropped`) and
/// how long it took.
type Outcomes = BTreeMap<(usize, usize), (String, Duration)>;

/// Fires `n` freezes over `rooms` rooms, `concurrency` workers; requests to one room go in
/// order (one worker per room), rooms in parallel. Keyed by (room, k-th request to it).
async fn fire(sb: &SandboxHandle, n: usize, rooms: usize, concurrency: usize) -> Outcomes {
    let client = http();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let client = client.clone();
        let base = sb.base_url();
        tasks.spawn(async move {
            let mut res = Vec::new();
            for room in (w..rooms).step_by(concurrency) {
                for k in 0..n / rooms {
                    let t = Instant::now();
                    let r = client
                        .put(format!("{base}/rooms/room-{room}"))
                        .header("IM-CLIENT-KEY", CLIENT_KEY)
                        .header("IM-Authorization", TOKEN)
                        .body(r#"{"status":0}"#)
                        .send()
                        .await;
                    let outcome = match r {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            let h = r.headers().contains_key("retry-after");
                            let body = r.text().await.unwrap_or_default();
                            let shape = match serde_json::from_str::<Value>(&body) {
                                Ok(v) if v.get("RC").is_some() => "rc",
                                Ok(v) if v.get("retryAfter").is_some() => "flat",
                                Ok(_) => "json",
                                Err(_) => "html",
                            };
                            format!("{s}/{shape}/{}", if h { "header" } else { "-" })
                        }
                        Err(_) => "dropped".to_owned(),
                    };
                    res.push(((room, k), (outcome, t.elapsed())));
                }
            }
            res
        });
    }
    let mut out = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        out.extend(r.unwrap());
    }
    out
}

/// The server's view: per request, the sequence of (fault, status) in the order they came.
type ServerOutcomes = BTreeMap<String, Vec<(Option<String>, Option<u16>)>>;

fn server_outcomes(sb: &SandboxHandle) -> ServerOutcomes {
    let mut m: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for e in sb.log(usize::MAX) {
        m.entry(e.request).or_default().push((e.fault, e.status));
    }
    m
}

fn fault_config(seed: u64, rooms: usize, slow: Duration) -> SandboxConfig {
    let mut c = SandboxConfig::new(sandbox_credentials());
    for i in 0..rooms {
        c.add_room(format!("room-{i}"), DEFAULT_OWNER, &[]);
    }
    c.fault_seed = seed;
    c.faults = FaultRates {
        too_many_requests: 0.10,
        server_error: 0.15,
        drop_before: 0.05,
        drop_after: 0.05,
        slow: 0.05,
    };
    c.slow_duration = slow;
    c
}

#[tokio::test]
async fn faults_happen_at_their_seeded_rates() {
    const N: usize = 1200;
    let slow = Duration::from_millis(300);
    let sb = start(fault_config(42, 300, slow)).await;
    let out = fire(&sb, N, 300, 24).await;
    let count = |pred: &dyn Fn(&str) -> bool| out.values().filter(|(o, _)| pred(o)).count() as u64;
    let n = N as u64;
    let f = |k| sb.faults(k);

    // What the client saw agrees with what the server says it injected...
    let a429 = count(&|o| o == "429/rc/header");
    let b429 = count(&|o| o == "429/flat/-");
    assert_eq!(a429, f(Fault::TooManyWithHeader));
    assert_eq!(b429, f(Fault::TooManyFlat));
    assert_eq!(count(&|o| o == "500/rc/-"), f(Fault::Status500));
    assert_eq!(count(&|o| o == "502/html/-"), f(Fault::Status502));
    assert_eq!(count(&|o| o == "503/html/-"), f(Fault::Status503));
    assert_eq!(
        count(&|o| o == "dropped"),
        f(Fault::DropBefore) + f(Fault::DropAfter)
    );
    let ok = count(&|o| o == "200/rc/-");
    assert_eq!(ok, n - sb.faults_total() + f(Fault::Slow));
    // Every slow answer took at least the slow duration (others may too, on a busy machine).
    let took_long = out
        .values()
        .filter(|(o, t)| o == "200/rc/-" && *t >= slow)
        .count() as u64;
    assert!(
        took_long >= f(Fault::Slow),
        "{took_long} < {}",
        f(Fault::Slow)
    );
    // ...and each kind happens at its rate.
    assert_rate("429", a429 + b429, n, 0.10);
    assert_rate("429 with header", a429, n, 0.05);
    let s5xx = f(Fault::Status500) + f(Fault::Status502) + f(Fault::Status503);
    assert_rate("5xx", s5xx, n, 0.15);
    for k in [Fault::Status500, Fault::Status502, Fault::Status503] {
        assert_rate(k.as_str(), f(k), n, 0.05);
    }
    assert_rate("drop before", f(Fault::DropBefore), n, 0.05);
    assert_rate("drop after", f(Fault::DropAfter), n, 0.05);
    assert_rate("slow", f(Fault::Slow), n, 0.05);
    // Drop-after and slow apply the change; drop-before and the error answers do not.
    let st = sb.stats();
    assert_eq!(st.applied_total, ok + f(Fault::DropAfter));
    assert_eq!(
        st.responses["dropped"],
        f(Fault::DropBefore) + f(Fault::DropAfter)
    );
    assert_eq!(st.requests["PUT /rooms/{id}"], n);
    for k in Fault::ALL {
        assert_eq!(st.faults[k.as_str()], f(k));
    }
}

#[tokio::test]
async fn faults_replay_with_the_same_seed_whatever_the_interleaving() {
    const N: usize = 600;
    let slow = Duration::from_millis(50);
    let a = start(fault_config(7, 100, slow)).await;
    let b = start(fault_config(7, 100, slow)).await;
    let c = start(fault_config(8, 100, slow)).await;
    let (ra, rb, rc) = tokio::join!(
        fire(&a, N, 100, 20),
        fire(&b, N, 100, 3),
        fire(&c, N, 100, 20)
    );
    let seen = |o: &Outcomes| -> Vec<String> { o.values().map(|(s, _)| s.clone()).collect() };
    assert_eq!(ra.len(), N);
    assert_eq!(
        seen(&ra),
        seen(&rb),
        "same seed, other concurrency: same answers"
    );
    assert_eq!(
        server_outcomes(&a),
        server_outcomes(&b),
        "and the same faults"
    );
    assert_eq!(server_outcomes(&a).len(), 100);
    assert_ne!(seen(&ra), seen(&rc), "another seed: other faults");
    assert_ne!(server_outcomes(&a), server_outcomes(&c));
    // A reset replays from the start too.
    let before = server_outcomes(&a);
    a.reset();
    let again = fire(&a, N, 100, 7).await;
    assert_eq!(seen(&ra), seen(&again));
    assert_eq!(before, server_outcomes(&a));
}

#[tokio::test]
async fn drop_before_changes_nothing_and_drop_after_applies() {
    for (rates, applied) in [
        (
            FaultRates {
                drop_before: 1.0,
                ..Default::default()
            },
            false,
        ),
        (
            FaultRates {
                drop_after: 1.0,
                ..Default::default()
            },
            true,
        ),
    ] {
        let mut c = config();
        c.faults = rates;
        let sb = start(c).await;
        let e = send(&sb, "PUT", "/rooms/lobby-1", ADMIN, Some(r#"{"status":0}"#))
            .await
            .err()
            .expect("no answer");
        assert!(!e.is_timeout() && !e.is_status(), "{e:?}");
        let e = send(&sb, "POST", "/admin/clients/aaa/mute/demo", APIKEY, None).await;
        assert!(e.is_err());
        assert_eq!(sb.room_status("lobby-1"), Some(if applied { 0 } else { 1 }));
        assert_eq!(sb.muted_rooms("aaa").unwrap().len(), usize::from(applied));
        assert_eq!(sb.applied("PUT", "/rooms/lobby-1"), u64::from(applied));
        let log = sb.log(10);
        assert_eq!(log.len(), 2);
        assert!(
            log.iter()
                .all(|e| e.status.is_none() && e.applied == applied)
        );
    }
}

#[tokio::test]
async fn latency_and_jitter_delay_answers() {
    let mut c = config();
    c.latency = Duration::from_millis(40);
    c.latency_jitter = Duration::from_millis(20);
    let sb = start(c).await;
    let client = http();
    for _ in 0..5 {
        let t = Instant::now();
        let a = send_with(&client, &sb, "GET", "/rooms/demo", ADMIN, None)
            .await
            .unwrap();
        let took = t.elapsed();
        assert_eq!(a.status, 200);
        assert!(took >= Duration::from_millis(40), "{took:?}");
    }
    assert_eq!(sb.stats().delayed, 5);
}

// ---- rate limit ----

#[tokio::test]
async fn rate_limit_per_credential_answers_the_documented_429() {
    let mut c = config();
    c.rate_limit = Some("5/min".parse().unwrap());
    let sb = start(c).await;
    let client = http();
    for i in 0..5 {
        let a = send_with(
            &client,
            &sb,
            "POST",
            "/admin/clients/aaa/mute/demo",
            APIKEY,
            None,
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200, "request {i}");
    }
    let a = send_with(
        &client,
        &sb,
        "POST",
        "/admin/clients/aaa/mute/demo",
        APIKEY,
        None,
    )
    .await
    .unwrap();
    assert_eq!(a.status, 429);
    assert!(a.headers.get("retry-after").is_none());
    let v = a.json();
    assert_eq!(
        keys(&v),
        ["error", "message", "retryAfter"].map(String::from).into()
    );
    assert_eq!(v["error"], "RATE_LIMIT_EXCEEDED");
    // The seconds until the minute's window resets (it opened with the first request).
    let secs = v["retryAfter"].as_u64().unwrap();
    assert!((50..=60).contains(&secs), "{secs}");
    // The client token has its own budget.
    let a = send_with(&client, &sb, "GET", "/rooms/demo", ADMIN, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(sb.stats().rate_limited, 1);
    // Refused requests change nothing.
    assert_eq!(sb.applied("POST", "/admin/clients/aaa/mute/demo"), 5);
}

// ---- control API ----

#[tokio::test]
async fn control_api_shows_state_counts_log_and_resets() {
    let sb = start(config()).await;
    put(&sb, ADMIN, "lobby-1", r#"{"status":0}"#).await;
    put(&sb, ADMIN, "lobby-1", r#"{"status":0}"#).await;
    put(&sb, &as_user("tok-other"), "lobby-1", r#"{"status":1}"#).await;
    send(&sb, "POST", "/admin/clients/aaa/mute/demo", APIKEY, None)
        .await
        .unwrap();
    let get = |p: &str| {
        let url = format!("{}{p}", sb.base_url());
        async move {
            let r = http().get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, room) = get("/_sandbox/rooms/lobby-1").await;
    assert_eq!((s, room["status"].clone()), (200, json!(0)));
    let (s, _) = get("/_sandbox/rooms/nope").await;
    assert_eq!(s, 404);
    let (s, client) = get("/_sandbox/clients/aaa").await;
    assert_eq!((s, client["mute"].clone()), (200, json!(["demo"])));
    let (_, stats) = get("/_sandbox/stats").await;
    assert_eq!(stats["requests"]["PUT /rooms/{id}"], 3);
    assert_eq!(
        stats["requests"]["POST /admin/clients/{uid}/mute/{room}"],
        1
    );
    assert_eq!(stats["responses"]["200"], 3);
    assert_eq!(stats["responses"]["403"], 1);
    assert_eq!(stats["applied"]["PUT /rooms/lobby-1"], 2);
    assert_eq!(stats["applied_total"], 3);
    assert_eq!(stats["faults"]["drop_after"], 0);
    let (_, applied) = get("/_sandbox/applied?method=put&path=/rooms/lobby-1").await;
    assert_eq!(applied["applied"], 2);
    let (_, log) = get("/_sandbox/log?limit=2").await;
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["request"], "PUT /rooms/lobby-1");
    assert_eq!(log[0]["status"], 403);
    assert_eq!(log[1]["request"], "POST /admin/clients/aaa/mute/demo");
    assert_eq!(log[1]["applied"], true);
    assert_eq!(
        (log[0]["kind"].clone(), log[1]["kind"].clone()),
        (json!("unfreeze"), json!("mute"))
    );
    assert!(!serde_json::to_string(log).unwrap().contains(TOKEN));
    // Per kind: two freezes applied, the unfreeze refused, nothing else on that room.
    assert_eq!(
        stats["ops"]["freeze /rooms/lobby-1"],
        json!({"received": 2, "applied": 2})
    );
    assert_eq!(
        stats["ops"]["unfreeze /rooms/lobby-1"],
        json!({"received": 1, "applied": 0})
    );
    assert!(stats["ops"].get("update /rooms/lobby-1").is_none());
    let (_, a) = get("/_sandbox/applied?kind=freeze&path=/rooms/lobby-1").await;
    assert_eq!(
        a,
        json!({"kind":"freeze","target":"/rooms/lobby-1","received":2,"applied":2})
    );
    let (_, a) = get("/_sandbox/applied?kind=UNFREEZE&path=/rooms/lobby-%31").await;
    assert_eq!(
        (a["received"].clone(), a["applied"].clone()),
        (json!(1), json!(0))
    );
    let (s, _) = get("/_sandbox/applied?kind=explode&path=/rooms/lobby-1").await;
    assert_eq!(s, 400);

    let r = http()
        .post(format!("{}/_sandbox/reset", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sb.room_status("lobby-1"), Some(1));
    assert_eq!(sb.muted_rooms("aaa"), Some(vec![]));
    assert_eq!(sb.stats().applied_total, 0);
    assert_eq!(sb.requests_total(), 0);
    assert!(sb.log(100).is_empty());
}

#[tokio::test]
async fn the_request_log_is_bounded() {
    let mut c = config();
    c.log_capacity = 10;
    let sb = start(c).await;
    let client = http();
    for _ in 0..50 {
        send_with(&client, &sb, "GET", "/rooms/demo", ADMIN, None)
            .await
            .unwrap();
    }
    let log = sb.log(1000);
    assert_eq!(log.len(), 10);
    assert_eq!(log.last().unwrap().seq, 50);
    assert_eq!(sb.stats().requests["GET /rooms/{id}"], 50);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sb = start(config()).await;
    let addr = sb.addr();
    assert_eq!(
        send(&sb, "GET", "/rooms/demo", ADMIN, None)
            .await
            .unwrap()
            .status,
        200
    );
    sb.shutdown().await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_cuts_answers_held_back_after_the_grace() {
    let mut c = config();
    c.faults.slow = 1.0;
    c.slow_duration = Duration::from_secs(3600);
    c.shutdown_grace = Duration::from_millis(100);
    let sb = start(c).await;
    let url = format!("{}/rooms/demo", sb.base_url());
    let pending = tokio::spawn(
        http()
            .get(url)
            .header("IM-CLIENT-KEY", CLIENT_KEY)
            .header("IM-Authorization", TOKEN)
            .send(),
    );
    // Wait until the server holds the answer back (the log records it before the wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    while sb.log(1).is_empty() {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(Duration::from_secs(10), sb.shutdown())
        .await
        .expect("shutdown is bounded by the grace")
        .unwrap();
    assert!(pending.await.unwrap().is_err(), "the held answer was cut");
}

#[test]
fn generated_credentials_differ_and_are_not_printed_by_debug() {
    let a = SandboxCredentials::generate();
    let b = SandboxCredentials::generate();
    assert_ne!(a, b);
    assert!(a.token.len() >= 16 && a.api_key.len() >= 16 && a.client_key.len() >= 16);
    assert!(!format!("{a:?}").contains(&a.token));
}

#[test]
fn cli_rejects_impossible_fault_rates() {
    crate::util::bin()
        .args(["sandbox", "--listen", "127.0.0.1:0", "--fault-5xx", "0.7"])
        .args(["--drop-after", "0.5"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("at most 1"));
    crate::util::bin()
        .args(["sandbox", "--help"])
        .assert()
        .success()
        .stdout(predicates::str::contains("--fault-429"))
        .stdout(predicates::str::contains("--rate-limit"))
        .stdout(predicates::str::contains("/_sandbox/stats"));
}

#[tokio::test]
async fn injected_429_and_5xx_bodies() {
    let mut c = config();
    c.faults.too_many_requests = 1.0;
    c.fault_retry_after_secs = 7;
    let sb = start(c).await;
    let client = http();
    let (mut header_shape, mut flat_shape) = (None, None);
    for _ in 0..64 {
        let a = send_with(&client, &sb, "GET", "/rooms/demo", ADMIN, None)
            .await
            .unwrap();
        assert_eq!(a.status, 429);
        match a.headers.get("retry-after") {
            Some(h) => header_shape = Some((h.to_str().unwrap().to_owned(), a.json())),
            None => flat_shape = Some(a.json()),
        }
    }
    let (h, body) = header_shape.expect("a 429 with Retry-After");
    assert_eq!(h, "7");
    assert_eq!(
        body,
        json!({"RC":429,"RM":"Too Many Requests","error":{"code":"RATE_LIMIT_EXCEEDED","message":"Too many requests, please try again later"}})
    );
    assert_eq!(
        flat_shape.expect("a flat 429"),
        json!({"error":"RATE_LIMIT_EXCEEDED","message":"Too many requests, please try again later","retryAfter":7})
    );

    let mut c = config();
    c.faults.server_error = 1.0;
    let sb = start(c).await;
    let mut seen = BTreeSet::new();
    for _ in 0..64 {
        let a = send_with(&client, &sb, "GET", "/rooms/demo", ADMIN, None)
            .await
            .unwrap();
        let ct = a.headers["content-type"].to_str().unwrap().to_owned();
        match a.status {
            500 => {
                assert!(ct.starts_with("application/json"));
                assert_eq!(a.json()["RC"], 500);
                assert_eq!(a.json()["error"]["code"], "INTERNAL_ERROR");
            }
            502 | 503 => {
                assert!(ct.starts_with("text/html"), "{ct}");
                assert!(serde_json::from_str::<Value>(&a.text).is_err());
                assert!(a.text.contains(&format!("<title>{}", a.status)));
            }
            s => panic!("unexpected {s}"),
        }
        seen.insert(a.status);
    }
    assert_eq!(seen, [500, 502, 503].into());
}

#[tokio::test]
async fn slow_answers_outlast_the_client_timeout_but_apply() {
    let mut c = config();
    c.faults.slow = 1.0;
    c.slow_duration = Duration::from_secs(5);
    let sb = start(c).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let e = send_with(
        &client,
        &sb,
        "PUT",
        "/rooms/lobby-1",
        ADMIN,
        Some(r#"{"status":0}"#),
    )
    .await
    .err()
    .expect("the client gives up first");
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(sb.room_status("lobby-1"), Some(0));
    assert_eq!(sb.applied("PUT", "/rooms/lobby-1"), 1);
    assert_eq!(sb.faults(Fault::Slow), 1);
}

/// `imkit-batch sandbox` as a process: prints its URL (and made-up credentials only when it
/// made them up), accepts exactly the environment's credentials, stops on SIGTERM.
#[test]
fn sandbox_command_prints_url_and_credentials_and_stops_on_sigterm() {
    use std::process::Command;

    let run =
        |env: &[(&str, &str)]| sandbox_cmd(&["--listen", "127.0.0.1:0", "--room", "r1:o1"], env);
    let field = line_value;
    let get = |base: &str, key: &str, token: &str| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            http()
                .get(format!("{base}/rooms/r1"))
                .header("IM-CLIENT-KEY", key)
                .header("IM-Authorization", token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };

    // Made-up credentials: printed once, and they work.
    let (mut child, lines) = run(&[]);
    let base = field(&lines, "IMKIT sandbox listening on ").unwrap();
    let key = field(&lines, "export IMKIT_CLIENT_KEY=").unwrap();
    let token = field(&lines, "export IMKIT_TOKEN=").unwrap();
    assert!(field(&lines, "export IMKIT_API_KEY=").is_some());
    assert_eq!(get(&base, &key, &token), 200);
    assert_eq!(get(&base, &key, "wrong"), 401);
    child.kill().unwrap();
    child.wait().unwrap();

    // Credentials from the environment: exactly those, never printed.
    let env = [
        ("IMKIT_CLIENT_KEY", "env-ck"),
        ("IMKIT_TOKEN", "env-tok"),
        ("IMKIT_API_KEY", "env-ak"),
    ];
    let (mut child, lines) = run(&env);
    let base = field(&lines, "IMKIT sandbox listening on ").unwrap();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("env-tok") || l.contains("export"))
    );
    assert_eq!(get(&base, "env-ck", "env-tok"), 200);
    assert_eq!(get(&base, "env-ck", "env-tok2"), 401);
    // The shell's built-in `kill`: present wherever `sh` is.
    let term = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful stop on SIGTERM");
}

/// Starts `imkit-batch sandbox ARGS` with only `env` of the three credentials set; returns the
/// child and its stdout lines up to "Press Ctrl-C".
pub(super) fn sandbox_cmd(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, Vec<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("imkit-batch"));
    cmd.arg("sandbox")
        .args(args)
        .env_remove("IMKIT_CLIENT_KEY")
        .env_remove("IMKIT_TOKEN")
        .env_remove("IMKIT_API_KEY")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = Vec::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).unwrap() > 0,
            "stdout closed: {lines:?}"
        );
        let done = l.starts_with("Press Ctrl-C");
        lines.push(l.trim().to_owned());
        if done {
            break;
        }
    }
    (child, lines)
}

pub(super) fn line_value(lines: &[String], prefix: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
}

/// A blocking request to a sandbox child process: (status, body).
pub(super) fn blocking_send(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = http().request(m, url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.text().await.unwrap())
    })
}

/// Only some credentials in the environment: the real one is accepted and never printed;
/// only the made-up ones are.
#[test]
fn sandbox_command_prints_only_the_made_up_credentials() {
    const REAL: &str = "MY-REAL-PROD-TOKEN";
    let (mut child, lines) = sandbox_cmd(
        &["--listen", "127.0.0.1:0", "--room", "r1:o1"],
        &[("IMKIT_TOKEN", REAL)],
    );
    let all = lines.join("\n");
    assert!(!all.contains(REAL), "{all}");
    assert_eq!(line_value(&lines, "export IMKIT_TOKEN="), None, "{all}");
    let base = line_value(&lines, "IMKIT sandbox listening on ").unwrap();
    let key = line_value(&lines, "export IMKIT_CLIENT_KEY=").unwrap();
    let api_key = line_value(&lines, "export IMKIT_API_KEY=").unwrap();
    let h = [("IM-CLIENT-KEY", key.as_str()), ("IM-Authorization", REAL)];
    assert_eq!(blocking_send("GET", &format!("{base}/rooms/r1"), &h).0, 200);
    let h = [("IM-API-KEY", api_key.as_str())];
    let (s, _) = blocking_send("POST", &format!("{base}/admin/clients/o1/mute/r1"), &h);
    assert_eq!(s, 200);
    child.kill().unwrap();
    child.wait().unwrap();

    // Two of three set: only the third is printed.
    let (mut child, lines) = sandbox_cmd(
        &["--listen", "127.0.0.1:0"],
        &[("IMKIT_CLIENT_KEY", "env-ck"), ("IMKIT_API_KEY", "env-ak")],
    );
    let exports: Vec<&String> = lines.iter().filter(|l| l.starts_with("export ")).collect();
    assert_eq!(exports.len(), 2, "{lines:?}");
    assert!(exports[0].starts_with("export IMKIT_BASE_URL="));
    assert!(exports[1].starts_with("export IMKIT_TOKEN="));
    assert!(!lines.join("\n").contains("env-ck") && !lines.join("\n").contains("env-ak"));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `flat_401`: 401s in the flat shape of docs/api.md (Three shapes of 401), on every endpoint;
/// nothing else changes shape.
#[tokio::test]
async fn flat_401_answers_the_documented_flat_shape() {
    let mut c = config();
    c.flat_401 = true;
    let sb = start(c).await;
    for method in ["POST", "DELETE"] {
        for h in [vec![], vec![("IM-API-KEY", "wrong")]] {
            let a = send(&sb, method, "/admin/clients/aaa/mute/demo", &h, None)
                .await
                .unwrap();
            expect(
                &a,
                401,
                json!({"error":"INVALID_API_KEY","message":"The provided API key is invalid or expired"}),
            );
        }
    }
    let bad = [("IM-CLIENT-KEY", CLIENT_KEY), ("IM-Authorization", "nope")];
    for method in ["PUT", "GET"] {
        let body = (method == "PUT").then_some(r#"{"status":0}"#);
        let a = send(&sb, method, &format!("/rooms/{DOC_ROOM}"), &bad, body)
            .await
            .unwrap();
        expect(
            &a,
            401,
            json!({"error":"INVALID_TOKEN","message":"Invalid or expired token"}),
        );
    }
    // Other errors keep the envelope.
    let a = put(&sb, ADMIN, "ghost", r#"{"status":0}"#).await;
    assert_eq!(a.json()["RC"], 404);
    assert_eq!(sb.stats().applied_total, 0);
}

/// A freeze, an unfreeze and updates of one room count apart, received and applied, so a test
/// can assert "this freeze applied exactly once"; unknown routes are logged and counted.
#[tokio::test]
async fn counts_are_kept_per_kind_and_target() {
    let sb = start(config()).await;
    for body in [
        r#"{"status":0}"#,
        r#"{"status":1}"#,
        r#"{"name":"x"}"#,
        r#"{"status":0,"name":"y"}"#,
        r#"{"status":1.0}"#,
        "not json",
    ] {
        put(&sb, ADMIN, "lobby-1", body).await;
    }
    send(&sb, "GET", "/rooms/lobby-1", ADMIN, None)
        .await
        .unwrap();
    send(&sb, "POST", "/admin/clients/aaa/mute/lobby-1", APIKEY, None)
        .await
        .unwrap();
    send(
        &sb,
        "DELETE",
        "/admin/clients/aaa/mute/lobby-1",
        APIKEY,
        None,
    )
    .await
    .unwrap();
    send(
        &sb,
        "DELETE",
        "/admin/clients/aaa/mute/lobby-1",
        APIKEY,
        None,
    )
    .await
    .unwrap();
    let c = |k: OpKind, p: &str| {
        let c = sb.op_counts(k, p);
        (c.received, c.applied)
    };
    assert_eq!(c(OpKind::Freeze, "/rooms/lobby-1"), (1, 1));
    assert_eq!(c(OpKind::Unfreeze, "/rooms/lobby-1"), (2, 2));
    // The two bodies that are not a bare status, and the malformed one (400).
    assert_eq!(c(OpKind::Update, "/rooms/lobby-1"), (3, 2));
    assert_eq!(c(OpKind::Get, "/rooms/lobby-1"), (1, 0));
    assert_eq!(c(OpKind::Mute, "/admin/clients/aaa/mute/lobby-1"), (1, 1));
    // The second unmute answers ROOM_NOT_MUTED: received, not applied.
    assert_eq!(c(OpKind::Unmute, "/admin/clients/aaa/mute/lobby-1"), (2, 1));
    assert_eq!(sb.applied_op(&Op::freeze("lobby-1")), 1);
    assert_eq!(sb.applied_op(&Op::unfreeze("lobby-1")), 2);
    assert_eq!(sb.op_counts_of(&Op::unmute("aaa", "lobby-1")).received, 2);
    // The per-method count still sums every PUT kind.
    assert_eq!(sb.applied("PUT", "/rooms/lobby-1"), 5);
    let kinds: Vec<OpKind> = sb.log(100).iter().map(|e| e.kind).collect();
    use OpKind::*;
    assert_eq!(
        kinds,
        [
            Freeze, Unfreeze, Update, Update, Unfreeze, Update, Get, Mute, Unmute, Unmute
        ]
    );

    // An unknown route: answered 404, logged with its kind, counted in the responses.
    let a = send(&sb, "PATCH", "/rooms/lobby-1", ADMIN, Some("{}"))
        .await
        .unwrap();
    expect(
        &a,
        404,
        json!({"RC":404,"RM":"Not Found","error":{"code":"NOT_FOUND","message":"Cannot PATCH /rooms/lobby-1"}}),
    );
    let last = sb.log(1).pop().unwrap();
    assert_eq!(
        (last.kind, last.request.as_str(), last.status, last.applied),
        (OpKind::Unknown, "PATCH /rooms/lobby-1", Some(404), false)
    );
    let st = sb.stats();
    assert_eq!(st.requests["unknown_route"], 1);
    assert_eq!(st.responses["404"], 1);
}

/// Faults count as received and, when they apply nothing, not as applied.
#[tokio::test]
async fn kind_counts_under_faults() {
    let mut c = fault_config(5, 1, Duration::from_secs(60));
    c.faults = FaultRates {
        drop_before: 0.5,
        drop_after: 0.5,
        ..Default::default()
    };
    let sb = start(c).await;
    let n = 40;
    for _ in 0..n {
        let r = send(&sb, "PUT", "/rooms/room-0", ADMIN, Some(r#"{"status":0}"#)).await;
        assert!(r.is_err(), "every request is dropped");
    }
    let counts = sb.op_counts(OpKind::Freeze, "/rooms/room-0");
    assert_eq!(counts.received, n);
    assert_eq!(counts.applied, sb.faults(Fault::DropAfter));
    assert_eq!(
        sb.faults(Fault::DropBefore) + sb.faults(Fault::DropAfter),
        n
    );
    assert!(counts.applied > 0 && counts.applied < n, "{counts:?}");
}

/// The limit counts per credential that authenticated the request: with `api_key_on_rooms`,
/// room requests by API key spend the API key's budget, not a token's; requests no credential
/// authenticates spend no one's (they are answered 401, never 429).
#[tokio::test]
async fn rate_limit_buckets_follow_the_authenticating_credential() {
    let mut c = config();
    c.rate_limit = Some("5/min".parse().unwrap());
    c.api_key_on_rooms = true;
    let sb = start(c).await;
    let client = http();
    let status =
        |method: &'static str, path: &'static str, h: &'static [(&'static str, &'static str)]| {
            let client = client.clone();
            let sb = &sb;
            async move {
                send_with(
                    &client,
                    sb,
                    method,
                    path,
                    h,
                    (method == "PUT").then_some(r#"{"name":"n"}"#),
                )
                .await
                .unwrap()
                .status
            }
        };
    // Unauthenticated requests, as many as the budget and more: all 401.
    const NO_TOKEN: &[(&str, &str)] = &[("IM-CLIENT-KEY", CLIENT_KEY), ("IM-Authorization", "bad")];
    const NO_KEY: &[(&str, &str)] = &[("IM-API-KEY", "bad")];
    for _ in 0..8 {
        assert_eq!(status("PUT", "/rooms/lobby-1", NO_TOKEN).await, 401);
        assert_eq!(
            status("POST", "/admin/clients/aaa/mute/demo", NO_KEY).await,
            401
        );
    }
    // The API key: 3 mutes and 2 room updates spend its 5.
    for _ in 0..3 {
        assert_eq!(
            status("POST", "/admin/clients/aaa/mute/demo", APIKEY).await,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(status("PUT", "/rooms/lobby-1", APIKEY).await, 200);
    }
    assert_eq!(status("PUT", "/rooms/lobby-1", APIKEY).await, 429);
    assert_eq!(
        status("DELETE", "/admin/clients/aaa/mute/demo", APIKEY).await,
        429
    );
    // The admin token and a user's token each have a budget of their own.
    const OWNER: &[(&str, &str)] = &[
        ("IM-CLIENT-KEY", CLIENT_KEY),
        ("IM-Authorization", "tok-owner"),
    ];
    for _ in 0..5 {
        assert_eq!(status("PUT", "/rooms/lobby-1", ADMIN).await, 200);
        assert_eq!(status("GET", "/rooms/lobby-1", OWNER).await, 200);
    }
    assert_eq!(status("GET", "/rooms/lobby-1", ADMIN).await, 429);
    assert_eq!(status("GET", "/rooms/lobby-1", OWNER).await, 429);
    // Still 401 for the unauthenticated, not 429.
    assert_eq!(status("PUT", "/rooms/lobby-1", NO_TOKEN).await, 401);
    assert_eq!(sb.stats().rate_limited, 4);
}

/// At most N of a burst pass in one window (a token bucket with burst N let 2N through).
#[tokio::test]
async fn rate_limit_lets_at_most_n_through_in_a_window() {
    let mut c = config();
    c.rate_limit = Some("60/min".parse().unwrap());
    let sb = start(c).await;
    let client = http();
    let mut ok = 0;
    for _ in 0..150 {
        let a = send_with(&client, &sb, "GET", "/rooms/demo", ADMIN, None)
            .await
            .unwrap();
        match a.status {
            200 => ok += 1,
            429 => {
                let secs = a.json()["retryAfter"].as_u64().unwrap();
                assert!((1..=60).contains(&secs), "{secs}");
            }
            s => panic!("{s}"),
        }
    }
    assert_eq!(ok, 60);
    assert_eq!(sb.stats().rate_limited, 90);
}

/// Jitter: each request's served delay (in the log) lies in latency..=latency+jitter, varies,
/// and replays with the seed; another seed draws other delays.
#[tokio::test]
async fn jitter_varies_within_its_bound_and_replays_with_the_seed() {
    let latency = Duration::from_millis(2);
    let jitter = Duration::from_millis(10);
    let delays = |seed: u64| async move {
        let mut c = config();
        c.latency = latency;
        c.latency_jitter = jitter;
        c.fault_seed = seed;
        let sb = start(c).await;
        let client = http();
        for i in 0..20 {
            let t = Instant::now();
            let a = send_with(&client, &sb, "GET", "/rooms/demo", ADMIN, None)
                .await
                .unwrap();
            assert_eq!(a.status, 200);
            let served = Duration::from_micros(sb.log(1)[0].delay_us);
            assert!(
                t.elapsed() >= served,
                "request {i}: {:?} < {served:?}",
                t.elapsed()
            );
        }
        let d: Vec<Duration> = sb
            .log(100)
            .iter()
            .map(|e| Duration::from_micros(e.delay_us))
            .collect();
        assert_eq!(sb.stats().delayed, 20);
        d
    };
    let a = delays(11).await;
    assert_eq!(a.len(), 20);
    assert!(
        a.iter().all(|d| *d >= latency && *d <= latency + jitter),
        "{a:?}"
    );
    let distinct: BTreeSet<&Duration> = a.iter().collect();
    assert!(distinct.len() >= 15, "jitter varies: {a:?}");
    let spread = *a.iter().max().unwrap() - *a.iter().min().unwrap();
    assert!(spread >= jitter / 2, "spread {spread:?} of {a:?}");
    assert_eq!(delays(11).await, a, "the same seed replays the same delays");
    assert_ne!(delays(12).await, a);
}

/// The mute page: "The API supports limit and skip parameters, but they do not affect the
/// mute functionality itself". Replayed with `?limit=10&skip=100` on mute and unmute.
#[tokio::test]
async fn mute_and_unmute_with_limit_and_skip_parameters() {
    let sb = start(config()).await;
    let q = "?limit=10&skip=100";
    let a = send(
        &sb,
        "POST",
        &format!("/admin/clients/aaa/mute/demo{q}"),
        APIKEY,
        None,
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["result"]["mute"], json!(["demo"]));
    let a = send(
        &sb,
        "DELETE",
        &format!("/admin/clients/aaa/mute/demo{q}"),
        APIKEY,
        None,
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!((v["RC"].clone(), v["RM"].clone()), (json!(0), json!("OK")));
    assert_eq!(v["result"]["mute"], json!([]));
    assert_eq!(v["result"]["_id"], "aaa");
    let a = send(
        &sb,
        "DELETE",
        &format!("/admin/clients/aaa/mute/demo{q}"),
        APIKEY,
        None,
    )
    .await
    .unwrap();
    expect(
        &a,
        400,
        json!({"RC":400,"RM":"Room is not muted","error":{"code":"ROOM_NOT_MUTED","message":"The specified room is not in the mute list"}}),
    );
    // Counted under the path without its query, as one mute and two unmutes.
    assert_eq!(sb.applied("POST", "/admin/clients/aaa/mute/demo"), 1);
    let c = sb.op_counts(OpKind::Unmute, "/admin/clients/aaa/mute/demo");
    assert_eq!((c.received, c.applied), (2, 1));
}

/// `--seed MANIFEST` and `--action` through the binary: the manifest's rooms and clients
/// exist (control API), others do not; a CSV without an action column needs --action.
#[test]
fn sandbox_command_seeds_from_a_manifest_with_action() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("mute.csv");
    std::fs::write(&csv, "room,client\nhall-1,u-1\nhall-2,u-2\n").unwrap();
    let seed = csv.to_str().unwrap();
    let (mut child, lines) = sandbox_cmd(
        &[
            "--listen",
            "127.0.0.1:0",
            "--seed",
            seed,
            "--action",
            "mute",
            "--member",
            "hall-1=u-9",
        ],
        &[
            ("IMKIT_CLIENT_KEY", "ck"),
            ("IMKIT_TOKEN", "tok"),
            ("IMKIT_API_KEY", "ak"),
        ],
    );
    let base = line_value(&lines, "IMKIT sandbox listening on ").unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with("2 rooms, ")),
        "{lines:?}"
    );
    for (path, want) in [
        ("/_sandbox/rooms/hall-1", 200),
        ("/_sandbox/rooms/hall-2", 200),
        ("/_sandbox/rooms/u-1", 404),
        ("/_sandbox/clients/u-1", 200),
        ("/_sandbox/clients/u-2", 200),
        ("/_sandbox/clients/u-9", 200),
        ("/_sandbox/clients/hall-1", 404),
    ] {
        assert_eq!(
            blocking_send("GET", &format!("{base}{path}"), &[]).0,
            want,
            "{path}"
        );
    }
    let (_, room) = blocking_send("GET", &format!("{base}/_sandbox/rooms/hall-1"), &[]);
    let room: Value = serde_json::from_str(&room).unwrap();
    assert_eq!(room["status"], 1);
    let members: Vec<&str> = room["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["_id"].as_str().unwrap())
        .collect();
    assert_eq!(members, [DEFAULT_OWNER, "u-9"]);
    // The seeded pair mutes as the manifest would.
    let (s, body) = blocking_send(
        "POST",
        &format!("{base}/admin/clients/u-1/mute/hall-1"),
        &[("IM-API-KEY", "ak")],
    );
    assert_eq!(s, 200, "{body}");
    child.kill().unwrap();
    child.wait().unwrap();

    // Without --action the CSV is an invalid manifest: exit 2, naming the file.
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("imkit-batch"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--seed", seed])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--seed") && err.contains("mute.csv"), "{err}");
    // --action needs --seed.
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("imkit-batch"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--action", "freeze"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
