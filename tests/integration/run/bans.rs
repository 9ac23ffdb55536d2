//! Ban and unban jobs, and room ops on the API key alone, through the binary against the
//! sandbox (in process, on its own runtime): every documented answer of the ban pages and
//! what the run, the journal, `status` and `report --failed` make of it; a ban sweep of one
//! client over 500 rooms with 50 bans already in place, and its `revert` run, leaving exactly
//! those 50; a job run with `IMKIT_API_KEY` alone (room ops and mutes on one pace);
//! `--room-auth` both ways; and `plan` and `status` naming the credentials.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use imkit_batch::journal::OpState;
use imkit_batch::sandbox::{DEFAULT_OWNER, SandboxConfig};
use imkit_batch::units::Rate;

use crate::util::{
    API_KEY, CLIENT_KEY, Ran, Sandbox, TOKEN, exec, imkit, journal_of, journal_rows, revert_to,
    run_cmd, sandbox_config, write,
};

/// A token of the default owner of seeded rooms ([`DEFAULT_OWNER`]), who may unban.
const OWNER_TOKEN: &str = "tok-owner-5e";

/// `cmd` with only the credential variables `keep` in its environment (of the three the
/// tests' helpers set), and `IMKIT_TOKEN` replaced by `token` when given.
fn only(mut cmd: Command, keep: &[&str], token: Option<&str>) -> Command {
    for v in ["IMKIT_CLIENT_KEY", "IMKIT_TOKEN", "IMKIT_API_KEY"] {
        if !keep.contains(&v) {
            cmd.env_remove(v);
        }
    }
    if let Some(t) = token {
        cmd.env("IMKIT_TOKEN", t);
    }
    cmd
}

/// The owner's key and token, as a lift is run.
fn as_owner(cmd: Command) -> Command {
    only(cmd, &["IMKIT_CLIENT_KEY", "IMKIT_TOKEN"], Some(OWNER_TOKEN))
}

fn api_key_only(cmd: Command) -> Command {
    only(cmd, &["IMKIT_API_KEY"], None)
}

/// A sandbox with rooms owned by [`DEFAULT_OWNER`] (whose token is [`OWNER_TOKEN`]).
fn config_with_rooms(rooms: &[&str]) -> SandboxConfig {
    let mut c = sandbox_config();
    for r in rooms {
        c.add_room(*r, DEFAULT_OWNER, &[]);
    }
    c.add_user(OWNER_TOKEN, DEFAULT_OWNER);
    c
}

fn rows_by_room(journal: &std::path::Path) -> Vec<(String, OpState, Option<u16>, Option<String>)> {
    journal_rows(journal)
        .into_iter()
        .map(|r| (r.op.to_string(), r.state, r.http_status, r.error_code))
        .collect()
}

