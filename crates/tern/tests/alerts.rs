//! `docs/alerts.yml`: valid Prometheus rules (`promtool check rules`), passing their unit tests
//! (`promtool test rules docs/alerts.test.yml`), and naming only metrics the server exports.
//!
//! The promtool part is skipped with a notice when promtool is not installed (Debian:
//! `apt-get install prometheus`), unless `TERN_REQUIRE_PROMTOOL` is set (`.ci/run` sets it and
//! installs it).

use std::path::Path;
use std::process::Command;

fn docs() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("TERN_REQUIRE_PROMTOOL").is_none(),
            "TERN_REQUIRE_PROMTOOL is set but promtool is not installed"
        );
        eprintln!("SKIPPED: apt-get install prometheus (promtool) to check docs/alerts.yml");
        return;
    }
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]] {
        let out = Command::new("promtool").args(args).current_dir(docs()).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_alert_rules_name_only_metrics_the_server_exports() {
    let rules = std::fs::read_to_string(docs().join("alerts.yml")).unwrap();
    let exported = include_str!("../../tern-server/src/telemetry.rs");
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("tern_")) {
        let metric = word.strip_suffix("_bucket").unwrap_or(word);
        assert!(exported.contains(&format!("\"{metric}\"")), "alerts.yml uses {word}, which tern does not export");
        named += 1;
    }
    assert!(named >= 5, "the rules name tern's metrics");
}
