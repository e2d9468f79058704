//! The web client in a real browser: runs `web/tests/*.test.mjs` (node's test runner,
//! playwright-core driving Debian's Chromium) against this build's `tern` binary.
//!
//! `npm ci` is run here when `web/node_modules` is missing. Without node or Chromium the test is
//! skipped with a notice on a developer machine; with `TERN_REQUIRE_BROWSER` set (`.ci/run` sets
//! it and installs both) a missing piece is a failure.

use std::path::Path;
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn web_client_in_a_real_browser() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let required = std::env::var_os("TERN_REQUIRE_BROWSER").is_some();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !node || !Path::new(&chromium).exists() {
        let missing = if node { format!("Chromium ({chromium}; apt-get install chromium)") } else { "node".into() };
        assert!(!required, "TERN_REQUIRE_BROWSER is set but {missing} is missing");
        eprintln!("web client browser tests SKIPPED: {missing} is not installed");
        return;
    }
    if !web.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .current_dir(&web)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci in web/ failed");
    }
    let out = Command::new("node")
        .args(["--test", "--test-concurrency=1", "tests/"])
        .current_dir(&web)
        .env("TERN_BIN", env!("CARGO_BIN_EXE_tern"))
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> =
        report.lines().filter(|l| l.trim_start().starts_with("ok ") || l.contains("not ok")).collect();
    eprintln!("{}", summary.join("\n"));
    assert!(out.status.success(), "browser tests failed:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
}
