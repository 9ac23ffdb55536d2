//! `run --env-file`: the file gives the base URL as well as the credentials, in the block
//! `imkit-batch sandbox` prints (indented `export` lines); `--base-url` wins over the
//! environment, which wins over the file; a variable set twice is reported by name (info
//! level) and no value, of either source, appears in any output.

use std::path::Path;
use std::process::Command;

use crate::util::{self, API_KEY, CLIENT_KEY, Ran, Sandbox, TOKEN, exec, freeze_job, write};

/// Values the env file holds that must lose to the environment, and never be printed.
const FILE_TOKEN: &str = "tok-filevalue-31d7";
const FILE_API_KEY: &str = "ak-filevalue-77aa";

/// `imkit-batch run MANIFEST --action freeze --env-file FILE EXTRA...`, with nothing of
/// IMKIT's in the environment but `env` (the test binary's credentials are removed first).
fn run_with(manifest: &Path, env_file: &Path, env: &[(&str, &str)], extra: &[&str]) -> Ran {
    let (m, f) = (manifest.to_str().unwrap(), env_file.to_str().unwrap());
    let mut args = vec![
        "run",
        m,
        "--action",
        "freeze",
        "--env-file",
        f,
        "--progress",
        "never",
        "--rate",
        "20000/s",
    ];
    args.extend_from_slice(extra);
    let mut c: Command = util::imkit(&args);
    for v in ["IMKIT_CLIENT_KEY", "IMKIT_TOKEN", "IMKIT_API_KEY"] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    exec(c)
}

/// No credential value (the test's, or the file's that lost) in the command's output.
fn assert_no_value(r: &Ran) {
    let out = format!("{}{}", r.stdout, r.stderr);
    for v in [
        CLIENT_KEY,
        TOKEN,
        API_KEY,
        "5ecret",
        FILE_TOKEN,
        FILE_API_KEY,
        "filevalue",
    ] {
        assert!(!out.contains(v), "the output holds {v:?}:\n{out}");
    }
}

/// A closed loopback port, as a base URL that must not be used.
fn nowhere() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

/// The block `imkit-batch sandbox` prints, pasted into a file as it is, is enough: the file
/// gives the base URL and the credentials.
#[test]
fn the_env_file_gives_the_base_url_and_the_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 20);
    let sb = Sandbox::start(config);
    let block = format!(
        "# from the sandbox\n    export IMKIT_BASE_URL={}\n    export IMKIT_CLIENT_KEY={CLIENT_KEY}\n    export IMKIT_TOKEN={TOKEN}\n    export IMKIT_API_KEY={API_KEY}\n",
        sb.url()
    );
    let env_file = write(dir.path(), "sandbox.env", &block);
    let r = run_with(&manifest, &env_file, &[], &["-v"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!((0..20).all(|i| sb.room_status(&format!("r-{i}")) == Some(0)));
    // Nothing was set twice: nothing to say about sources.
    assert!(!r.stderr.contains("from the environment"), "{}", r.stderr);
    assert_no_value(&r);
}

/// The environment wins over the file, `--base-url` over both; each variable set twice is
/// reported by name, at info level, and no value is printed.
#[test]
fn the_flag_wins_over_the_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 10);
    let sb = Sandbox::start(config);
    let env_file = write(
        dir.path(),
        "job.env",
        &format!(
            "IMKIT_BASE_URL={}\nIMKIT_CLIENT_KEY={CLIENT_KEY}\nIMKIT_TOKEN={FILE_TOKEN}\nIMKIT_API_KEY={FILE_API_KEY}\n",
            nowhere()
        ),
    );
    let env = [
        ("IMKIT_BASE_URL", sb.url()),
        ("IMKIT_TOKEN", TOKEN.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The environment's base URL and token, the file's client key.
    let r = run_with(&manifest, &env_file, &env, &["-v"]);
    assert_eq!(r.code, 0, "{r:?}");
    for line in [
        "IMKIT_BASE_URL: from the environment (the env file's value is ignored)",
        "IMKIT_TOKEN: from the environment (the env file's value is ignored)",
    ] {
        let l = r.stderr.lines().find(|l| l.contains(line));
        assert!(
            l.is_some_and(|l| l.contains("INFO")),
            "{line}:\n{}",
            r.stderr
        );
    }
    // Set only in the file (the client key), or only in the environment: nothing said.
    assert!(!r.stderr.contains("IMKIT_CLIENT_KEY:"), "{}", r.stderr);
    assert!(!r.stderr.contains("IMKIT_API_KEY:"), "{}", r.stderr);
    assert_no_value(&r);
    assert!((0..10).all(|i| sb.room_status(&format!("r-{i}")) == Some(0)));

    // The flag wins over both: the environment and the file point nowhere.
    let (manifest, config) = freeze_job(dir.path(), "again.csv", 10);
    let sb2 = Sandbox::start(config);
    let nowhere = nowhere();
    let env = [("IMKIT_BASE_URL", nowhere.as_str()), ("IMKIT_TOKEN", TOKEN)];
    let r = run_with(
        &manifest,
        &env_file,
        &env,
        &["-v", "--base-url", &sb2.url()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(
            "IMKIT_BASE_URL: from --base-url (the environment's and the env file's values are ignored)"
        ),
        "{}",
        r.stderr
    );
    assert_no_value(&r);
    assert!((0..10).all(|i| sb2.room_status(&format!("r-{i}")) == Some(0)));

    // `-q` hides the notes (info level), as every info line.
    let (manifest, config) = freeze_job(dir.path(), "quiet.csv", 3);
    let sb3 = Sandbox::start(config);
    let env = [
        ("IMKIT_BASE_URL", sb3.url()),
        ("IMKIT_TOKEN", TOKEN.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = run_with(&manifest, &env_file, &env, &["-q"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("from the environment"), "{}", r.stderr);
}

/// The env file's credentials are used when the environment has none, and a wrong one from
/// the file (the environment's unset) is what is sent: the file is really read.
#[test]
fn without_the_environment_the_file_s_credentials_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 3);
    let sb = Sandbox::start(config);
    let env_file = write(
        dir.path(),
        "wrong.env",
        &format!(
            "IMKIT_BASE_URL={}\nIMKIT_CLIENT_KEY={CLIENT_KEY}\nIMKIT_TOKEN={FILE_TOKEN}\n",
            sb.url()
        ),
    );
    let r = run_with(&manifest, &env_file, &[], &["-v"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("IMKIT_TOKEN"), "{}", r.stderr);
    assert_no_value(&r);
}
