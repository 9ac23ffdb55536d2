//! Helpers shared by the integration tests: paths, the binary, the one credential set every
//! sandbox, double and run of these tests uses, a sandbox on its own runtime for tests that
//! run the binary, and small readers of manifests and journals.

use std::path::PathBuf;

/// The repository root (for `jobs/` and `tests/` fixtures).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `imkit-batch` binary, as an assert_cmd command.
pub fn bin() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("imkit-batch").expect("binary built by cargo")
}

// ---------------------------------------------------------------------------------------
// The real binary against an in-process sandbox (crash and journal tests).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use imkit_batch::sandbox::{SandboxConfig, SandboxCredentials, SandboxHandle};

// The one credential set of the integration tests: what every sandbox and test double
// accepts, what the API client and the binary (by env only) send. Each value holds `5ecret`,
// the part all three share, so a scan for that part finds any piece of any of them; they
// must never appear in an output, a record or a journal. Tests that need a rejected or a
// non-admin credential name their own next to it.

pub const CLIENT_KEY: &str = "ck-5ecret-7d1f0a";
pub const TOKEN: &str = "tok-5ecret-99b2e4";
pub const API_KEY: &str = "ak-5ecret-c0ffee";

/// [`CLIENT_KEY`], [`TOKEN`] and [`API_KEY`], as a sandbox accepts them.
pub fn sandbox_credentials() -> SandboxCredentials {
    SandboxCredentials {
        client_key: CLIENT_KEY.into(),
        token: TOKEN.into(),
        api_key: API_KEY.into(),
    }
}

/// [`CLIENT_KEY`], [`TOKEN`] and [`API_KEY`], as `run` reads them from the environment.
pub fn api_credentials() -> imkit_batch::api::Credentials {
    credentials(CLIENT_KEY, TOKEN, API_KEY)
}

/// A sandbox config that accepts [`CLIENT_KEY`], [`TOKEN`] and [`API_KEY`], with a log ring
/// big enough to keep every request of a test job.
pub fn sandbox_config() -> SandboxConfig {
    let mut c = SandboxConfig::new(sandbox_credentials());
    c.log_capacity = 200_000;
    c
}

/// A sandbox served by its own tokio runtime (background worker threads), so a test can run
/// blocking `std::process` children against it and look at its state in between.
pub struct Sandbox {
    handle: Option<SandboxHandle>,
    rt: tokio::runtime::Runtime,
}

impl Sandbox {
    pub fn start(config: SandboxConfig) -> Sandbox {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.block_on(imkit_batch::sandbox::spawn(config)).unwrap();
        Sandbox {
            handle: Some(handle),
            rt,
        }
    }

    pub fn url(&self) -> String {
        self.base_url()
    }

    /// The sequence number of the last request in the log (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.log(1).last().map_or(0, |e| e.seq)
    }
}

impl std::ops::Deref for Sandbox {
    type Target = SandboxHandle;
    fn deref(&self) -> &SandboxHandle {
        self.handle.as_ref().unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.rt.block_on(h.shutdown());
        }
    }
}

/// Polls `cond` until it holds; panics naming `what` after `limit`.
pub fn poll_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Proxy variables a developer's or CI's environment may hold: the tests' traffic stays on
/// loopback and must never be sent through one.
pub const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// The binary as a plain `std::process::Command` (so a child can be killed), with the test
/// credentials in its environment and nothing else of IMKIT's (nor any proxy).
pub fn imkit(args: &[&str]) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("imkit-batch"));
    for v in [
        "IMKIT_BASE_URL",
        "IMKIT_CLIENT_KEY",
        "IMKIT_TOKEN",
        "IMKIT_API_KEY",
        "RUST_LOG",
    ]
    .into_iter()
    .chain(PROXY_VARS)
    {
        c.env_remove(v);
    }
    c.env("IMKIT_CLIENT_KEY", CLIENT_KEY)
        .env("IMKIT_TOKEN", TOKEN)
        .env("IMKIT_API_KEY", API_KEY)
        .args(args)
        .stdin(Stdio::null());
    c
}

