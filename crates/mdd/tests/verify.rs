//! `mdd verify` end to end: the built binary, real processes, real servers on loopback.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use mdd_testkit::http::{Reply, Routes, serve, serve_on};
use mdd_testkit::{free_port, tcp};
use tokio::process::Command;

fn mdd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mdd"));
    command.env("NO_COLOR", "1").kill_on_drop(true);
    command
}

fn write_spec(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("spec.yaml");
    std::fs::write(&path, text).expect("write spec");
    path
}

async fn run(args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(60), mdd().args(args).output())
        .await
        .expect("mdd finished within a minute")
        .expect("mdd ran")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(output), stderr(output)))
}

#[tokio::test]
async fn a_target_that_comes_up_while_waiting_turns_green() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let spec = write_spec(
        dir.path(),
        &format!(
            "checks:
  - name: app-port
    owner: app
    tcp: {{ host: 127.0.0.1, port: {port} }}
  - name: app-http
    owner: app
    depends_on: [app-port]
    http: {{ url: 'http://127.0.0.1:{port}/health', body_contains: alive }}
"
        ),
    );
    let verify = mdd()
        .args([
            "verify",
            spec.to_str().expect("utf-8"),
            "--wait",
            "30s",
            "--every",
            "300ms",
            "--format",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mdd");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let _server = serve_on(
        port,
        Routes::new().with("/health", Reply::ok("alive")),
        None,
    )
    .await;
    let output = tokio::time::timeout(Duration::from_secs(40), verify.wait_with_output())
        .await
        .expect("verify ends")
        .expect("verify ran");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["passed"], true);
    assert!(report["rounds"].as_u64().expect("rounds") >= 2, "{report}");
    for check in report["checks"].as_array().expect("checks") {
        assert_eq!(check["state"], "passing", "{check}");
        assert!(
            check["green_in_round"].as_u64().expect("round") >= 2,
            "{check}"
        );
        assert!(
            check["time_to_green_ms"].as_u64().expect("ttg") >= 1000,
            "{check}"
        );
    }
    // Without a terminal, progress is one line per change.
    let progress = stderr(&output);
    assert!(progress.contains("app-port failing"), "{progress}");
    assert!(progress.contains("app-http blocked"), "{progress}");
    assert!(progress.contains("app-port turned green"), "{progress}");
}

