//! The Debian package, built by `scripts/package` from the binary under test and checked as
//! Debian checks packages (dpkg-deb, lintian, systemd-analyze), then run from an extracted tree
//! the way the README says to install it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Agent, TestServer, mdd_client};

fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the package into `out`; its path.
fn build(out: &Path) -> PathBuf {
    let script = repository().join("scripts/package");
    let (ok, stdout, stderr) = run(
        script.to_str().expect("utf-8"),
        &[
            "--binary",
            env!("CARGO_BIN_EXE_mdd"),
            "--out",
            out.to_str().expect("utf-8"),
        ],
    );
    assert!(ok, "scripts/package failed:\n{stderr}");
    PathBuf::from(stdout.lines().last().expect("the package's path").trim())
}

#[tokio::test]
async fn the_debian_package_installs_what_a_host_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build(dir.path());
    assert!(deb.is_file(), "{}", deb.display());
    let deb_text = deb.to_str().expect("utf-8");
    eprintln!(
        "package: {} bytes",
        std::fs::metadata(&deb).expect("stat").len()
    );

    // Its control fields.
    let (ok, fields, stderr) = run(
        "dpkg-deb",
        &["--field", deb_text, "Package", "Version", "Depends"],
    );
    assert!(ok, "{stderr}");
    assert!(fields.contains("Package: mdd"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );
    assert!(
        fields.contains("libc6") && fields.contains("adduser"),
        "{fields}"
    );
    let (ok, conffiles, _) = run("dpkg-deb", &["--info", deb_text, "conffiles"]);
    assert!(ok);
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/mdd/server.yaml", "/etc/mdd/agent.yaml"]
    );

    // Its contents, with their modes and owners.
    let (ok, listing, stderr) = run("dpkg-deb", &["--contents", deb_text]);
    assert!(ok, "{stderr}");
    let entries: Vec<(String, String, String)> = listing
        .lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            Some((
                parts.first()?.to_string(),
                parts.get(1)?.to_string(),
                parts.last()?.trim_start_matches('.').to_string(),
            ))
        })
        .collect();
    assert!(
        entries.iter().all(|(_, owner, _)| owner == "root/root"),
        "everything root's: {listing}"
    );
    for (want_mode, path) in [
        ("-rwxr-xr-x", "/usr/bin/mdd"),
        ("-rw-r--r--", "/lib/systemd/system/mdd-server.service"),
        ("-rw-r--r--", "/lib/systemd/system/mdd-agent.service"),
        ("-rw-r--r--", "/usr/lib/sysusers.d/mdd.conf"),
        ("-rw-r--r--", "/etc/mdd/server.yaml"),
        ("-rw-r--r--", "/etc/mdd/agent.yaml"),
        ("-rw-r--r--", "/usr/share/man/man1/mdd.1.gz"),
        ("-rw-r--r--", "/usr/share/bash-completion/completions/mdd"),
        ("-rw-r--r--", "/usr/share/zsh/vendor-completions/_mdd"),
        (
            "-rw-r--r--",
            "/usr/share/fish/vendor_completions.d/mdd.fish",
        ),
        ("-rw-r--r--", "/usr/share/doc/mdd/copyright"),
        ("-rw-r--r--", "/usr/share/doc/mdd/changelog.gz"),
    ] {
        let found = entries.iter().find(|(_, _, p)| p == path);
        assert_eq!(
            found.map(|(mode, _, _)| mode.as_str()),
            Some(want_mode),
            "{path} in:\n{listing}"
        );
    }

    // Lintian, Debian's own package checker: no error, no warning.
    let (ok, said, stderr) = run("lintian", &["--fail-on", "error,warning", deb_text]);
    let complaints: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(ok && complaints.is_empty(), "lintian:\n{said}\n{stderr}");

    // Extracted, as dpkg would install it.
    let tree = dir.path().join("tree");
    let (ok, _, stderr) = run("dpkg-deb", &["-x", deb_text, tree.to_str().expect("utf-8")]);
    assert!(ok, "{stderr}");
    let mdd = tree.join("usr/bin/mdd");
    let (ok, sections, _) = run("readelf", &["-S", "-W", mdd.to_str().expect("utf-8")]);
    assert!(ok);
    assert!(
        !sections.contains(".debug_info") && !sections.contains(".symtab"),
        "the binary is stripped"
    );
    let (ok, version, _) = run(mdd.to_str().expect("utf-8"), &["--version"]);
    assert!(
        ok && version.contains(env!("CARGO_PKG_VERSION")),
        "{version}"
    );
    let page = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc {} | grep -c '^.SH \"MDD '",
            tree.join("usr/share/man/man1/mdd.1.gz").display()
        ))
        .output()
        .expect("zcat");
    let sections: usize = String::from_utf8_lossy(&page.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(sections >= 15, "a section per subcommand: {sections}");
    let bash = std::fs::read_to_string(tree.join("usr/share/bash-completion/completions/mdd"))
        .expect("bash completion");
    assert!(
        bash.contains("_mdd") && bash.contains("enroll-token"),
        "bash completion"
    );

    // The units pass systemd's own verification in a root that has the package installed
    // (and what a host has: systemd's targets, kill).
    let root = dir.path().join("root");
    let (ok, _, stderr) = run(
        "cp",
        &[
            "-a",
            tree.to_str().expect("utf-8"),
            root.to_str().expect("utf-8"),
        ],
    );
    assert!(ok, "{stderr}");
    for entry in std::fs::read_dir("/lib/systemd/system").expect("systemd units") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".target") || name.ends_with(".slice") {
            let _ = std::fs::copy(&path, root.join("lib/systemd/system").join(name));
        }
    }
    std::fs::create_dir_all(root.join("bin")).expect("bin");
    std::fs::copy("/bin/kill", root.join("bin/kill")).expect("kill");
    let (ok, said, stderr) = run(
        "systemd-analyze",
        &[
            "verify",
            "--man=no",
            &format!("--root={}", root.display()),
            "/lib/systemd/system/mdd-server.service",
            "/lib/systemd/system/mdd-agent.service",
        ],
    );
    assert!(
        ok && said.trim().is_empty() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{said}\n{stderr}"
    );
    for unit in ["mdd-server.service", "mdd-agent.service"] {
        let text =
            std::fs::read_to_string(root.join("lib/systemd/system").join(unit)).expect("unit");
        for line in [
            "User=mdd",
            "StateDirectory=mdd mdd/",
            "ProtectHome=read-only",
            "PrivateTmp=yes",
        ] {
            assert!(text.contains(line), "{unit} has {line}");
        }
        // setuid plugins (check_icmp) must still run under it.
        assert!(!text.contains("NoNewPrivileges=yes"), "{unit}");
    }

    // The packaged server on its packaged config (data and port moved for the test).
    let server_config = tree.join("etc/mdd/server.yaml");
    let server = packaged_server(&mdd, &server_config, &dir.path().join("server-data")).await;
    assert_eq!(server.get("/healthz").await.0, 200);

    // The README's install: the packaged agent.yaml plus two lines, and a start.
    let (code, enroll, stderr) = mdd_client(
        &server,
        &[
            "token",
            "create",
            "--role",
            "enroll",
            "--subscriptions",
            "web",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let agent_config = dir.path().join("agent.yaml");
    let shipped = std::fs::read_to_string(tree.join("etc/mdd/agent.yaml")).expect("agent.yaml");
    std::fs::write(
        &agent_config,
        format!(
            "{}\nserver: {}\nenroll_token: {}\n",
            shipped.replace("data: /var/lib/mdd/agent", "# data: moved for the test"),
            server.url,
            enroll.trim()
        ),
    )
    .expect("write");
    assert_eq!(
        server
            .apply(&[(
                "dc.yaml",
                "checks:\n  - { name: web-up, interval: 250ms, subscriptions: [web], command: [echo, 'OK'] }\n"
            )])
            .await
            .0,
        200
    );
    let agent = Agent::start_with(
        &mdd,
        &dir.path().join("agent-data"),
        &[
            "--config",
            agent_config.to_str().expect("utf-8"),
            "--name",
            "pkg-host",
        ],
    );
    common::wait_for_events(&server, |events| {
        events
            .iter()
            .any(|e| e["check"] == "web-up" && e["entity"] == "pkg-host")
    })
    .await;
    assert!(dir.path().join("agent-data/agent-token.json").exists());
    agent.kill9().await;

    // The shipped agent.yaml alone says what it lacks.
    let (ok, _, stderr) = run(
        mdd.to_str().expect("utf-8"),
        &[
            "agent",
            "--config",
            tree.join("etc/mdd/agent.yaml").to_str().expect("utf-8"),
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("no server"), "{stderr}");
    assert!(server.stop().await.success());
}

/// The packaged binary as `mdd server --config FILE`, on a loopback port the OS picks.
async fn packaged_server(mdd: &Path, config: &Path, data: &Path) -> TestServer {
    let child = tokio::process::Command::new(mdd)
        .args(["server", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("MDD_ADMIN_TOKEN", common::ADMIN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the packaged server");
    TestServer::serving(child)
        .await
        .unwrap_or_else(|said| panic!("the packaged server does not start: {said}"))
        .0
}
