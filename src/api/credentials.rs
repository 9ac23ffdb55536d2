//! Credentials: the secret values behind [`Credential`](crate::op::Credential) names, read
//! only from the process environment or an env file, and a [`Secret`] wrapper that never
//! prints its value (no `Serialize`, redacted `Debug` and `Display`). The env file may also
//! give the base URL ([`EnvSources`]); for every variable the environment wins over the
//! file, and `--base-url` over both. When two sources set a variable, an info line names the
//! one used (the variable's name and the sources, never a value).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::op::Credential;

const ENV_CLIENT_KEY: &str = "IMKIT_CLIENT_KEY";
const ENV_TOKEN: &str = "IMKIT_TOKEN";
const ENV_API_KEY: &str = "IMKIT_API_KEY";
const ENV_BASE_URL: &str = "IMKIT_BASE_URL";

/// A secret value. It can be read with [`Secret::expose`] (to put it in a header) but it
/// never prints, serialises or appears in an error.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The credentials of one run. Each is optional: only those the manifest needs are required
/// (see [`Credentials::missing`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub(crate) client_key: Option<Secret>,
    pub(crate) token: Option<Secret>,
    pub(crate) api_key: Option<Secret>,
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the env file {path}: {reason}")]
    EnvFile { path: String, reason: String },
    #[error(
        "{var} contains characters that cannot be sent in an HTTP header (control characters or non-ASCII); check the value"
    )]
    BadValue { var: &'static str },
}

/// The variables of an env file (none without one), read once, beside the process
/// environment (never modified). No `Debug`: the values may be secrets.
#[derive(Default)]
pub(crate) struct EnvSources {
    file: HashMap<String, String>,
}

impl EnvSources {
    /// Reads `env_file` (dotenv syntax), when given.
    pub(crate) fn read(env_file: Option<&Path>) -> Result<EnvSources, CredentialsError> {
        let mut file = HashMap::new();
        if let Some(path) = env_file {
            let err = |reason: String| CredentialsError::EnvFile {
                path: path.display().to_string(),
                reason,
            };
            let iter = dotenvy::from_path_iter(path).map_err(|e| err(describe_dotenv(&e)))?;
            for item in iter {
                let (k, v) = item.map_err(|e| err(describe_dotenv(&e)))?;
                file.insert(k, v);
            }
        }
        Ok(EnvSources { file })
    }

    /// `IMKIT_CLIENT_KEY`, `IMKIT_TOKEN` and `IMKIT_API_KEY`: each from the environment, else
    /// from the file. Empty values count as missing.
    pub(crate) fn credentials(&self) -> Result<Credentials, CredentialsError> {
        for note in credential_notes(env_var, &self.file) {
            tracing::info!("{note}");
        }
        Credentials::from_sources(env_var, &self.file)
    }

    /// The base URL: `given` (from `--base-url`, or from `IMKIT_BASE_URL` in the environment,
    /// which the flag parser has already put there), else the file's `IMKIT_BASE_URL`.
    pub(crate) fn base_url(&self, given: Option<String>) -> Option<String> {
        let (url, note) = pick_base_url(given, env_var, &self.file);
        if let Some(note) = note {
            tracing::info!("{note}");
        }
        url
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.is_empty())
}

/// For each credential variable set (not empty) in both the environment and the file: which
/// one is used, by names only.
fn credential_notes(
    env: impl Fn(&str) -> Option<String>,
    file: &HashMap<String, String>,
) -> Vec<String> {
    [ENV_CLIENT_KEY, ENV_TOKEN, ENV_API_KEY]
        .into_iter()
        .filter(|var| non_empty(env(var)).is_some() && non_empty(file.get(*var).cloned()).is_some())
        .map(|var| format!("{var}: from the environment (the env file's value is ignored)"))
        .collect()
}