/// Each answer of the ban pages, through a run: 200 done; 409 `USER_ALREADY_BLOCKED` done,
/// "already"; 404 `ROOM_OR_USER_NOT_FOUND` failed; 403 on an unban failed with the
/// owner-only hint; and as the rooms' owner, 404 `BLOCK_NOT_FOUND` done, "already".
#[test]
fn every_ban_answer_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config_with_rooms(&["a", "b", "c", "d"]);
    c.add_client("spam");
    assert!(c.add_ban("b", "spam") && c.add_ban("c", "old"));
    let sb = Sandbox::start(c);
    // As the platform admin (the tests' token): may ban, may not unban.
    let m = write(
        dir.path(),
        "bans.csv",
        "action,room,client\nban,a,spam\nban,b,spam\nban,a,ghost\nunban,c,old\n",
    );
    let r = exec(run_cmd(&sb.url(), &m, &[]));
    assert_eq!(r.code, 1, "{r:?}");
    let err = &r.stderr;
    assert!(
        err.contains("ops: 2 done (1 already in state: USER_ALREADY_BLOCKED x1), 2 failed"),
        "{err}"
    );
    assert!(
        err.contains("failures by code: INSUFFICIENT_PERMISSIONS x1, ROOM_OR_USER_NOT_FOUND x1"),
        "{err}"
    );
    assert!(
        err.contains(
            "note: 1 unbans refused 403: the vendor documents unban as room-owner only: lift \
             these bans with the room owner's token (IMKIT_TOKEN)"
        ),
        "{err}"
    );
    assert!(
        err.contains("bans: client key and token (IMKIT_CLIENT_KEY, IMKIT_TOKEN)"),
        "{err}"
    );
    let j = journal_of(&m);
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        rows_by_room(&j),
        [
            (
                "ban client \"spam\" in room \"a\"".into(),
                OpState::Done,
                Some(200),
                None
            ),
            (
                "ban client \"spam\" in room \"b\"".into(),
                OpState::Done,
                Some(409),
                s("USER_ALREADY_BLOCKED")
            ),
            (
                "ban client \"ghost\" in room \"a\"".into(),
                OpState::Failed,
                Some(404),
                s("ROOM_OR_USER_NOT_FOUND")
            ),
            (
                "unban client \"old\" in room \"c\"".into(),
                OpState::Failed,
                Some(403),
                s("INSUFFICIENT_PERMISSIONS")
            ),
        ]
    );
    let rows = journal_rows(&j);
    assert_eq!(
        rows[1].message.as_deref(),
        Some("already in the desired state (USER_ALREADY_BLOCKED)")
    );
    let denied = rows[3].message.as_deref().unwrap();
    assert!(
        denied.starts_with("Only room owner can unblock users in group chat rooms (the vendor documents unban as room-owner only"),
        "{denied}"
    );
    // Nothing changed but the one ban made.
    assert_eq!(sb.banned("a"), Some(vec!["spam".to_string()]));
    assert_eq!(sb.banned("b"), Some(vec!["spam".to_string()]));
    assert_eq!(sb.banned("c"), Some(vec!["old".to_string()]));

    // `status`: per action, and the credential of bans.
    let st = exec(imkit(&["status", j.to_str().unwrap()]));
    assert_eq!(st.code, 0, "{st:?}");
    assert!(
        st.stdout
            .contains("  ban       3: 2 done (1 already in state), 1 failed, 0 skipped, 0 pending"),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout
            .contains("  unban     1: 0 done, 1 failed, 0 skipped, 0 pending"),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout
            .contains("credentials bans: client key and token (IMKIT_CLIENT_KEY, IMKIT_TOKEN)"),
        "{}",
        st.stdout
    );
    // `report --failed`: the two failures as a manifest `run` takes.
    let failed = dir.path().join("failed.csv");
    let r = exec(imkit(&[
        "report",
        j.to_str().unwrap(),
        "--failed",
        "-o",
        failed.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    let text = std::fs::read_to_string(&failed).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("ban,a,ghost,"), "{text}");
    assert!(lines[1].starts_with("unban,c,old,"), "{text}");
    let v = exec(imkit(&["validate", failed.to_str().unwrap()]));
    assert!(
        v.stdout.contains("  ban       1") && v.stdout.contains("  unban     1"),
        "{v:?}"
    );

    // As the rooms' owner: the refused unban goes through; an unban of a pair not banned
    // answers 404 BLOCK_NOT_FOUND, done and "already".
    let m2 = write(
        dir.path(),
        "lift.csv",
        "action,room,client\nunban,c,old\nunban,d,spam\n",
    );
    let r = exec(as_owner(run_cmd(&sb.url(), &m2, &[])));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("ops: 2 done (1 already in state: BLOCK_NOT_FOUND x1), 0 failed"),
        "{}",
        r.stderr
    );
    let rows = rows_by_room(&journal_of(&m2));
    assert_eq!(rows[0].1, OpState::Done);
    assert_eq!(
        (rows[1].1, rows[1].2, rows[1].3.as_deref()),
        (OpState::Done, Some(404), Some("BLOCK_NOT_FOUND"))
    );
    assert_eq!(sb.banned("c"), Some(vec![]));
}