/// `imkit-batch run MANIFEST --base-url URL --progress never --rate 20000/s EXTRA...` (the
/// default rate, 800/min, would make every test job take minutes; EXTRA may set another).
pub fn run_cmd(url: &str, manifest: &Path, extra: &[&str]) -> Command {
    let m = manifest.to_str().unwrap();
    let mut args = vec![
        "run",
        m,
        "--base-url",
        url,
        "--progress",
        "never",
        "--rate",
        "20000/s",
    ];
    args.extend_from_slice(extra);
    imkit(&args)
}

/// The result of a finished command.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn ran(out: Output) -> Ran {
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command to its end.
pub fn exec(mut cmd: Command) -> Ran {
    ran(cmd.output().unwrap())
}

/// Starts a command in the background, its output piped.
pub fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// MANIFEST + ".journal", the default journal path.
pub fn journal_of(manifest: &Path) -> PathBuf {
    let mut s = manifest.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// A sandbox with rooms `r-0..r-n` (active) and a freeze manifest naming them.
pub fn freeze_job(dir: &Path, name: &str, n: usize) -> (std::path::PathBuf, SandboxConfig) {
    use std::fmt::Write as _;
    let mut csv = String::from("room\n");
    let mut c = sandbox_config();
    for i in 0..n {
        writeln!(csv, "r-{i}").unwrap();
        c.add_room(format!("r-{i}"), "owner-1", &[]);
    }
    (write(dir, name, &csv), c)
}

/// The bytes of a file.
pub fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// The files in `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `revert JOURNAL -o FILE`: exit 0; the undo manifest's text and the command's stderr.
pub fn revert_to(journal: &Path, out: &Path) -> (String, String) {
    let r = exec(imkit(&[
        "revert",
        journal.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    (std::fs::read_to_string(out).unwrap(), r.stderr)
}

/// Writes `ops` as a CSV manifest (`action,room,client,name,description`) at `path`.
pub fn write_csv_manifest(path: &std::path::Path, ops: &[imkit_batch::op::Op]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(["action", "room", "client", "name", "description"])
        .unwrap();
    for op in ops {
        let f = op.fields.as_deref();
        w.write_record([
            op.action.as_str(),
            &op.room,
            op.client.as_deref().unwrap_or(""),
            f.and_then(|f| f.name.as_deref()).unwrap_or(""),
            f.and_then(|f| f.description.as_deref()).unwrap_or(""),
        ])
        .unwrap();
    }
    w.flush().unwrap();
}

/// Credentials as `run` would read them from the environment.
pub fn credentials(client_key: &str, token: &str, api_key: &str) -> imkit_batch::api::Credentials {
    let env = |k: &str| match k {
        "IMKIT_CLIENT_KEY" => Some(client_key.to_string()),
        "IMKIT_TOKEN" => Some(token.to_string()),
        "IMKIT_API_KEY" => Some(api_key.to_string()),
        _ => None,
    };
    imkit_batch::api::Credentials::from_sources(env, &Default::default()).unwrap()
}

/// The job `imkit-batch run MANIFEST --base-url BASE` runs with these credentials (no
/// progress bar).
pub fn job_config(
    manifest: &std::path::Path,
    base_url: &str,
    credentials: imkit_batch::api::Credentials,
) -> imkit_batch::runner::Job {
    use imkit_batch::runner::{Job, Target};
    let m = imkit_batch::manifest::load(manifest, &Default::default()).unwrap();
    let target = Target::Remote {
        base_url: base_url.parse().unwrap(),
    };
    let mut job = Job::new(m, target, credentials);
    job.progress = imkit_batch::output::ProgressMode::Never;
    job
}

/// Every op row of a journal, in manifest order.
pub fn journal_rows(path: &std::path::Path) -> Vec<imkit_batch::journal::OpRow> {
    let j = imkit_batch::journal::Journal::open_read_only(path).unwrap();
    let mut rows = Vec::new();
    j.for_each_op::<imkit_batch::journal::JournalError>(None, |r| {
        rows.push(r);
        Ok(())
    })
    .unwrap();
    rows
}
