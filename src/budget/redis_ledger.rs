//! The Redis ledger (`--budget redis://HOST:PORT/DB`): the same GCRA as the host ledger, as
//! one Lua script that Redis runs atomically, so runs on several hosts or containers share a
//! credential's budget. The script reads the clock with `TIME`, the server's, so the hosts
//! need not agree on theirs, and sets the key to expire once the state would be ignored
//! anyway. The key is `imkit-batch:budget:` and the credential's [`LedgerKey`] hash.
//!
//! A Redis that cannot be reached when the run starts is a configuration error (nothing was
//! sent); one that goes away mid-run fails the next draw, and the runner stops dispatching.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};

use super::gcra::{Decision, Gcra};
use super::key::LedgerKey;

/// How long connecting, and then each draw, may take before Redis counts as unreachable.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The decision of [`Gcra::decide`], step for step, on the server's clock. Returns
/// `{1, 0}` for a grant (the new TAT stored, expiring after `keep`), `{0, wait_us}` for a
/// refusal. Lua numbers are doubles, exact for microseconds since 1970 until the year 2255.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local ahead = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat > now + ahead or tat + tau + interval < now then
  tat = now + tau
elseif tat < now then
  tat = now
end
local allowed_at = tat - tau
if now < allowed_at then
  return {0, allowed_at - now}
end
local new = tat + interval
local keep_ms = math.ceil((new - now + tau + interval) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', keep_ms)
return {1, 0}
";

/// [`Gcra::pause`] on the server's clock: holds every draw back until `ARGV[1]` µs from
/// now (capped by the caller), unless the state already does.
const PAUSE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tau = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local new = now + tonumber(ARGV[1]) + tau
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < new then
  local keep_ms = math.ceil((new - now + tau + interval) / 1000)
  redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', keep_ms)
end
return 1
";

/// A connection to the ledger of one credential.
pub(crate) struct RedisLedger {
    conn: MultiplexedConnection,
    script: Script,
    pause: Script,
    key: String,
    /// The key of the note runs leave each other (see the budget's `publish_limit`).
    note_key: String,
}

impl RedisLedger {
    /// Connects to `url` and loads the script (which also proves the server runs scripts).
    pub(crate) async fn connect(url: &str, key: &LedgerKey) -> Result<RedisLedger, RedisError> {
        let client = Client::open(url)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let script = Script::new(GCRA_LUA);
        script.load_async(&mut conn).await?;
        let pause = Script::new(PAUSE_LUA);
        pause.load_async(&mut conn).await?;
        Ok(RedisLedger {
            conn,
            script,
            pause,
            key: format!("imkit-batch:budget:{}", key.id()),
            note_key: format!("imkit-batch:note:{}", key.id()),
        })
    }

    /// Whether `url` is one [`Client::open`] accepts (checked before connecting, so a typo
    /// is told apart from an unreachable server).
    pub(crate) fn check_url(url: &str) -> Result<(), RedisError> {
        Client::open(url).map(drop)
    }

    /// Holds every draw back for `wait` (see [`Gcra::pause`]).
    pub(crate) async fn pause(&self, gcra: &Gcra, wait: Duration) -> Result<(), RedisError> {
        let most = gcra.ahead_limit_us().saturating_sub(gcra.tolerance_us());
        let wait_us = u64::try_from(wait.as_micros())
            .unwrap_or(u64::MAX)
            .min(most);
        let mut conn = self.conn.clone();
        let _: i64 = self
            .pause
            .key(&self.key)
            .arg(wait_us)
            .arg(gcra.tolerance_us())
            .arg(gcra.interval_us())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Replaces the ledger's note, kept for `ttl`.
    pub(crate) async fn put_note(&self, note: &str, ttl: Duration) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(&self.note_key)
            .arg(note)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut conn)
            .await
    }

    /// The ledger's note, if any.
    pub(crate) async fn note(&self) -> Result<Option<String>, RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(&self.note_key)
            .query_async(&mut conn)
            .await
    }

    /// One draw (`EVALSHA`, loading the script again if the server lost it).
    pub(crate) async fn draw(&self, gcra: &Gcra) -> Result<Decision, RedisError> {
        let mut conn = self.conn.clone();
        let (granted, wait_us): (i64, i64) = self
            .script
            .key(&self.key)
            .arg(gcra.interval_us())
            .arg(gcra.tolerance_us())
            .arg(gcra.ahead_limit_us())
            .invoke_async(&mut conn)
            .await?;
        Ok(if granted == 1 {
            // The new TAT stays on the server; callers only need to know they may send.
            Decision::Grant { tat: 0 }
        } else {
            Decision::Refuse {
                wait_us: u64::try_from(wait_us).unwrap_or(0),
            }
        })
    }
}