/// The ban sweep: one client over 500 rooms, 50 of them already banning it (another
/// moderator's bans, seeded as the owner's), run with `IMKIT_API_KEY` alone; its `revert`
/// unbans the 450 bans the job made and none of the 50, and, run, leaves exactly those 50
/// (and another client's bans untouched).
///
/// The lift runs as the rooms' owner (a token of `sandbox-owner`, who owns every room here):
/// the unban page lets only a room's owner unban, and the sandbox keeps that rule by default,
/// so the test needs no switch and shows the sweep on the API key and its lift on the owner's
/// token. (With `--admin-may-unban` the API key could lift it too: see
/// `the_example_ban_sweep_runbook_on_the_sandbox`.)
#[test]
fn a_ban_sweep_over_500_rooms_is_lifted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let rooms: Vec<String> = (0..500).map(|i| format!("r-{i:03}")).collect();
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let mut c = config_with_rooms(&names);
    c.latency = Duration::from_millis(10);
    let before: Vec<String> = rooms.iter().step_by(10).cloned().collect();
    assert_eq!(before.len(), 50);
    for r in &before {
        assert!(c.add_ban(r, "spam-4417"));
    }
    for r in &rooms[..5] {
        assert!(c.add_ban(r, "troll"));
    }
    let sb = Sandbox::start(c);
    let mut csv = String::from("room\n");
    for r in &rooms {
        writeln!(csv, "{r}").unwrap();
    }
    write(dir.path(), "joined.csv", &csv);
    let m = write(
        dir.path(),
        "sweep.yaml",
        "version: 1\nname: sweep\nops:\n  - action: ban\n    client: spam-4417\n    \
         rooms_file: joined.csv\n",
    );
    // plan with the API key alone names it for the bans.
    let p = exec(api_key_only(imkit(&["plan", m.to_str().unwrap()])));
    assert_eq!(p.code, 0, "{p:?}");
    assert!(p.stdout.contains("  ban       500\n"), "{}", p.stdout);
    assert!(
        p.stdout
            .contains("credentials: bans: API key (IMKIT_API_KEY)\n"),
        "{}",
        p.stdout
    );
    assert!(!p.stdout.contains("missing credentials"), "{}", p.stdout);

    let t0 = Instant::now();
    let r = exec(api_key_only(run_cmd(
        &sb.url(),
        &m,
        &["--concurrency", "8", "--snapshot"],
    )));
    let took = t0.elapsed();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("bans: API key (IMKIT_API_KEY)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("ops: 500 done (50 already in state: USER_ALREADY_BLOCKED x50), 0 failed"),
        "{}",
        r.stderr
    );
    // The ban lists are the owner's to read: with the API key each read is refused,
    // recorded as unknown, and the bans go on.
    assert!(
        r.stderr
            .contains("500 rooms snapshotted (500 unreadable: prior state unknown)"),
        "{}",
        r.stderr
    );
    for room in &rooms {
        let b = sb.banned(room).unwrap();
        assert!(b.contains(&"spam-4417".to_string()), "{room}: {b:?}");
    }
    // Bans lock their (client, room) pair only: 500 bans at 10 ms each, eight at a time,
    // take well under the 5 s one at a time would.
    assert!(took < Duration::from_secs(4), "{took:?}");
    let answers = sb.stats().responses;
    assert_eq!(answers.get("409"), Some(&50), "{answers:?}");
    assert_eq!(answers.get("403"), Some(&500), "{answers:?}");

    // status names the credential the sweep used.
    let j = journal_of(&m);
    let st = exec(imkit(&["status", j.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(
        v["credentials"],
        serde_json::json!([{"ops": "bans", "credential": "api_key", "env": ["IMKIT_API_KEY"]}])
    );
    assert_eq!(v["by_action"][0]["action"], "ban");
    assert_eq!(v["by_action"][0]["done"], 500);
    assert_eq!(v["by_action"][0]["already"], 50);

    // The lift: 450 unbans, none of the 50 bans that were there before.
    let lift = dir.path().join("lift.csv");
    let (text, stderr) = revert_to(&j, &lift);
    let unbans: Vec<&str> = text.lines().filter(|l| l.starts_with("unban,")).collect();
    assert_eq!(unbans.len(), 450, "{text}");
    for b in &before {
        assert!(
            !text.contains(&format!("unban,{b},")),
            "{b} would be lifted"
        );
    }
    assert!(
        text.contains("# 450 unban op(s) lift only bans this job made"),
        "{text}"
    );
    assert!(stderr.contains("450 revert ops written"), "{stderr}");
    assert!(
        stderr.contains("the vendor documents unban as room-owner only"),
        "{stderr}"
    );

    // plan of the lift as the owner; then the run.
    let p = exec(as_owner(imkit(&["plan", lift.to_str().unwrap()])));
    assert!(
        p.stdout
            .contains("credentials: bans: client key and token (IMKIT_CLIENT_KEY, IMKIT_TOKEN)\n"),
        "{}",
        p.stdout
    );
    let r = exec(as_owner(run_cmd(&sb.url(), &lift, &["--concurrency", "8"])));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("ops: 450 done (0 already in state), 0 failed"),
        "{}",
        r.stderr
    );
    let mut left: Vec<String> = Vec::new();
    for room in &rooms {
        let b = sb.banned(room).unwrap();
        if b.contains(&"spam-4417".to_string()) {
            left.push(room.clone());
        }
    }
    assert_eq!(
        left, before,
        "exactly the bans in place before the sweep are left"
    );
    for r in &rooms[..5] {
        assert!(sb.banned(r).unwrap().contains(&"troll".to_string()), "{r}");
    }
    // 450 + 50 + 450 ban requests in all, none of them lost or repeated.
    assert_eq!(
        sb.stats().applied_total,
        900,
        "450 bans made and 450 lifted"
    );
}

/// `IMKIT_API_KEY` alone runs room ops and mutes, both on the API key and so on its one
/// pace: against a server that allows 20 requests a second per credential, 30 freezes and
/// 30 mutes at `--rate 18/s` meet no 429 (two paces of 18/s would send 36/s on the key).
#[test]
fn the_api_key_alone_runs_room_ops_and_mutes_on_one_pace() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("action,room,client\n");
    let mut c = sandbox_config();
    for i in 0..30 {
        writeln!(csv, "freeze,room-{i},").unwrap();
        writeln!(csv, "mute,room-{i},u-{i}").unwrap();
        c.add_room(format!("room-{i}"), "owner-1", &[]);
        c.add_client(format!("u-{i}"));
    }
    c.rate_limit = Some(Rate {
        count: 20,
        per: Duration::from_secs(1),
    });
    let sb = Sandbox::start(c);
    let m = write(dir.path(), "night.csv", &csv);
    let t0 = Instant::now();
    let url = sb.url();
    let args = [
        "run",
        m.to_str().unwrap(),
        "--base-url",
        &url,
        "--progress",
        "never",
        "--rate",
        "18/s",
    ];
    let r = exec(api_key_only(imkit(&args)));
    let took = t0.elapsed();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("room ops: API key (IMKIT_API_KEY); mutes: API key (IMKIT_API_KEY)"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.stats().rate_limited, 0, "{:?}", sb.stats());
    assert!(r.stderr.contains("0 rate-limited (429)"), "{}", r.stderr);
    // 60 requests at 18/s: over three seconds.
    assert!(took >= Duration::from_millis(2900), "{took:?}");
    for i in 0..30 {
        assert_eq!(sb.room_status(&format!("room-{i}")), Some(0));
    }
    let st = exec(imkit(&["status", journal_of(&m).to_str().unwrap()]));
    assert!(
        st.stdout
            .contains("credentials room ops: API key (IMKIT_API_KEY)\ncredentials mutes: API key (IMKIT_API_KEY)\n"),
        "{}",
        st.stdout
    );
}

