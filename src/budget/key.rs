//! Naming a credential's ledger without naming the credential: a SHA-256 over the API's base
//! URL and the credential's secret values, of which only a prefix is ever written (as the
//! host ledger's file name, as the Redis key). Also the redaction of passwords in a
//! `redis://` URL before it goes into a message.

use std::fmt;

use sha2::{Digest, Sha256};

/// Hex digits of the hash kept: 128 bits, no collision between credentials in practice.
const ID_LEN: usize = 32;

/// Which ledger a credential draws from: the same base URL and secret give the same key in
/// every process on every host. Neither `Debug` nor `Display` shows anything but the hash.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LedgerKey {
    id: String,
}

impl LedgerKey {
    /// The key of the credential made of `secrets` (its secret values, in a fixed order:
    /// an API key alone, or a client key and a token) against `base_url`. A trailing `/` on
    /// the URL does not matter; each part is length-prefixed, so no two different lists
    /// hash alike by running together.
    pub fn new(base_url: &str, secrets: &[&str]) -> LedgerKey {
        let mut h = Sha256::new();
        h.update(b"imkit-batch rate budget v1\0");
        for part in std::iter::once(base_url.trim_end_matches('/')).chain(secrets.iter().copied()) {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let mut id = hex::encode(h.finalize());
        id.truncate(ID_LEN);
        LedgerKey { id }
    }

    /// The hash, in hex: the host ledger's file stem and the Redis key's suffix.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LedgerKey({})", self.id)
    }
}

impl fmt::Display for LedgerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// `url` with any user and password replaced by `***`, for messages and `status`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_depends_on_url_and_secrets_and_shows_neither() {
        let secret = "sk_live_0123456789abcdef";
        let a = LedgerKey::new("https://api.example.test/", &[secret]);
        assert_eq!(a, LedgerKey::new("https://api.example.test", &[secret]));
        assert_ne!(a, LedgerKey::new("https://other.example.test", &[secret]));
        assert_ne!(
            a,
            LedgerKey::new("https://api.example.test", &["sk_live_other"])
        );
        // Length prefixes: ["ab", "c"] and ["a", "bc"] are different credentials.
        assert_ne!(
            LedgerKey::new("u", &["ab", "c"]),
            LedgerKey::new("u", &["a", "bc"])
        );
        assert_eq!(a.id().len(), ID_LEN);
        assert!(a.id().bytes().all(|b| b.is_ascii_hexdigit()));
        for shown in [format!("{a}"), format!("{a:?}")] {
            assert!(
                !shown.contains(secret) && !shown.contains("example"),
                "{shown}"
            );
        }
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.1:6379/3"),
            "redis://***@10.0.0.1:6379/3"
        );
        assert_eq!(redact_url("redis://user:p@ss@host/0"), "redis://***@host/0");
        assert_eq!(redact_url("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
