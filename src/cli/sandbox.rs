//! `imkit-batch sandbox`: its flags (clap), how they become a [`SandboxConfig`] (loading the
//! `--seed` manifest), and the command that serves the emulator until Ctrl-C or SIGTERM,
//! printing where it listens and any made-up credentials.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::op::Action;
use crate::sandbox::{FaultRates, SandboxConfig, SandboxCredentials, run};
use crate::units::{Rate, parse_duration};
use crate::{Exit, ExitError};

const SANDBOX_HELP: &str = "\
Endpoints: PUT and GET /rooms/{id}, POST and DELETE /blockStatus/room/{room}/{client} (ban,
unban), GET /blockStatus/room/{room} (ban list), all with IM-CLIENT-KEY + IM-Authorization or
IM-API-KEY (as a platform admin; --refuse-api-key-on-rooms takes only the key + token there);
POST and DELETE /admin/clients/{uid}/mute/{room} (IM-API-KEY); answering as the vendor pages
document. Platform admins and a room's owner may ban; only the owner may unban or list the
bans (--admin-may-unban lets platform admins too).
Credentials: exactly IMKIT_CLIENT_KEY, IMKIT_TOKEN, IMKIT_API_KEY when set, otherwise made up
and printed once. The token is a platform admin's.

Faults are drawn from --fault-seed per (method, path, n-th time seen): the same seed replays
the same faults whatever the concurrency. Fault rates are probabilities (0..1), summing to
at most 1.

Room objects carry what the vendor pages list (_id, name, cover, description, status,
lastMessage, members); --room-extra-fields, --get-room-omits-status,
--refuse-api-key-on-rooms and --flat-401 emulate unverified variants.

Control API (no credentials; listen on loopback): GET /_sandbox/rooms/{id} (with its bans),
GET /_sandbox/clients/{id}, GET /_sandbox/stats, GET /_sandbox/applied?method=PUT&path=/rooms/x,
GET /_sandbox/applied?kind=freeze&path=/rooms/x (received and applied of one kind; kinds also
ban, unban and bans), GET /_sandbox/log?limit=N, POST /_sandbox/reset (seeded bans only).

Example: imkit-batch sandbox --seed jobs/examples/maintenance-freeze.yaml --latency 20ms";