/// `--room-auth` both ways: `token` insists on the client key and token (refused before
/// anything is sent when they are missing) and works against a deployment that refuses the
/// API key on room endpoints; `api-key` sends room ops with the API key even when a token is
/// set, which such a deployment rejects (exit 3, naming the API key).
#[test]
fn room_auth_forces_either_credential() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config_with_rooms(&["a", "b"]);
    c.add_client("u");
    c.api_key_on_rooms = false;
    let sb = Sandbox::start(c);
    let m = write(
        dir.path(),
        "f.csv",
        "action,room,client\nfreeze,a,\nban,b,u\n",
    );
    let fresh = ["--fresh"];

    let r = exec(api_key_only(run_cmd(
        &sb.url(),
        &m,
        &["--room-auth", "token"],
    )));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("missing credentials for this manifest: set IMKIT_CLIENT_KEY, IMKIT_TOKEN"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.requests_total(), 0);

    let r = exec(run_cmd(&sb.url(), &m, &["--room-auth", "api-key"]));
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr
            .contains("the API key (IMKIT_API_KEY) was rejected"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.room_status("a"), Some(1));

    // All three set: the token by default, and by choice.
    for extra in [&fresh[..], &["--fresh", "--room-auth", "token"][..]] {
        let r = exec(run_cmd(&sb.url(), &m, extra));
        assert_eq!(r.code, 0, "{extra:?}: {r:?}");
        assert!(
            r.stderr.contains(
                "room ops and bans: client key and token (IMKIT_CLIENT_KEY, IMKIT_TOKEN)"
            ),
            "{}",
            r.stderr
        );
    }
    assert_eq!(sb.room_status("a"), Some(0));
    assert_eq!(sb.banned("b"), Some(vec!["u".to_string()]));
}