/// The base URL by precedence (`given`: the flag's or else the environment's; then the
/// file's), and a note naming the source used when the file sets one too.
fn pick_base_url(
    given: Option<String>,
    env: impl Fn(&str) -> Option<String>,
    file: &HashMap<String, String>,
) -> (Option<String>, Option<String>) {
    let in_file = non_empty(file.get(ENV_BASE_URL).cloned());
    let Some(given) = non_empty(given) else {
        return (in_file, None);
    };
    if in_file.is_none() {
        return (Some(given), None);
    }
    let in_env = non_empty(env(ENV_BASE_URL));
    let note = match in_env {
        Some(e) if e == given => {
            format!("{ENV_BASE_URL}: from the environment (the env file's value is ignored)")
        }
        Some(_) => format!(
            "{ENV_BASE_URL}: from --base-url (the environment's and the env file's values are ignored)"
        ),
        None => format!("{ENV_BASE_URL}: from --base-url (the env file's value is ignored)"),
    };
    (Some(given), Some(note))
}

impl Credentials {
    /// Each credential from `env` (a lookup in the process environment), else from `file`
    /// (the env file's variables); empty values count as missing.
    pub fn from_sources(
        env: impl Fn(&str) -> Option<String>,
        file: &HashMap<String, String>,
    ) -> Result<Credentials, CredentialsError> {
        let get = |var: &'static str| -> Result<Option<Secret>, CredentialsError> {
            let v = env(var)
                .filter(|v| !v.is_empty())
                .or_else(|| file.get(var).filter(|v| !v.is_empty()).cloned());
            match v {
                Some(v) if reqwest::header::HeaderValue::from_str(&v).is_err() => {
                    Err(CredentialsError::BadValue { var })
                }
                Some(v) => Ok(Some(Secret(v))),
                None => Ok(None),
            }
        };
        Ok(Credentials {
            client_key: get(ENV_CLIENT_KEY)?,
            token: get(ENV_TOKEN)?,
            api_key: get(ENV_API_KEY)?,
        })
    }

    /// True when every variable of `credential` is set.
    pub(crate) fn has(&self, credential: Credential) -> bool {
        match credential {
            Credential::ClientToken => self.client_key.is_some() && self.token.is_some(),
            Credential::ApiKey => self.api_key.is_some(),
        }
    }

    /// The environment variables missing for the `needed` credentials, in a stable order.
    pub(crate) fn missing(
        &self,
        needed: impl IntoIterator<Item = Credential>,
    ) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut needed: Vec<Credential> = needed.into_iter().collect();
        needed.sort();
        needed.dedup();
        for c in needed {
            match c {
                Credential::ClientToken => {
                    if self.client_key.is_none() {
                        out.push(ENV_CLIENT_KEY);
                    }
                    if self.token.is_none() {
                        out.push(ENV_TOKEN);
                    }
                }
                Credential::ApiKey => {
                    if self.api_key.is_none() {
                        out.push(ENV_API_KEY);
                    }
                }
            }
        }
        out
    }

    /// Every secret value set, for tests and redaction checks.
    pub(crate) fn values(&self) -> impl Iterator<Item = &str> {
        [&self.client_key, &self.token, &self.api_key]
            .into_iter()
            .flatten()
            .map(Secret::expose)
    }
}