/// Flags of `imkit-batch sandbox`.
#[derive(Debug, clap::Args)]
#[command(after_help = SANDBOX_HELP)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    listen: String,

    /// Create every room and client this manifest names (rooms active, not muted).
    #[arg(long, value_name = "MANIFEST")]
    seed: Option<PathBuf>,

    /// The action for every row of a --seed CSV without an `action` column.
    #[arg(long, value_parser = super::values::action(), requires = "seed")]
    action: Option<Action>,

    /// Extra room, owned by OWNER, with managers MGR (`;`-separated); repeatable.
    /// Owner and managers are created as clients.
    #[arg(long = "room", value_name = "ROOM:OWNER[:MGR;MGR]", value_parser = parse_room)]
    rooms: Vec<(String, String, Vec<String>)>,

    /// Make client ID (created if needed) a member of ROOM, a room of --seed or --room;
    /// repeatable.
    #[arg(long = "member", value_name = "ROOM=ID", value_parser = parse_member)]
    members: Vec<(String, String)>,

    /// Start with client ID (created if needed) banned in ROOM, a room of --seed or --room,
    /// banned by the room's owner; repeatable.
    #[arg(long = "ban", value_name = "ROOM=ID", value_parser = parse_member)]
    bans: Vec<(String, String)>,

    /// Extra client; repeatable.
    #[arg(long = "client", value_name = "ID")]
    clients: Vec<String>,

    /// Extra non-admin user: requests with this token act as CLIENT_ID; repeatable.
    #[arg(long = "user", value_name = "TOKEN=CLIENT_ID", value_parser = parse_user)]
    users: Vec<(String, String)>,

    /// Delay every API answer by this much (e.g. 20ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    latency: Duration,

    /// Add a uniform extra delay of up to this much, drawn from the fault seed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    latency_jitter: Duration,

    /// Seed of every fault decision; the same seed replays the same faults.
    #[arg(long, value_name = "N", default_value_t = 1)]
    fault_seed: u64,

    /// Share of requests answered 429 (half with Retry-After + RC envelope, half with the
    /// documented flat body and retryAfter).
    #[arg(long = "fault-429", value_name = "P", default_value_t = 0.0)]
    fault_429: f64,

    /// Share of requests answered 500 (JSON), 502 or 503 (a proxy's HTML page).
    #[arg(long = "fault-5xx", value_name = "P", default_value_t = 0.0)]
    fault_5xx: f64,

    /// Share of requests whose connection is closed before the change, without an answer.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    drop_before: f64,

    /// Share of requests whose change is applied and then the connection closed without an
    /// answer (the ambiguous case).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    drop_after: f64,

    /// Share of requests applied but answered only after --slow-duration.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    slow: f64,

    /// How long a slow answer is held back (longer than the client's timeout).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    slow_duration: Duration,

    /// Seconds announced by an injected 429 (Retry-After header / retryAfter).
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    fault_retry_after: u64,

    /// Server-side limit per credential, e.g. 1000/min (the documented API-key limit), as a
    /// fixed window (see --rate-limit-burst); the excess is answered 429 with the documented
    /// body.
    #[arg(long, value_name = "RATE")]
    rate_limit: Option<Rate>,

    /// With --rate-limit: a token bucket that holds N requests (N may go back to back) and
    /// refills at the limit, instead of a fixed window. The vendor documents the limit, not
    /// its algorithm; rehearse against both.
    #[arg(long, value_name = "N", requires = "rate_limit")]
    rate_limit_burst: Option<u32>,

    /// GET /rooms/{id} leaves out `status`, like the documented example of get-a-room.
    #[arg(long)]
    get_room_omits_status: bool,

    /// Accepted for existing scripts and now the default: room and ban endpoints accept
    /// IM-API-KEY (as a platform admin), which the vendor documents as able to call every API.
    #[arg(long)]
    api_key_on_rooms: bool,

    /// Room and ban endpoints refuse IM-API-KEY and take only IM-CLIENT-KEY + IM-Authorization,
    /// as their pages document (a request with only the API key is answered their 401).
    #[arg(long, conflicts_with = "api_key_on_rooms")]
    refuse_api_key_on_rooms: bool,

    /// Platform admins (the admin token, IM-API-KEY) may also unban and list a room's bans. By
    /// default only the room's owner may, as the unban and ban-list pages say.
    #[arg(long)]
    admin_may_unban: bool,

    /// Unverified variant: room objects in PUT and GET answers also carry roomTags, webhook,
    /// botMode, extParams, opening, owner and managers. By default they carry only what the
    /// vendor pages list (_id, name, cover, description, status, lastMessage, members).
    #[arg(long)]
    room_extra_fields: bool,

    /// Answer 401s in the flat documented shape {"error":"INVALID_API_KEY","message":...}
    /// (the API-key page; docs/api.md) instead of the endpoint pages' RC envelope.
    #[arg(long = "flat-401")]
    flat_401: bool,

    /// Requests kept in the control API's log ring.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    log_capacity: usize,
}

fn parse_room(s: &str) -> Result<(String, String, Vec<String>), String> {
    let mut parts = s.splitn(3, ':');
    let room = parts.next().unwrap_or_default();
    let owner = parts.next().unwrap_or_default();
    if room.is_empty() || owner.is_empty() {
        return Err(format!("expected ROOM:OWNER[:MGR;MGR], got {s:?}"));
    }
    let managers = parts
        .next()
        .map(|m| {
            m.split(';')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok((room.to_owned(), owner.to_owned(), managers))
}

fn parse_member(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((r, c)) if !r.is_empty() && !c.is_empty() => Ok((r.to_owned(), c.to_owned())),
        _ => Err(format!("expected ROOM=ID, got {s:?}")),
    }
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((t, c)) if !t.is_empty() && !c.is_empty() => Ok((t.to_owned(), c.to_owned())),
        _ => Err(format!("expected TOKEN=CLIENT_ID, got {s:?}")),
    }
}