/// `plan` says which credential each kind of op would use, from the variables that are set
/// (never their values), and which ones `run` would miss.
#[test]
fn plan_names_the_credentials_of_each_kind_of_op() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "mixed.csv",
        "action,room,client\nfreeze,a,\nmute,a,u\nban,a,v\n",
    );
    let plan = |cmd: Command| -> Ran {
        let r = exec(cmd);
        assert_eq!(r.code, 0, "{r:?}");
        for s in [CLIENT_KEY, TOKEN, API_KEY] {
            assert!(!r.stdout.contains(s) && !r.stderr.contains(s));
        }
        r
    };
    let p = plan(imkit(&["plan", m.to_str().unwrap()]));
    assert!(
        p.stdout.contains(
            "credentials: room ops and bans: client key and token (IMKIT_CLIENT_KEY, IMKIT_TOKEN)\n\
             credentials: mutes: API key (IMKIT_API_KEY)\n"
        ),
        "{}",
        p.stdout
    );
    let p = plan(api_key_only(imkit(&["plan", m.to_str().unwrap()])));
    assert!(
        p.stdout
            .contains("credentials: room ops and bans: API key (IMKIT_API_KEY)\n"),
        "{}",
        p.stdout
    );
    let p = plan(only(imkit(&["plan", m.to_str().unwrap()]), &[], None));
    assert!(
        p.stdout.contains(
            "missing credentials: IMKIT_API_KEY not set: `run` would refuse to start (exit 2)"
        ),
        "{}",
        p.stdout
    );
    let p = plan(only(
        imkit(&["plan", m.to_str().unwrap(), "--room-auth", "token"]),
        &["IMKIT_API_KEY"],
        None,
    ));
    assert!(
        p.stdout
            .contains("missing credentials: IMKIT_CLIENT_KEY, IMKIT_TOKEN not set"),
        "{}",
        p.stdout
    );
    // The sandbox brings every credential.
    let p = plan(only(
        imkit(&["plan", m.to_str().unwrap(), "--sandbox"]),
        &[],
        None,
    ));
    assert!(!p.stdout.contains("missing"), "{}", p.stdout);
    assert!(
        p.stdout.contains("room ops and bans: client key and token"),
        "{}",
        p.stdout
    );
    // With --snapshot, the ban list is read before the room's first ban.
    let p = plan(imkit(&["plan", m.to_str().unwrap(), "--snapshot"]));
    assert!(
        p.stdout
            .contains("  GET /blockStatus/room/a  (snapshot, before"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("  POST /blockStatus/room/a/v  ("),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout
            .contains("  ban lists 1 (GET /blockStatus/room/{id}"),
        "{}",
        p.stdout
    );
}

/// The example job's runbook, on the sandbox as `jobs/examples/README.md` gives it: the
/// sweep, its revert and the lift, on a sandbox seeded from the manifest with a ban already
/// in place and `--admin-may-unban` (the lift runs on the same admin credential as the
/// sweep, as a deployment that lets the platform admin unban would allow): the one ban that
/// was there before is all that is left.
#[test]
fn the_example_ban_sweep_runbook_on_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let src = crate::util::repo_root().join("jobs/examples");
    for f in ["ban-sweep.yaml", "ban-sweep-rooms.csv"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let m = dir.path().join("ban-sweep.yaml");
    let manifest = imkit_batch::manifest::load(&m, &Default::default()).unwrap();
    let ops: Vec<_> = manifest.ops.iter().map(|p| p.op.clone()).collect();
    assert!(ops.len() >= 10);
    let mut c = sandbox_config();
    c.seed_from_ops(&ops);
    let (client, room) = (ops[2].client.as_deref().unwrap(), &*ops[2].room);
    assert!(c.add_ban(room, client));
    c.admin_may_unban = true;
    let sb = Sandbox::start(c);
    // With --snapshot, each room's ban list is read first (the admin may, here) and
    // recorded: `report` shows it on the room's ban.
    let r = exec(run_cmd(&sb.url(), &m, &["--snapshot"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("(1 already in state: USER_ALREADY_BLOCKED x1)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(&format!("{} rooms snapshotted\n", ops.len())),
        "{}",
        r.stderr
    );
    let report = exec(imkit(&[
        "report",
        journal_of(&m).to_str().unwrap(),
        "--format",
        "json",
    ]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(rows[2]["prior"], serde_json::json!({"banned": [client]}));
    assert_eq!(rows[0]["prior"], serde_json::json!({"banned": []}));
    assert_eq!(rows[2]["error_code"], "USER_ALREADY_BLOCKED");
    let lift = dir.path().join("lift.csv");
    let (text, _) = revert_to(&journal_of(&m), &lift);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("unban,")).count(),
        ops.len() - 1
    );
    let r = exec(run_cmd(&sb.url(), &lift, &[]));
    assert_eq!(r.code, 0, "{r:?}");
    for op in &ops {
        let banned = sb.banned(&op.room).unwrap();
        assert_eq!(
            banned.contains(&client.to_string()),
            &*op.room == room,
            "{}",
            op.room
        );
    }
}
