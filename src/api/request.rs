//! The mapping from an [`Op`] to the one HTTP request that carries it (docs/behaviour.md §1), shared by
//! the client, `plan` and the tests. Every id becomes exactly one percent-encoded path
//! segment, so no id can reach another endpoint.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use crate::op::{Action, Op};

/// Characters left as they are in a path segment: RFC 3986 unreserved. Everything else,
/// including `/`, `?`, `#`, `%` and `.`-only segments' dots, is encoded; `.` itself stays
/// unreserved but a segment of only dots is handled by [`segment`].
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `id` as a single path segment. The segments `.` and `..` (which URL
/// normalisation would resolve) are written `%2E` and `%2E%2E`.
pub(crate) fn segment(id: &str) -> String {
    if !id.is_empty() && id.bytes().all(|b| b == b'.') {
        return "%2E".repeat(id.len());
    }
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// HTTP methods the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request, independent of the base URL and the credentials.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Request {
    pub method: Method,
    /// Absolute path with encoded segments, e.g. `/rooms/lobby%2F1`.
    pub path: String,
    /// JSON body, when the request has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

impl Request {
    /// The request that carries `op`.
    pub fn for_op(op: &Op) -> Request {
        let room = segment(&op.room);
        let client = || segment(op.client.as_deref().unwrap_or_default());
        match op.action {
            Action::Freeze => Request::put_room(room, serde_json::json!({"status": 0})),
            Action::Unfreeze => Request::put_room(room, serde_json::json!({"status": 1})),
            Action::Update => Request::put_room(
                room,
                op.fields
                    .as_ref()
                    .map(|f| f.to_body())
                    .unwrap_or_else(|| serde_json::json!({})),
            ),
            Action::Mute => Request {
                method: Method::Post,
                path: format!("/admin/clients/{}/mute/{}", client(), room),
                body: None,
            },
            Action::Unmute => Request {
                method: Method::Delete,
                path: format!("/admin/clients/{}/mute/{}", client(), room),
                body: None,
            },
            // The room comes first here, the reverse of the mute path.
            Action::Ban => Request {
                method: Method::Post,
                path: format!("/blockStatus/room/{}/{}", room, client()),
                body: None,
            },
            Action::Unban => Request {
                method: Method::Delete,
                path: format!("/blockStatus/room/{}/{}", room, client()),
                body: None,
            },
        }
    }

    /// `GET /blockStatus/room/{room}`, the room's ban list, read by `--snapshot` before the
    /// room's first ban or unban.
    pub(crate) fn get_bans(room: &str) -> Request {
        Request {
            method: Method::Get,
            path: format!("/blockStatus/room/{}", segment(room)),
            body: None,
        }
    }

    /// `GET /rooms/{room}`, used by `--snapshot`.
    pub(crate) fn get_room(room: &str) -> Request {
        Request {
            method: Method::Get,
            path: format!("/rooms/{}", segment(room)),
            body: None,
        }
    }

    fn put_room(room: String, body: serde_json::Value) -> Request {
        Request {
            method: Method::Put,
            path: format!("/rooms/{room}"),
            body: Some(body),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(b) = &self.body {
            write!(f, " {b}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::RoomFields;

    #[test]
    fn ids_stay_one_segment() {
        assert_eq!(segment("lobby-1"), "lobby-1");
        assert_eq!(segment("../admin"), "..%2Fadmin");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment("a?b#c%d"), "a%3Fb%23c%25d");
        assert_eq!(segment("房"), "%E6%88%BF");
        assert_eq!(segment("a b+c"), "a%20b%2Bc");
    }

    #[test]
    fn requests_match_the_spec() {
        let r = Request::for_op(&Op::freeze("r/1"));
        assert_eq!(r.to_string(), r#"PUT /rooms/r%2F1 {"status":0}"#);
        let r = Request::for_op(&Op::unfreeze("r"));
        assert_eq!(r.body, Some(serde_json::json!({"status":1})));
        let r = Request::for_op(&Op::mute("u 1", "r"));
        assert_eq!(r.to_string(), "POST /admin/clients/u%201/mute/r");
        let r = Request::for_op(&Op::unmute("u", "r"));
        assert_eq!(r.method, Method::Delete);
        let f = RoomFields {
            name: Some("Help".into()),
            ..Default::default()
        };
        let r = Request::for_op(&Op::update("r", f));
        assert_eq!(r.to_string(), r#"PUT /rooms/r {"name":"Help"}"#);
        assert_eq!(Request::get_room("a/b").path, "/rooms/a%2Fb");
    }

    #[test]
    fn ban_paths_put_the_room_first_each_id_one_segment() {
        let r = Request::for_op(&Op::ban("u/1", "r 1"));
        assert_eq!(r.to_string(), "POST /blockStatus/room/r%201/u%2F1");
        assert_eq!(r.body, None);
        let r = Request::for_op(&Op::unban("..", "../admin"));
        assert_eq!(r.to_string(), "DELETE /blockStatus/room/..%2Fadmin/%2E%2E");
        assert_eq!(
            Request::get_bans("a/b?c").to_string(),
            "GET /blockStatus/room/a%2Fb%3Fc"
        );
    }
}
