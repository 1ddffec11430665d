#![allow(dead_code)]

use std::path::Path;
use std::sync::Once;

use mdd_core::spec::{Check, load_one};
use mdd_core::{ProbeResult, Status};
use mdd_probes::ProbeContext;

pub const PLUGINS: &str = "/usr/lib/nagios/plugins";

/// Parses a one-check spec, so tests exercise the same path users do.
pub fn check(yaml: &str) -> Check {
    let text = format!("checks:\n  - name: t\n{}", indent(yaml));
    load_one("test.yaml", &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .checks
        .remove(0)
}

fn indent(yaml: &str) -> String {
    yaml.lines().map(|l| format!("    {l}\n")).collect()
}

pub async fn run(yaml: &str) -> ProbeResult {
    mdd_probes::run(&check(yaml), &ProbeContext::default()).await
}

pub fn assert_status(result: &ProbeResult, status: Status) {
    assert_eq!(result.status, status, "{result:#?}");
}

/// The Debian monitoring-plugins must be installed (the test command installs them).
pub fn plugin(name: &str) -> String {
    static CHECK: Once = Once::new();
    let path = format!("{PLUGINS}/{name}");
    CHECK.call_once(|| {
        assert!(
            Path::new(&path).exists(),
            "{path} is missing: run ./scripts/test, which installs monitoring-plugins-basic"
        );
    });
    path
}
