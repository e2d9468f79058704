//! The CLI as a user runs it: register, login, send, listen; errors are one line, non-zero exit.

mod common;

use std::process::Output;

use common::*;

async fn tern(args: &[&str], dir: &std::path::Path, password: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(args).current_dir(dir).env_remove("TERN_PASSWORD").env_remove("TERN_PROFILE").env_remove("TERN_URL");
    if let Some(p) = password {
        cmd.env("TERN_PASSWORD", p);
    }
    tokio::time::timeout(WAIT, cmd.output()).await.expect("tern finished").unwrap()
}

/// Starts `tern serve ARGS` in `dir` (killed when dropped) and returns it with its first stdout
/// line, the listening line. Its logs (stderr) go to `logs`.
async fn serve(args: &[&str], dir: &std::path::Path, logs: std::process::Stdio) -> (tokio::process::Child, String) {
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env_remove("TERN_PUSH__BOOTSTRAP_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(logs)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(serve.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(WAIT, tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)).await.unwrap().unwrap();
    (serve, line)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_through_the_cli() {
    let srv = TestServer::start().await;
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (user, pw) in [("alice", "correct horse"), ("bob", "battery staple")] {
        let o = tern(&["register", user, "--server", &url], d, Some(pw)).await;
        assert!(o.status.success(), "{}", stderr(&o));
        let profile = format!("{user}.json");
        let o = tern(&["login", user, "--server", &url, "--profile", &profile], d, Some(pw)).await;
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for (text, transport) in [("hi bob", "ws"), ("over tcp", "tcp")] {
        let o =
            tern(&["send", "--profile", "alice.json", "--to", "bob", "--transport", transport, text], d, None).await;
        assert!(o.status.success(), "{}", stderr(&o));
        let ack: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert!(ack["seq"].as_u64().is_some());
    }
    let o = tern(&["listen", "--profile", "bob.json", "--count", "2"], d, None).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["body"]["text"], "hi bob");
    assert_eq!(lines[1]["body"]["text"], "over tcp");
    assert_eq!((lines[0]["seq"].as_u64(), lines[1]["seq"].as_u64()), (Some(1), Some(2)));

    // The next listen starts after what was printed.
    let o = tern(&["send", "--profile", "alice.json", "--to", "bob", "third"], d, None).await;
    assert!(o.status.success());
    let o = tern(&["listen", "--profile", "bob.json", "--count", "1", "--transport", "tcp"], d, None).await;
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["body"]["text"], "third");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_are_one_line_and_exit_non_zero() {
    let srv = TestServer::start().await;
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
        (vec!["send", "--profile", "missing.json", "--to", "bob", "x"], None, "run `tern login` first"),
        (vec!["register", "al", "--server", &url], Some("correct horse"), "bad_request: username must be"),
        (vec!["register", "carl", "--server", &url], Some("short"), "weak_password"),
        (vec!["login", "nobody", "--server", &url], Some("correct horse"), "unauthorized: wrong username or password"),
        (
            vec!["register", "carl", "--server", "http://127.0.0.1:9"],
            Some("correct horse"),
            "cannot reach tern at http://127.0.0.1:9: ",
        ),
        // host:port is an http:// address.
        (
            vec!["register", "carl", "--server", "127.0.0.1:9"],
            Some("correct horse"),
            "(the CLI's server is --server or TERN_URL)",
        ),
        (vec!["register", "carl", "--server", &url], None, "no password given: pass --password or set TERN_PASSWORD"),
    ];
    for (args, pw, expected) in cases {
        let o = tern(&args, d, pw).await;
        assert!(!o.status.success(), "{args:?} should fail");
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("tern: ") && err.contains(expected), "{args:?}: {err}");
    }
    // Sending to a user that does not exist.
    let o = tern(&["register", "carl", "--server", &url], d, Some("correct horse")).await;
    assert!(o.status.success());
    let o = tern(&["login", "carl", "--server", &url, "--profile", "c.json"], d, Some("correct horse")).await;
    assert!(o.status.success());
    let o = tern(&["send", "--profile", "c.json", "--to", "nobody", "hello"], d, None).await;
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim(), "tern: not_found: user \"nobody\" does not exist");

    // A server address that is not an HTTP URL is refused before anything is sent, with a sentence.
    for (server, expected) in [("ftp://h:1", "uses ftp://"), ("http://", "is not a server address")] {
        let o = tern(&["register", "carl", "--server", server], d, Some("correct horse")).await;
        assert_eq!(o.status.code(), Some(2), "{server}");
        assert!(stderr(&o).contains(expected), "{server}: {}", stderr(&o));
    }
    // Usage does not show a secret that the environment may supply as required.
    let o = tern(&["register", "--help"], d, None).await;
    assert!(stdout(&o).contains("[OPTIONS] <USERNAME>"), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reports_a_port_clash_once_logs_without_colour_and_json_all_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // --log-json: the listening line on stdout is JSON too, and so is every log line.
    let args = ["--data-dir", "a", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--log-json"];
    let (serve, line) = serve(&args, d, std::process::Stdio::piped()).await;
    let listening: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(listening["event"], "tern listening");
    let http = listening["http"].as_str().unwrap().to_owned();

    // The same port again: one line naming the address, non-zero exit.
    let clash = tern(&["serve", "--data-dir", "b", "--http", &http, "--tcp", "127.0.0.1:0"], d, None).await;
    assert!(!clash.status.success());
    let err = stderr(&clash);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("tern: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(&format!("cannot listen on {http}")), "{err}");
    assert_eq!(err.matches("in use").count(), 1, "the reason is said once: {err}");
    // Logs written to a pipe or file carry no colour codes.
    assert!(!err.contains('\u{1b}'), "no ANSI escapes: {err:?}");

    // SIGTERM stops the server cleanly; its logs were JSON lines throughout.
    let pid = serve.id().unwrap();
    assert!(std::process::Command::new("kill").arg(pid.to_string()).status().unwrap().success());
    let out = tokio::time::timeout(WAIT, serve.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "a clean stop: {:?}", out.status);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.lines().count() >= 2, "{logs}");
    for l in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(v["level"].is_string(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_join_prints_what_tern_push_sends_and_keys_can_be_managed() {
    let srv = TestServer::with(|c| c.push.aggregate_window_ms = 20).await;
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let join = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["room", "join", "stage", "--server", &url, "--count", "2", "--transport", "tcp"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut waited = 0;
    while srv.room_online("stage").await == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
        assert!(waited < 250, "tern room join never joined");
    }
    let key_env = |args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["--server".into(), url.clone(), "--key".into(), PUSH_KEY.into()]);
        v
    };
    for args in [
        key_env(&["push", "--room", "stage", "{\"danmaku\":\"hi\"}"]),
        key_env(&["push", "--all", "--priority", "high", "plain text"]),
    ] {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = tern(&refs, dir.path(), None).await;
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(serde_json::from_str::<serde_json::Value>(stdout(&o).trim()).unwrap()["msg_id"].is_u64());
    }
    let out = tokio::time::timeout(WAIT, join.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut data: Vec<String> = lines.iter().map(|l| l["data"].to_string()).collect();
    data.sort();
    assert_eq!(data, ["\"plain text\"", "{\"danmaku\":\"hi\"}"]);

    // Keys: create one with a scope, list it, revoke it; a revoked key is refused.
    let create = key_env(&["keys", "create", "--name", "ops", "--scope", "rooms"]);
    let o = tern(&create.iter().map(String::as_str).collect::<Vec<_>>(), dir.path(), None).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let created: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let (id, key) = (created["key_id"].as_str().unwrap(), created["key"].as_str().unwrap());
    let list = key_env(&["keys", "list"]);
    let o = tern(&list.iter().map(String::as_str).collect::<Vec<_>>(), dir.path(), None).await;
    assert!(stdout(&o).contains(id) && !stdout(&o).contains(key), "list shows ids, never secrets");
    let revoke = key_env(&["keys", "revoke", id]);
    assert!(tern(&revoke.iter().map(String::as_str).collect::<Vec<_>>(), dir.path(), None).await.status.success());
    let o = tern(&["push", "--room", "stage", "x", "--server", &url, "--key", key], dir.path(), None).await;
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim(), "tern: unauthorized: unknown or revoked API key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_example_is_a_working_config_and_bad_settings_stop_start_up_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = tern(&["config", "example"], dir.path(), None).await;
    assert!(out.status.success());
    let example = stdout(&out);
    for needle in ["[gateway]", "heartbeat_ms = 25000", "[auth]", "login_failures_per_user = 10", "[store]"] {
        assert!(example.contains(needle), "{needle} in the example");
    }

    // The example, pointed at a temp data dir and free ports, starts a server that answers.
    let data = dir.path().join("data");
    let config = example
        .replace("http = \"127.0.0.1:7070\"", "http = \"127.0.0.1:0\"")
        .replace("tcp = \"127.0.0.1:7071\"", "tcp = \"127.0.0.1:0\"")
        .replace("data_dir = \"tern-data\"", &format!("data_dir = {:?}", data.display().to_string()));
    assert_ne!(config, example, "the example names the default addresses and data dir");
    std::fs::write(dir.path().join("tern.toml"), &config).unwrap();
    let (mut serve, line) = serve(&["--config", "tern.toml"], dir.path(), std::process::Stdio::null()).await;
    assert!(line.starts_with("tern listening http="), "{line}");
    let http = line.split_whitespace().find_map(|w| w.strip_prefix("http=")).unwrap().to_owned();
    let health = reqwest::get(format!("http://{http}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    // A second server on the same data directory refuses to start, naming the first.
    let second = tern(&["serve", "--config", "tern.toml"], dir.path(), None).await;
    assert!(!second.status.success());
    let err = stderr(&second);
    let pid = serve.id().unwrap();
    assert!(err.contains(&format!("is in use by another tern server (pid {pid})")), "{err}");
    assert_eq!(err.matches("in use").count(), 1, "said once: {err}");
    serve.kill().await.unwrap();

    // A bad value, an unknown setting, a type error: one line naming the setting, non-zero exit.
    for (bad, named) in [
        ("[gateway]\nheartbeat_ms = 5\n", "gateway.heartbeat_ms"),
        ("[gateway]\nheartbeet_ms = 5000\n", "heartbeet_ms"),
        ("[auth]\nlogin_failures_per_user = \"many\"\n", "login_failures_per_user"),
    ] {
        std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
        let out = tern(&["serve", "--config", "bad.toml", "--data-dir", "d2"], dir.path(), None).await;
        assert!(!out.status.success(), "{bad}");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(named), "{err} names {named}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_key_can_come_from_a_file_kept_out_of_ps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("push.key"), "key-from-a-file-0123456789\n").unwrap();
    let args = ["--data-dir", "data", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--push-key-file", "push.key"];
    let (_serve, line) = serve(&args, d, std::process::Stdio::null()).await;
    let http = line.split_whitespace().find_map(|w| w.strip_prefix("http=")).unwrap().to_owned();
    // The key from the file pushes; a wrong one does not.
    for (key, ok) in [("key-from-a-file-0123456789", true), ("key-from-a-file-0123456789\n", false)] {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.args(["push", "--all", "--server", &http, "hello"]).env("TERN_PUSH_KEY", key).current_dir(d);
        let out = tokio::time::timeout(WAIT, cmd.output()).await.unwrap().unwrap();
        assert_eq!(out.status.success(), ok, "{key:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let missing = tern(&["serve", "--data-dir", "d2", "--push-key-file", "nope.key"], d, None).await;
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert_eq!(err.trim().lines().filter(|l| l.starts_with("tern: ")).count(), 1, "{err}");
    assert!(err.contains("cannot read the push key from nope.key"), "{err}");
}
