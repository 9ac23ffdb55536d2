//! clap value parsers for the closed sets of words the flags take (`--action`,
//! `--room-auth`, `--log-format`, `--progress`), so the domain's enums need not know clap. Each lists its
//! words as the flag's possible values in `--help`, and a wrong word gets clap's usual error
//! (`invalid value ... [possible values: ...]`, with a tip naming a similar word).

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use crate::op::{Action, RoomAuth};
use crate::output::{LogFormat, ProgressMode};

/// A parser of one of the words of `table`, each with its value and an optional help line
/// shown in `--help`.
fn one_of<T>(
    table: Vec<(&'static str, T, Option<&'static str>)>,
) -> impl TypedValueParser<Value = T>
where
    T: Clone + Send + Sync + 'static,
{
    let values: Vec<PossibleValue> = table
        .iter()
        .map(|(word, _, help)| match help {
            Some(h) => PossibleValue::new(*word).help(*h),
            None => PossibleValue::new(*word),
        })
        .collect();
    // The possible values are checked first, so every word that reaches the map is known.
    PossibleValuesParser::new(values).try_map(move |s| {
        table
            .iter()
            .find(|(word, ..)| *word == s)
            .map(|(_, value, _)| value.clone())
            .ok_or_else(|| format!("unknown value {s:?}"))
    })
}

/// What `--help` says of each action.
fn action_help(a: Action) -> &'static str {
    match a {
        Action::Freeze => "`PUT /rooms/{room}` `{\"status\":0}`",
        Action::Unfreeze => "`PUT /rooms/{room}` `{\"status\":1}`",
        Action::Update => "`PUT /rooms/{room}` with only the given fields",
        Action::Mute => "`POST /admin/clients/{client}/mute/{room}`",
        Action::Unmute => "`DELETE /admin/clients/{client}/mute/{room}`",
        Action::Ban => "`POST /blockStatus/room/{room}/{client}`",
        Action::Unban => "`DELETE /blockStatus/room/{room}/{client}`",
    }
}

/// `--action`: the manifest spelling of an action.
pub(crate) fn action() -> impl TypedValueParser<Value = Action> {
    one_of(
        Action::ALL
            .into_iter()
            .map(|a| (a.as_str(), a, Some(action_help(a))))
            .collect(),
    )
}

/// `--room-auth token|api-key`.
pub(crate) fn room_auth() -> impl TypedValueParser<Value = RoomAuth> {
    one_of(
        RoomAuth::ALL
            .into_iter()
            .map(|a| {
                let help = match a {
                    RoomAuth::Token => "IMKIT_CLIENT_KEY + IMKIT_TOKEN",
                    RoomAuth::ApiKey => "IMKIT_API_KEY",
                };
                (a.as_str(), a, Some(help))
            })
            .collect(),
    )
}

/// `--log-format text|json`.
pub(super) fn log_format() -> impl TypedValueParser<Value = LogFormat> {
    one_of(vec![
        ("text", LogFormat::Text, None),
        ("json", LogFormat::Json, None),
    ])
}

/// `--progress auto|always|never`.
pub(super) fn progress_mode() -> impl TypedValueParser<Value = ProgressMode> {
    one_of(vec![
        ("auto", ProgressMode::Auto, None),
        ("always", ProgressMode::Always, None),
        ("never", ProgressMode::Never, None),
    ])
}

/// An RFC 3339 time with an offset (`--undo-at` of `plan` and `status`).
pub(super) fn timestamp(s: &str) -> Result<jiff::Timestamp, String> {
    s.trim().parse::<jiff::Timestamp>().map_err(|e| {
        format!(
            "{s:?} is not an RFC 3339 time with an offset (e.g. 2026-11-23T07:00:00+08:00): {e}"
        )
    })
}
