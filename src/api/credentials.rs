//! Credentials: the secret values behind [`Credential`](crate::op::Credential) names, read
//! only from the process environment or an env file, and a [`Secret`] wrapper that never
//! prints its value (no `Serialize`, redacted `Debug` and `Display`).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::op::Credential;

const ENV_CLIENT_KEY: &str = "IMKIT_CLIENT_KEY";
const ENV_TOKEN: &str = "IMKIT_TOKEN";
const ENV_API_KEY: &str = "IMKIT_API_KEY";

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

impl Credentials {
    /// Reads `IMKIT_CLIENT_KEY`, `IMKIT_TOKEN` and `IMKIT_API_KEY` from the process
    /// environment and, when given, from `env_file` (dotenv syntax). The environment wins;
    /// the process environment is never modified. Empty values count as missing.
    pub(crate) fn from_env(env_file: Option<&Path>) -> Result<Credentials, CredentialsError> {
        let mut file_vars = HashMap::new();
        if let Some(path) = env_file {
            let err = |reason: String| CredentialsError::EnvFile {
                path: path.display().to_string(),
                reason,
            };
            let iter = dotenvy::from_path_iter(path).map_err(|e| err(describe_dotenv(&e)))?;
            for item in iter {
                let (k, v) = item.map_err(|e| err(describe_dotenv(&e)))?;
                file_vars.insert(k, v);
            }
        }
        Credentials::from_sources(|k| std::env::var(k).ok(), &file_vars)
    }

    /// The pure part of [`from_env`](Self::from_env): `env` looks a variable up in the
    /// process environment, `file` holds the env file's variables.
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
        let c = Credentials::from_env(Some(&p)).unwrap();
        if std::env::var(ENV_API_KEY).is_err() {
            assert_eq!(c.api_key.unwrap().expose(), "from-file-xyz");
        }
        assert!(std::env::var("IMKIT_ZZ_UNUSED").is_err());
        let e = Credentials::from_env(Some(&dir.path().join("nope.env"))).unwrap_err();
        assert!(e.to_string().contains("nope.env"));
    }
}
