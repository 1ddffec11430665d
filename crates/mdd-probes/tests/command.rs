//! The command probe against real Nagios plugins and real misbehaving processes.

mod common;

use std::time::{Duration, Instant};

use common::{assert_status, plugin, run};
use mdd_core::Status;

#[tokio::test]
async fn check_dummy_exit_codes_map_to_statuses() {
    let dummy = plugin("check_dummy");
    for (code, status) in [
        (0, Status::Ok),
        (1, Status::Warning),
        (2, Status::Critical),
        (3, Status::Unknown),
    ] {
        let result = run(&format!("command: {dummy} {code} 'all is well'")).await;
        assert_status(&result, status);
        assert_eq!(result.exit_code, Some(code));
        assert!(result.summary.ends_with("all is well"), "{result:?}");
    }
}

#[tokio::test]
async fn exit_7_is_unknown_with_the_plugins_output() {
    let result = run("command: [sh, -c, 'echo strange; exit 7']").await;
    assert_status(&result, Status::Unknown);
    assert_eq!(result.exit_code, Some(7));
    assert_eq!(result.summary, "strange");
}

#[tokio::test]
async fn a_crash_is_unknown_and_names_the_signal() {
    let result = run("command: [sh, -c, 'echo dying; kill -SEGV $$']").await;
    assert_status(&result, Status::Unknown);
    assert!(result.summary.contains("signal 11 (SIGSEGV)"), "{result:?}");
    assert!(result.long_output.contains("dying"), "{result:?}");
}

#[tokio::test]
async fn a_hanging_plugin_is_killed_at_the_timeout_and_is_critical() {
    let started = Instant::now();
    let result = run("command: [sleep, '30']\ntimeout: 300ms").await;
    assert_status(&result, Status::Critical);
    assert_eq!(result.summary, "timed out after 300ms");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_plugin_ignoring_sigterm_and_its_children_are_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("child.pid");
    let script = format!(
        "trap '' TERM; sleep 30 & echo $! > {}; echo started; wait",
        pidfile.display()
    );
    let result = run(&format!("command: [sh, -c, \"{script}\"]\ntimeout: 500ms")).await;
    assert_status(&result, Status::Critical);
    assert!(result.summary.starts_with("timed out"), "{result:?}");
    assert!(
        result.long_output.contains("started"),
        "partial output is kept: {result:?}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    // The grandchild got SIGKILL with its group; give the kernel a moment to reap it.
    let proc_path = format!("/proc/{pid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let alive = std::fs::read_to_string(format!("{proc_path}/stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false);
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("grandchild {pid} survived the timeout");
}

#[tokio::test]
async fn megabytes_of_output_are_capped_and_say_so() {
    let result = run("command: [sh, -c, 'head -c 5000000 /dev/zero | tr \"\\0\" x; echo']").await;
    assert_status(&result, Status::Ok);
    assert!(
        result.summary.len() <= 64 * 1024,
        "{}",
        result.summary.len()
    );
    assert!(
        result.long_output.contains("stdout truncated at 64 KiB"),
        "{}",
        &result.long_output[result.long_output.len().saturating_sub(200)..]
    );
}

#[tokio::test]
async fn output_without_a_newline_and_with_perfdata() {
    let result = run("command: [printf, 'OK - fine|t=1.5s;2;3 size=10B']").await;
    assert_status(&result, Status::Ok);
    assert_eq!(result.summary, "OK - fine");
    let labels: Vec<_> = result.perfdata.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["t", "size"]);
}

#[tokio::test]
async fn stdin_is_closed() {
    // `cat` would wait forever on an open stdin.
    let result = run("command: [cat]\ntimeout: 5s").await;
    assert_status(&result, Status::Ok);
    assert_eq!(result.summary, "(no output, exit code 0)");
}

#[tokio::test]
async fn a_missing_plugin_is_unknown() {
    let result = run("command: /nonexistent/check_nothing -H x").await;
    assert_status(&result, Status::Unknown);
    assert_eq!(
        result.summary,
        "plugin not found: /nonexistent/check_nothing"
    );
}

#[tokio::test]
async fn stderr_is_the_output_when_stdout_is_empty() {
    let result = run("command: [sh, -c, 'echo oops >&2; exit 2']").await;
    assert_status(&result, Status::Critical);
    assert_eq!(result.summary, "oops");
}

#[tokio::test]
async fn a_daemon_holding_the_pipes_does_not_stall_the_check() {
    let started = Instant::now();
    let result =
        run("command: [sh, -c, 'setsid sleep 5 & echo OK - launched']\ntimeout: 10s").await;
    assert_status(&result, Status::Ok);
    assert_eq!(result.summary, "OK - launched");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn no_shell_interpolation() {
    let result = run("command: \"echo $HOME `id` ; rm -rf /nonexistent\"").await;
    assert_status(&result, Status::Ok);
    assert_eq!(result.summary, "$HOME `id` ; rm -rf /nonexistent");
}

#[tokio::test]
async fn check_tcp_against_a_real_listener() {
    let server = mdd_testkit::tcp::serve("220 ready\r\n", &[]).await;
    let result = run(&format!(
        "command: {} -H 127.0.0.1 -p {} -e ready",
        plugin("check_tcp"),
        server.port()
    ))
    .await;
    assert_status(&result, Status::Ok);
    assert!(
        result.perfdata.iter().any(|p| p.label == "time"),
        "{result:?}"
    );
}

#[tokio::test]
async fn check_http_against_a_real_server() {
    use mdd_testkit::http::{Reply, Routes, serve};
    let server = serve(Routes::new().with("/health", Reply::ok("fine"))).await;
    let result = run(&format!(
        "command: {} -I 127.0.0.1 -p {} -u /health -s fine",
        plugin("check_http"),
        server.port()
    ))
    .await;
    assert_status(&result, Status::Ok);
    assert!(result.summary.starts_with("HTTP OK"), "{result:?}");
}

#[tokio::test]
async fn check_disk_reports_perfdata_for_root() {
    let result = run(&format!(
        "command: {} -w 1% -c 1% -p /",
        plugin("check_disk")
    ))
    .await;
    assert_ne!(result.status, Status::Unknown, "{result:?}");
    assert!(result.perfdata.iter().any(|p| p.label == "/"), "{result:?}");
}