impl SandboxArgs {
    /// The configuration these flags describe (loads the --seed manifest).
    fn to_config(&self, credentials: SandboxCredentials) -> anyhow::Result<SandboxConfig> {
        let mut c = SandboxConfig::new(credentials);
        if let Some(path) = &self.seed {
            let opts = crate::manifest::LoadOptions {
                action: self.action,
            };
            let m = crate::manifest::load(path, &opts).map_err(|e| {
                ExitError::new(
                    Exit::Invalid,
                    format!("--seed {}: invalid manifest:\n{e}", path.display()),
                )
            })?;
            c.seed_from_ops(m.ops.iter().map(|p| &p.op));
        }
        for (room, owner, managers) in &self.rooms {
            let m: Vec<&str> = managers.iter().map(String::as_str).collect();
            c.add_room(room.clone(), owner.clone(), &m);
        }
        for (room, member) in &self.members {
            if !c.add_member(room, member.clone()) {
                return Err(no_such_room("--member", room, member));
            }
        }
        for id in &self.clients {
            c.add_client(id.clone());
        }
        for (token, client) in &self.users {
            c.add_user(token.clone(), client.clone());
        }
        for (room, client) in &self.bans {
            if !c.add_ban(room, client.clone()) {
                return Err(no_such_room("--ban", room, client));
            }
        }
        c.latency = self.latency;
        c.latency_jitter = self.latency_jitter;
        c.fault_seed = self.fault_seed;
        c.faults = FaultRates {
            too_many_requests: self.fault_429,
            server_error: self.fault_5xx,
            drop_before: self.drop_before,
            drop_after: self.drop_after,
            slow: self.slow,
        };
        c.slow_duration = self.slow_duration;
        c.fault_retry_after_secs = self.fault_retry_after;
        c.rate_limit = self.rate_limit;
        c.rate_limit_burst = self.rate_limit_burst;
        c.get_room_omits_status = self.get_room_omits_status;
        c.api_key_on_rooms = !self.refuse_api_key_on_rooms;
        c.admin_may_unban = self.admin_may_unban;
        c.room_extra_fields = self.room_extra_fields;
        c.flat_401 = self.flat_401;
        c.log_capacity = self.log_capacity;
        c.check()
            .map_err(|e| ExitError::new(Exit::Invalid, format!("sandbox: {e}")))?;
        Ok(c)
    }
}

/// The error of a `--member` or `--ban` that names a room no other option creates.
fn no_such_room(flag: &str, room: &str, client: &str) -> anyhow::Error {
    ExitError::new(
        Exit::Invalid,
        format!(
            "sandbox: {flag} {room}={client}: there is no room {room:?} \
             (add it with --room or --seed first)"
        ),
    )
    .into()
}

/// `imkit-batch sandbox`: serves until Ctrl-C.
pub(crate) async fn command(args: SandboxArgs) -> anyhow::Result<Exit> {
    let (credentials, made_up) = SandboxCredentials::from_env_or_made_up();
    let config = args.to_config(credentials)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is it in use?)", args.listen))?;
    let addr = listener.local_addr().context("cannot read the address")?;
    println!("IMKIT sandbox listening on http://{addr}");
    if let Some(w) = exposure_warning(addr) {
        eprintln!("{w}");
    }
    println!(
        "  {} rooms, {} clients, fault seed {}; control API at http://{addr}/_sandbox/stats",
        config.rooms.len(),
        config.clients.len(),
        config.fault_seed
    );
    if made_up.any() {
        // Only the values made up here: one taken from the environment is the user's secret.
        let c = &config.credentials;
        println!("  made-up credentials (set them to choose your own):");
        println!("    export IMKIT_BASE_URL=http://{addr}");
        for line in made_up.export_lines(c) {
            println!("    {line}");
        }
    }
    println!("Press Ctrl-C to stop.");
    // Where signals cannot be watched, the sandbox stops at once rather than serve unstoppable.
    run(listener, config, async {
        super::signal::wait_for_signal().await;
    })
    .await?;
    Ok(Exit::Success)
}