/// A dotenv error without the line's content (which could hold a secret).
fn describe_dotenv(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::Io(io) => io.to_string(),
        dotenvy::Error::LineParse(_, index) => {
            format!("syntax error at character {index} (expected KEY=VALUE lines)")
        }
        dotenvy::Error::EnvVar(_) => "invalid variable".to_string(),
        _ => "unreadable".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{s:?}").contains("hunter2"));
        let c = Credentials {
            token: Some(s),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn environment_wins_over_file_and_empty_is_missing() {
        let file: HashMap<String, String> = [
            (ENV_TOKEN.to_string(), "file-token".to_string()),
            (ENV_CLIENT_KEY.to_string(), "file-key".to_string()),
        ]
        .into();
        let env = |k: &str| match k {
            "IMKIT_TOKEN" => Some("env-token".to_string()),
            "IMKIT_API_KEY" => Some(String::new()),
            _ => None,
        };
        let c = Credentials::from_sources(env, &file).unwrap();
        assert_eq!(c.token.as_ref().unwrap().expose(), "env-token");
        assert_eq!(c.client_key.as_ref().unwrap().expose(), "file-key");
        assert!(c.api_key.is_none());
        assert!(c.has(Credential::ClientToken));
        assert_eq!(c.missing([Credential::ApiKey]), vec![ENV_API_KEY]);
        assert!(c.missing([Credential::ClientToken]).is_empty());
    }

    #[test]
    fn missing_names_only_needed_vars() {
        let c = Credentials::default();
        assert_eq!(c.missing([Credential::ApiKey]), vec!["IMKIT_API_KEY"]);
        assert_eq!(
            c.missing([
                Credential::ApiKey,
                Credential::ClientToken,
                Credential::ApiKey
            ]),
            vec!["IMKIT_CLIENT_KEY", "IMKIT_TOKEN", "IMKIT_API_KEY"]
        );
        assert!(c.missing([]).is_empty());
    }

    #[test]
    fn header_unsafe_values_are_refused_without_echoing_them() {
        let env = |k: &str| (k == ENV_API_KEY).then(|| "abc\ndef-secret".to_string());
        let e = Credentials::from_sources(env, &HashMap::new()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("IMKIT_API_KEY"));
        assert!(!msg.contains("def-secret"));
    }

    #[test]
    fn env_file_is_read_without_touching_the_process_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds.env");
        std::fs::write(&p, "IMKIT_ZZ_UNUSED=1\nIMKIT_API_KEY=\"from-file-xyz\"\n").unwrap();
        let c = EnvSources::read(Some(&p)).unwrap().credentials().unwrap();
        if std::env::var(ENV_API_KEY).is_err() {
            assert_eq!(c.api_key.unwrap().expose(), "from-file-xyz");
        }
        assert!(std::env::var("IMKIT_ZZ_UNUSED").is_err());
        let e = EnvSources::read(Some(&dir.path().join("nope.env")))
            .err()
            .unwrap();
        assert!(e.to_string().contains("nope.env"));
    }

    #[test]
    fn a_variable_set_twice_is_taken_from_the_environment_and_said_so_by_name() {
        let file: HashMap<String, String> = [
            (ENV_TOKEN.to_string(), "file-token-v".to_string()),
            (ENV_API_KEY.to_string(), "file-key-v".to_string()),
            (ENV_CLIENT_KEY.to_string(), "file-ck-v".to_string()),
        ]
        .into();
        let env = |k: &str| match k {
            "IMKIT_TOKEN" => Some("env-token-v".to_string()),
            "IMKIT_CLIENT_KEY" => Some(String::new()),
            _ => None,
        };
        let notes = credential_notes(env, &file);
        assert_eq!(
            notes,
            vec!["IMKIT_TOKEN: from the environment (the env file's value is ignored)"]
        );
        assert!(notes.iter().all(|n| !n.contains("-v")));
    }

    #[test]
    fn the_base_url_comes_from_the_flag_then_the_environment_then_the_file() {
        let file: HashMap<String, String> =
            [(ENV_BASE_URL.to_string(), "https://file.example".to_string())].into();
        let no_env = |_: &str| None;
        let env = |k: &str| (k == ENV_BASE_URL).then(|| "https://env.example".to_string());
        let given = |s: &str| Some(s.to_string());
        // Only the file: it is used, nothing to say.
        assert_eq!(
            pick_base_url(None, no_env, &file),
            (given("https://file.example"), None)
        );
        assert_eq!(
            pick_base_url(given(""), no_env, &file).0,
            given("https://file.example")
        );
        // The environment (which the flag parser put in `given`) wins over the file.
        let (url, note) = pick_base_url(given("https://env.example"), env, &file);
        assert_eq!(url, given("https://env.example"));
        assert_eq!(
            note.as_deref(),
            Some("IMKIT_BASE_URL: from the environment (the env file's value is ignored)")
        );
        // The flag wins over both.
        let (url, note) = pick_base_url(given("https://flag.example"), env, &file);
        assert_eq!(url, given("https://flag.example"));
        assert_eq!(
            note.as_deref(),
            Some(
                "IMKIT_BASE_URL: from --base-url (the environment's and the env file's values are ignored)"
            )
        );
        let (_, note) = pick_base_url(given("https://flag.example"), no_env, &file);
        assert!(
            note.unwrap()
                .starts_with("IMKIT_BASE_URL: from --base-url (the env file's")
        );
        // No file value: nothing to say.
        assert_eq!(
            pick_base_url(given("https://flag.example"), env, &HashMap::new()),
            (given("https://flag.example"), None)
        );
        assert_eq!(pick_base_url(None, no_env, &HashMap::new()), (None, None));
    }
}