#[tokio::test]
async fn exit_codes_follow_the_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let green = write_spec(dir.path(), "checks:\n  - { name: a, command: [true] }\n");
    let output = run(&["verify", green.to_str().expect("utf-8")]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("1 passed, 0 failed"),
        "{}",
        stdout(&output)
    );

    let red = dir.path().join("red.yaml");
    std::fs::write(&red, "checks:\n  - { name: a, command: [false] }\n").expect("write");
    let output = run(&["verify", red.to_str().expect("utf-8")]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("0 passed, 0 failed, 1 warning"),
        "{}",
        stdout(&output)
    );

    let warn = dir.path().join("warn.yaml");
    std::fs::write(
        &warn,
        "checks:\n  - { name: a, command: [sh, -c, 'echo slow; exit 1'] }\n",
    )
    .expect("write");
    let output = run(&["verify", warn.to_str().expect("utf-8")]).await;
    assert_eq!(output.status.code(), Some(1));
    let output = run(&["verify", warn.to_str().expect("utf-8"), "--allow-warning"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));

    let output = run(&["verify", green.to_str().expect("utf-8"), "--check", "nope"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no check named nope"),
        "{}",
        stderr(&output)
    );

    let output = run(&["verify", green.to_str().expect("utf-8"), "--wait", "soon"]).await;
    assert_eq!(output.status.code(), Some(2));

    let output = run(&["verify", "/nonexistent/spec.yaml"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read spec /nonexistent/spec.yaml"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn an_invalid_spec_reports_every_error_and_runs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran");
    let spec = write_spec(
        dir.path(),
        &format!(
            "checks:
  - name: a
    command: [touch, '{}']
  - name: b
    tcp: {{ host: h, port: 99999 }}
  - name: c
    depends_on: [d]
    timout: 5s
    command: x
",
            marker.display()
        ),
    );
    for command in ["verify", "lint"] {
        let output = run(&[command, spec.to_str().expect("utf-8")]).await;
        assert_eq!(output.status.code(), Some(2), "{command}");
        let errors = stderr(&output);
        let path = spec.display().to_string();
        assert!(
            errors.contains(&format!("{path}:5:"))
                && errors.contains("checks[1].tcp.port (check b): port 99999 is out of range"),
            "{errors}"
        );
        assert!(
            errors.contains(&format!("{path}:7:")) && errors.contains("unknown check `d`"),
            "{errors}"
        );
        assert!(
            errors.contains(&format!("{path}:8:")) && errors.contains("did you mean `timeout`"),
            "{errors}"
        );
        assert!(errors.contains("3 errors in the spec"), "{errors}");
        assert!(!marker.exists(), "nothing may run when the spec is invalid");
    }
    let output = run(&["lint", "--example"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ok: 4 checks, 1 deployment",
        "counts in English"
    );
}

#[tokio::test]
async fn blocked_checks_are_not_run_and_name_their_root_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran");
    let spec = write_spec(
        dir.path(),
        &format!(
            "checks:
  - {{ name: dns, owner: network, command: [sh, -c, 'echo DNS CRITICAL - no answer; exit 2'] }}
  - {{ name: ldap, owner: identity, depends_on: [dns], command: [touch, '{}'] }}
  - {{ name: app, owner: app, depends_on: [ldap], command: [true] }}
",
            marker.display()
        ),
    );
    let output = run(&["verify", spec.to_str().expect("utf-8"), "--format", "json"]).await;
    assert_eq!(output.status.code(), Some(1));
    let report = json(&output);
    let states: Vec<_> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["state"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(states, ["failing", "blocked", "blocked"]);
    assert_eq!(report["checks"][1]["blocked_by"][0], "dns");
    assert_eq!(report["checks"][2]["blocked_by"][0], "ldap");
    assert!(!marker.exists(), "a blocked check must not run");
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let mut spec = String::from("checks:\n");
    for i in 0..6 {
        spec.push_str(&format!(
            "  - {{ name: c{i}, command: [sh, -c, 'echo start >> {log}; sleep 0.2; echo end >> {log}'] }}\n",
            log = log.display()
        ));
    }
    let spec = write_spec(dir.path(), &spec);
    let output = run(&[
        "verify",
        spec.to_str().expect("utf-8"),
        "--concurrency",
        "2",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let mut running = 0;
    let mut most = 0;
    for line in std::fs::read_to_string(&log).expect("log").lines() {
        running += if line == "start" { 1 } else { -1 };
        most = most.max(running);
    }
    assert_eq!(most, 2, "at most 2 at once, and 2 did overlap");
}

#[tokio::test]
async fn selection_by_label_and_name_brings_dependencies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(
        dir.path(),
        "checks:
  - { name: dns, labels: { dc: ams1 }, command: [true] }
  - { name: ldap, labels: { dc: ams1 }, depends_on: [dns], command: [true] }
  - { name: web, labels: { dc: fra1 }, command: [true] }
",
    );
    let path = spec.to_str().expect("utf-8");
    let names = |output: &Output| -> Vec<String> {
        json(output)["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    let output = run(&["verify", path, "--label", "dc=fra1", "--format", "json"]).await;
    assert_eq!(names(&output), ["web"]);
    let output = run(&["verify", path, "--check", "ldap", "--format", "json"]).await;
    assert_eq!(names(&output), ["dns", "ldap"]);
}

#[tokio::test]
async fn reports_in_every_format_are_read_by_real_tools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(Routes::new().with("/", Reply::ok("ok"))).await;
    let banner = tcp::serve("220 hello\r\n", &[]).await;
    let spec = write_spec(
        dir.path(),
        &format!(
            "checks:
  - {{ name: web, owner: app, http: {{ url: 'http://127.0.0.1:{}/' }} }}
  - {{ name: smtp, owner: mail, tcp: {{ host: 127.0.0.1, port: {}, expect: '220' }} }}
  - {{ name: broken, owner: mail, command: [sh, -c, 'echo \"CRITICAL - <broken> & gone\"; exit 2'] }}
",
            server.port(),
            banner.port()
        ),
    );
    let path = spec.to_str().expect("utf-8");

    let junit = dir.path().join("report.xml");
    let output = run(&[
        "verify",
        path,
        "--format",
        "junit",
        "--output",
        junit.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("2 passed, 1 failed"),
        "the terminal still shows the text report: {}",
        stdout(&output)
    );
    let parsed = std::process::Command::new("python3")
        .args(["-c", "import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); print(r.get('tests'), r.get('failures'), len(r.findall('testsuite')))", junit.to_str().expect("utf-8")])
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&parsed.stdout).trim(),
        "3 1 2",
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );

    let tap = dir.path().join("report.tap");
    let output = run(&[
        "verify",
        path,
        "--format",
        "tap",
        "--output",
        tap.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let prove = std::process::Command::new("prove")
        .args(["--exec", "cat", tap.to_str().expect("utf-8")])
        .output()
        .expect("prove");
    let prove_out = String::from_utf8_lossy(&prove.stdout);
    assert!(
        !prove.status.success(),
        "prove must see the failure: {prove_out}"
    );
    assert!(prove_out.contains("Failed 1/3 subtests"), "{prove_out}");

    let output = run(&["verify", path, "--format", "json", "--check", "web"]).await;
    assert_eq!(output.status.code(), Some(0));
    let report = json(&output);
    assert_eq!(report["mdd_verify"], 1);
    assert_eq!(report["checks"][0]["perfdata"][0]["label"], "time");
}

#[tokio::test]
async fn ctrl_c_stops_cleanly_kills_children_and_writes_a_partial_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let report_file = dir.path().join("report.json");
    let spec = write_spec(
        dir.path(),
        &format!(
            "checks:
  - {{ name: quick, command: [true] }}
  - name: hangs
    timeout: 5m
    command: [sh, -c, 'echo $$ > {}; sleep 300']
",
            pidfile.display()
        ),
    );
    let child = mdd()
        .args([
            "verify",
            spec.to_str().expect("utf-8"),
            "--format",
            "json",
            "--output",
            report_file.to_str().expect("utf-8"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    let mut waited = Duration::ZERO;
    while !pidfile.exists() && waited < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let plugin_pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("plugin started")
        .trim()
        .parse()
        .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("mdd stops promptly after Ctrl-C")
        .expect("mdd ran");
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).expect("report"))
            .expect("json");
    assert_eq!(report["interrupted"], true);
    assert_eq!(report["checks"][0]["state"], "passing");
    assert_eq!(report["checks"][1]["state"], "pending");
    let alive = std::fs::read_to_string(format!("/proc/{plugin_pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "the plugin {plugin_pid} must be killed");
}

#[tokio::test]
async fn a_spec_on_standard_input() {
    use tokio::io::AsyncWriteExt;
    let mut child = mdd()
        .args(["verify", "-", "--format", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"checks:\n  - { name: piped, command: [echo, 'OK - from stdin'] }\n")
        .await
        .expect("write");
    drop(stdin);
    let output = child.wait_with_output().await.expect("mdd ran");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["checks"][0]["summary"], "OK - from stdin");
    assert_eq!(report["checks"][0]["source"], "(stdin):2");
}

/// `--wait 2s` with rounds every 1.5 s waits the whole 2 s: the last round runs at the
/// deadline instead of the wait ending at the last round that fit.
#[tokio::test]
async fn wait_waits_as_long_as_it_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(
        dir.path(),
        "checks:\n  - { name: never, command: [sh, -c, 'echo CRITICAL - not yet; exit 2'] }\n",
    );
    let started = std::time::Instant::now();
    let output = run(&[
        "verify",
        spec.to_str().expect("utf-8"),
        "--wait",
        "2s",
        "--every",
        "1500ms",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["rounds"], 3, "at 0 s, 1.5 s and 2 s: {report}");
    assert!(
        report["duration_ms"].as_u64().expect("duration") >= 2000,
        "{report}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(report["timed_out"], true, "{report}");
}

/// On a terminal (a real pseudo-terminal of 80 columns, through bsdutils' `script`), the
/// progress bar never draws a line wider than the terminal, and Ctrl-C (SIGINT) clears it
/// before the report: no half-drawn bar is left on the screen.
#[tokio::test]
async fn on_a_terminal_the_bar_fits_and_ctrl_c_leaves_none_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(
        dir.path(),
        "checks:
  - { name: a-rather-long-check-name-number-one, command: [sh, -c, 'echo CRITICAL; exit 2'] }
  - { name: a-rather-long-check-name-number-two, command: [sh, -c, 'echo CRITICAL; exit 2'] }
  - { name: a-rather-long-check-name-number-three, command: [sh, -c, 'echo CRITICAL; exit 2'] }
  - { name: a-rather-long-check-name-number-four, command: [sh, -c, 'echo CRITICAL; exit 2'] }
  - { name: a-rather-long-check-name-number-five, command: [sh, -c, 'echo CRITICAL; exit 2'] }
",
    );
    let screen = dir.path().join("screen");
    let command = format!(
        "stty cols 80 rows 24; exec {} verify {} --wait 60s --every 500ms",
        env!("CARGO_BIN_EXE_mdd"),
        spec.display()
    );
    let mut script = tokio::process::Command::new("script")
        .args(["-qec", &command])
        .arg(&screen)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("util-linux script");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The verify process is script's child (the shell exec'd it).
    let script_pid = script.id().expect("pid");
    let children =
        std::fs::read_to_string(format!("/proc/{script_pid}/task/{script_pid}/children"))
            .expect("children");
    let verify_pid: i32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("verify's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(verify_pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = tokio::time::timeout(Duration::from_secs(20), script.wait())
        .await
        .expect("verify stops on Ctrl-C")
        .expect("wait");
    assert_eq!(status.code(), Some(130), "interrupted");
    let raw = std::fs::read(&screen).expect("screen");
    let text = String::from_utf8_lossy(&raw);
    let drawn = text
        .split_once('\n')
        .map_or(text.as_ref(), |(_, rest)| rest);
    let ansi = regex_lite_strip(drawn);
    assert!(ansi.contains("0/5 green"), "the bar was drawn: {ansi:?}");
    for segment in ansi.split(['\r', '\n']) {
        assert!(
            segment.chars().count() <= 80,
            "a line wider than the terminal: {segment:?}"
        );
    }
    // After the last clear of the line, only the report: no bar.
    let after = drawn.rsplit("\x1b[2K").next().unwrap_or_default();
    assert!(
        !after.contains('░') && !after.contains("green  round"),
        "a bar left behind: {after:?}"
    );
    assert!(after.contains("interrupted"), "{after:?}");
}

/// Text without the terminal's escape sequences (CSI … letter), as a person sees it.
fn regex_lite_strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for next in chars.by_ref() {
                    if next.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