/// The warning for an address other machines can reach: the control API has no credentials
/// (anyone who reaches it can read state and reset it) and the sandbox speaks plain HTTP.
fn exposure_warning(addr: std::net::SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "warning: the sandbox listens on {addr}, not a loopback address: anyone who can \
             reach it can use its control API (/_sandbox/, no credentials: read state, reset) \
             and read credentials sent over plain HTTP. Use --listen 127.0.0.1:PORT unless \
             that is what you want."
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_and_user_flags_parse() {
        assert_eq!(
            parse_room("r1:o1").unwrap(),
            ("r1".into(), "o1".into(), vec![])
        );
        assert_eq!(
            parse_room("r1:o1:m1;m2").unwrap(),
            ("r1".into(), "o1".into(), vec!["m1".into(), "m2".into()])
        );
        assert!(parse_room("r1").is_err());
        assert!(parse_room(":o").is_err());
        assert_eq!(parse_user("tok=c1").unwrap(), ("tok".into(), "c1".into()));
        assert!(parse_user("tok").is_err());
        assert!(parse_user("=c").is_err());
        assert_eq!(parse_member("r=c").unwrap(), ("r".into(), "c".into()));
        assert!(parse_member("r").is_err() && parse_member("=c").is_err());
    }

    #[test]
    fn a_non_loopback_listen_address_is_warned_about() {
        assert!(exposure_warning("127.0.0.1:1".parse().unwrap()).is_none());
        assert!(exposure_warning("[::1]:1".parse().unwrap()).is_none());
        let w = exposure_warning("0.0.0.0:8787".parse().unwrap()).unwrap();
        assert!(
            w.contains("control API") && w.contains("0.0.0.0:8787"),
            "{w}"
        );
    }

    #[test]
    fn flags_build_the_config() {
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            a: SandboxArgs,
        }
        let w = W::try_parse_from([
            "x",
            "--room",
            "r1:o1:m1",
            "--user",
            "t=o1",
            "--client",
            "c9",
            "--latency",
            "20ms",
            "--fault-429",
            "0.1",
            "--rate-limit",
            "1000/min",
            "--fault-seed",
            "9",
            "--member",
            "r1=c7",
            "--room-extra-fields",
            "--flat-401",
        ])
        .unwrap();
        let c = w.a.to_config(SandboxCredentials::generate()).unwrap();
        assert_eq!(c.rooms["r1"].owner, "o1");
        assert_eq!(c.rooms["r1"].managers, vec!["m1"]);
        assert_eq!(c.users["t"], "o1");
        assert!(c.clients.contains_key("c9") && c.clients.contains_key("m1"));
        assert_eq!(c.latency, Duration::from_millis(20));
        assert_eq!(c.faults.too_many_requests, 0.1);
        assert_eq!(c.rate_limit, Some(Rate::per_minute(1000)));
        assert_eq!(c.fault_seed, 9);
        assert_eq!(c.rooms["r1"].members, vec!["c7"]);
        assert!(c.clients.contains_key("c7"));
        assert!(c.room_extra_fields && c.flat_401);
        assert_eq!(
            c.rate_limit_burst, None,
            "a fixed window unless a burst is given"
        );
        let w =
            W::try_parse_from(["x", "--rate-limit", "20/s", "--rate-limit-burst", "5"]).unwrap();
        let c = w.a.to_config(SandboxCredentials::generate()).unwrap();
        assert_eq!(c.rate_limit_burst, Some(5));
        assert!(W::try_parse_from(["x", "--rate-limit-burst", "5"]).is_err());
        let w =
            W::try_parse_from(["x", "--rate-limit", "20/s", "--rate-limit-burst", "0"]).unwrap();
        let e = w.a.to_config(SandboxCredentials::generate()).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let w = W::try_parse_from(["x", "--member", "nope=c7"]).unwrap();
        let e = w.a.to_config(SandboxCredentials::generate()).unwrap_err();
        assert!(e.to_string().contains("no room \"nope\""), "{e}");
        // The documented room object unless asked otherwise.
        let w = W::try_parse_from(["x"]).unwrap();
        let c = w.a.to_config(SandboxCredentials::generate()).unwrap();
        assert!(!c.room_extra_fields && !c.flat_401);
    }

    #[test]
    fn ban_and_credential_flags_build_the_config() {
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            a: SandboxArgs,
        }
        let config = |args: &[&str]| {
            let w = W::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?;
            Ok::<_, clap::Error>(w.a.to_config(SandboxCredentials::generate()))
        };
        let c = config(&["--room", "r1:o1", "--ban", "r1=c1", "--ban", "r1=o1"])
            .unwrap()
            .unwrap();
        assert_eq!(c.bans["r1"], ["c1", "o1"]);
        assert!(c.clients.contains_key("c1"));
        // The API key is accepted by default, with the old flag too; only admins' unban is off.
        for args in [&[][..], &["--api-key-on-rooms"]] {
            let c = config(args).unwrap().unwrap();
            assert!(c.api_key_on_rooms && !c.admin_may_unban);
        }
        let c = config(&["--refuse-api-key-on-rooms", "--admin-may-unban"])
            .unwrap()
            .unwrap();
        assert!(!c.api_key_on_rooms && c.admin_may_unban);
        assert!(config(&["--refuse-api-key-on-rooms", "--api-key-on-rooms"]).is_err());
        let e = config(&["--ban", "nope=c1"]).unwrap().unwrap_err();
        assert!(
            e.to_string()
                .contains("--ban nope=c1: there is no room \"nope\""),
            "{e}"
        );
        assert!(config(&["--ban", "r1"]).is_err());
    }
}
