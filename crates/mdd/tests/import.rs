//! `mdd import` end to end: the built binary on real configurations (what Debian ships, the
//! public fixtures copied into mdd-import's corpus, configs written here for each rule), the
//! real tools' own reading of them where they can say (`nagios4 -v`), and the imported checks
//! run by `mdd verify` against listeners on loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use mdd_core::spec::{Check, Probe, Spec};
use tokio::process::Command;

fn mdd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mdd"));
    command.env("NO_COLOR", "1").kill_on_drop(true);
    command
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

/// Imports, expecting success: the spec text and what was said on stderr.
async fn import(args: &[&str]) -> (String, String) {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    let output = run(&all).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "mdd {all:?}\n{}",
        stderr(&output)
    );
    (stdout(&output), stderr(&output))
}

fn parse(text: &str) -> Spec {
    mdd_core::spec::load_one("imported.yaml", text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn check<'a>(spec: &'a Spec, name: &str) -> &'a Check {
    spec.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = spec.checks.iter().map(|c| c.name.as_str()).collect();
            panic!("no check {name} among {names:?}")
        })
}

fn argv(check: &Check) -> Vec<&str> {
    match &check.probe {
        Probe::Command(c) => c.argv.iter().map(String::as_str).collect(),
        other => panic!("{} is a {} check", check.name, other.kind()),
    }
}

fn names(spec: &Spec) -> Vec<&str> {
    spec.checks.iter().map(|c| c.name.as_str()).collect()
}

fn corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mdd-import/corpus")
        .join(path)
}

/// What `nagios4 -v` says it checked: (services, hosts).
fn nagios_counts(main_config: &Path) -> (usize, usize) {
    let output = std::process::Command::new("nagios4")
        .arg("-v")
        .arg(main_config)
        .output()
        .expect("nagios4 runs (the test command installs nagios4-core)");
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    let count = |what: &str| -> usize {
        said.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Checked ")?
                    .strip_suffix(&format!(" {what}."))?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("nagios4 -v counted no {what}:\n{said}"))
    };
    (count("services"), count("hosts"))
}

/// How many Nagios services and hosts were imported, from the checks' comments; a host
/// without a check command is no check, and said so.
fn imported_counts(text: &str, said: &str) -> (usize, usize) {
    let services = text
        .lines()
        .filter(|l| l.starts_with("  # service `"))
        .count();
    let hosts = text.lines().filter(|l| l.starts_with("  # host `")).count();
    let unchecked = said
        .lines()
        .filter(|l| l.contains("has no check_command: no check for it"))
        .count();
    (services, hosts + unchecked)
}

#[tokio::test]
async fn debians_nagios_sample_imports_as_nagios_reads_it() {
    let main = Path::new("/etc/nagios4/nagios.cfg");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("nagios.yaml");
    let out = out.to_str().expect("utf-8");
    let (_, said) = import(&[
        "nagios",
        "/etc/nagios4/nagios.cfg",
        "--datacenter",
        "ams1",
        "-o",
        out,
    ])
    .await;
    let text = std::fs::read_to_string(out).expect("written");
    // As many services and hosts as Nagios itself checks in the same configuration.
    assert_eq!(imported_counts(&text, &said), nagios_counts(main), "{text}");
    let spec = parse(&text);
    // The first definition of check_ping Nagios reads is monitoring-plugins' (cfg_dir comes
    // first in Debian's nagios.cfg), and its quotes are the shell's.
    let ping = check(&spec, "localhost-ping");
    assert_eq!(
        argv(ping),
        [
            "/usr/lib/nagios/plugins/check_ping",
            "-H",
            "127.0.0.1",
            "-w",
            "100.0,20%",
            "-c",
            "500.0,60%"
        ]
    );
    assert_eq!(ping.depends_on, ["localhost"]);
    assert_eq!(ping.owner.as_deref(), Some("admins"));
    assert_eq!(ping.entity.as_deref(), Some("localhost"));
    assert_eq!(ping.interval, Duration::from_secs(300));
    assert_eq!(ping.timeout, Duration::from_secs(60));
    assert_eq!(ping.labels["datacenter"], "ams1");
    assert_eq!(ping.labels["hostgroup/linux-servers"], "member");
    let host = check(&spec, "localhost");
    assert!(host.depends_on.is_empty());
    assert_eq!(host.timeout, Duration::from_secs(30), "host_check_timeout");
    assert_eq!(spec.deployments.len(), 1);
    assert_eq!(spec.deployments[0].name, "ams1");
    // What has no equivalent is listed with the file and line that wrote it.
    assert!(
        said.contains("/etc/nagios4/objects/templates.cfg:")
            && said.contains("`retry_interval 1` is not carried over"),
        "{said}"
    );
    assert!(
        said.contains("the timeperiod definition is not carried over"),
        "{said}"
    );
    // mdd lint accepts it, and the same input gives the same bytes.
    let lint = run(&["lint", out]).await;
    assert_eq!(lint.status.code(), Some(0), "{}", stderr(&lint));
    let (again, _) = import(&["nagios", "/etc/nagios4/nagios.cfg", "--datacenter", "ams1"]).await;
    assert_eq!(again, text, "byte-identical");
}

/// Copies a corpus directory next to the `var` directories its main config names, so that
/// `nagios4 -v` can read it too.
fn nagios_tree(corpus_dir: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(dir.path().join("var/spool/checkresults")).expect("var");
    std::fs::create_dir_all(dir.path().join("var/rw")).expect("var");
    std::fs::create_dir_all(&etc).expect("etc");
    for entry in std::fs::read_dir(corpus(corpus_dir)).expect("corpus") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, etc.join(path.file_name().expect("name"))).expect("copy");
    }
    dir
}

#[tokio::test]
async fn nagios_cores_and_naemons_fixtures_import_as_nagios_counts_them() {
    let tree = nagios_tree("nagios/nagioscore-t-etc");
    let main = tree.path().join("etc/nagios.cfg");
    let (text, said) = import(&["nagios", main.to_str().expect("utf-8")]).await;
    assert_eq!(
        imported_counts(&text, &said),
        nagios_counts(&main),
        "{text}"
    );
    let spec = parse(&text);
    // A same-host dependency through a service group, from Nagios Core's own fixture.
    assert_eq!(
        check(&spec, "host3-dependent-service").depends_on,
        ["host3-master-service"]
    );

    let tree = nagios_tree("nagios/naemon-t-etc-service-dependencies");
    let main = tree.path().join("etc/naemon-service-dependencies.cfg");
    let (text, said) = import(&["nagios", main.to_str().expect("utf-8")]).await;
    assert_eq!(
        imported_counts(&text, &said),
        nagios_counts(&main),
        "{text}"
    );
    let spec = parse(&text);
    assert_eq!(
        check(&spec, "http-client-check-get-http-app-health").depends_on,
        [
            "http-client",
            "http-proxy-check-httpd-proc",
            "http-server-1-check-httpd-proc",
            "http-server-2-check-httpd-proc"
        ]
    );
    // Its resource file is empty: $USER1$ is empty, as in Nagios, and said.
    assert_eq!(argv(check(&spec, "http-client")), ["/check_dummy"]);
    assert!(
        said.contains("$USER1$ is set in no resource file"),
        "{said}"
    );
}

/// A Nagios configuration with one of each rule, valid for Nagios itself.
const RULES: &str = r#"
define timeperiod {
    timeperiod_name always
    alias           always
    monday          00:00-24:00
}
define command {
    command_name notify
    command_line /bin/true
}
define contact {
    contact_name                  alice
    host_notification_period      always
    service_notification_period   always
    host_notification_options     n
    service_notification_options  n
    host_notification_commands    notify
    service_notification_commands notify
}
define contactgroup {
    contactgroup_name network
    members           alice
}
define command {
    command_name check-host
    command_line $USER1$/check_dummy 0 "host $HOSTNAME$ at $HOSTADDRESS$"
}
define command {
    command_name check_args
    command_line $USER1$/check_dummy $ARG1$ '$ARG2$' $_HOSTRACK$ $_SERVICEPORT$ $SERVICEDESC$
}
define command {
    command_name check_piped
    command_line $USER1$/check_dummy 0 ok | tr a-z A-Z
}
define host {
    name                  base-host
    check_command         check-host
    check_interval        2
    max_check_attempts    3
    check_period          always
    contact_groups        network
    notification_interval 0
    notification_period   always
    register              0
}
define host {
    name       racked
    _RACK      r12
    hostgroups +racked
    register   0
}
define host {
    use        racked,base-host
    host_name  core
    address    127.0.0.1
    notes      The core switch
    notes_url  https://wiki.example.com/hosts/$HOSTNAME$
}
define host {
    use        base-host
    host_name  web1
    address    127.0.0.2
    parents    core
    hostgroups web
}
define host {
    use        base-host
    host_name  web2
    address    127.0.0.3
    hostgroups web
}
define hostgroup {
    hostgroup_name web
}
define hostgroup {
    hostgroup_name racked
}
define hostgroup {
    hostgroup_name everything
    hostgroup_members web,racked
}
define service {
    name                  base-service
    check_interval        1
    max_check_attempts    1
    check_period          always
    notification_interval 0
    notification_period   always
    register              0
}
define service {
    use                 base-service
    hostgroup_name      everything
    host_name           !web2
    service_description Args
    check_command       check_args!1!a b\!c
    _PORT               8080
    contacts            alice
    contact_groups      null
}
define service {
    use                 base-service
    host_name           web1,web2
    service_description Piped
    check_command       check_piped
    servicegroups       frontends
    action_url          https://runbooks.example.com/piped
}
define servicegroup {
    servicegroup_name frontends
}
define service {
    use                   base-service
    host_name             web1
    service_description   Backup
    active_checks_enabled 0
    check_freshness       1
    freshness_threshold   7200
    check_command         check-host
}
define servicedependency {
    host_name                     web1
    service_description           Args
    dependent_host_name           web1,web2
    dependent_service_description Piped
}
define hostdependency {
    host_name           core
    dependent_host_name web2
}
"#;

#[tokio::test]
async fn every_nagios_rule_gives_the_exact_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path();
    std::fs::create_dir_all(etc.join("objects/more")).expect("dirs");
    std::fs::create_dir_all(etc.join("var/spool")).expect("var");
    std::fs::write(etc.join("objects/more/rules.cfg"), RULES).expect("write");
    // Not a .cfg: not read.
    std::fs::write(etc.join("objects/README"), "define nonsense {").expect("write");
    std::fs::write(
        etc.join("resource.cfg"),
        "$USER1$=/usr/lib/nagios/plugins\n",
    )
    .expect("write");
    std::fs::write(
        etc.join("nagios.cfg"),
        format!(
            "cfg_dir=objects\nresource_file=resource.cfg\ninterval_length=30\nservice_check_timeout=45\ncheck_result_path={}\n",
            etc.join("var/spool").display()
        ),
    )
    .expect("write");
    let main = etc.join("nagios.cfg");
    let (text, said) = import(&["nagios", main.to_str().expect("utf-8")]).await;
    assert_eq!(
        imported_counts(&text, &said),
        nagios_counts(&main),
        "{text}"
    );
    let spec = parse(&text);
    assert_eq!(
        names(&spec),
        [
            "core",
            "core-args",
            "web1",
            "web1-args",
            "web1-backup",
            "web1-piped",
            "web2",
            "web2-piped"
        ]
    );
    // Inheritance: the leftmost template's `+hostgroups` and `_RACK`, the other's check.
    let core = check(&spec, "core");
    assert_eq!(
        argv(core),
        [
            "/usr/lib/nagios/plugins/check_dummy",
            "0",
            "host core at 127.0.0.1"
        ]
    );
    assert_eq!(
        core.interval,
        Duration::from_secs(60),
        "2 × interval_length 30"
    );
    assert_eq!(core.description.as_deref(), Some("The core switch"));
    assert_eq!(
        core.runbook.as_deref(),
        Some("https://wiki.example.com/hosts/core")
    );
    assert_eq!(core.owner.as_deref(), Some("network"));
    assert_eq!(core.labels["hostgroup/racked"], "member");
    assert_eq!(core.labels["hostgroup/everything"], "member");
    // Macros: $ARGn$ with `\!`, custom variables of host and service, $SERVICEDESC$.
    assert_eq!(
        argv(check(&spec, "core-args")),
        [
            "/usr/lib/nagios/plugins/check_dummy",
            "1",
            "a b!c",
            "r12",
            "8080",
            "Args"
        ]
    );
    // `contacts` chosen with `contact_groups null`; interval 1 × 30 s; the main config's timeout.
    let args = check(&spec, "web1-args");
    assert_eq!(args.owner.as_deref(), Some("alice"));
    assert_eq!(args.interval, Duration::from_secs(30));
    assert_eq!(args.timeout, Duration::from_secs(45));
    assert_eq!(args.depends_on, ["web1"]);
    // `!web2` excluded from a nested host group.
    assert!(!names(&spec).contains(&"web2-args"));
    // A pipe needs the shell, and it is said.
    let piped = check(&spec, "web1-piped");
    assert_eq!(
        argv(piped),
        [
            "sh",
            "-c",
            "/usr/lib/nagios/plugins/check_dummy 0 ok | tr a-z A-Z"
        ]
    );
    assert!(said.contains("runs through `sh -c`"), "{said}");
    assert_eq!(
        piped.runbook.as_deref(),
        Some("https://runbooks.example.com/piped")
    );
    assert_eq!(piped.labels["servicegroup/frontends"], "member");
    // servicedependency by host; every service on its host's check.
    assert_eq!(piped.depends_on, ["web1", "web1-args"]);
    assert_eq!(check(&spec, "web2-piped").depends_on, ["web1-args", "web2"]);
    // parents and hostdependency.
    assert_eq!(check(&spec, "web1").depends_on, ["core"]);
    assert_eq!(check(&spec, "web2").depends_on, ["core"]);
    // Passive with freshness: push-only with the threshold as ttl.
    let backup = check(&spec, "web1-backup");
    assert!(backup.is_push_only());
    assert_eq!(backup.ttl, Some(Duration::from_secs(7200)));
    assert!(
        said.contains("`max_check_attempts 3` is not carried over"),
        "{said}"
    );
    // --owner-from contactgroups is the default; with contacts, a host naming only a group
    // still has that group as owner.
    let (by_contacts, _) = import(&[
        "nagios",
        main.to_str().expect("utf-8"),
        "--owner-from",
        "contacts",
    ])
    .await;
    let by_contacts = parse(&by_contacts);
    assert_eq!(
        check(&by_contacts, "core").owner.as_deref(),
        Some("network")
    );
    assert_eq!(
        check(&by_contacts, "web1-args").owner.as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn one_file_per_host_group_lints_and_is_stable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = format!("{}/spec/", dir.path().display());
    let (_, said) = import(&[
        "nagios",
        "/etc/nagios4/nagios.cfg",
        "--datacenter",
        "ams1",
        "-o",
        &out,
    ])
    .await;
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .expect("written")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["deployment-and-handlers.yaml", "linux-servers.yaml"],
        "{said}"
    );
    let paths: Vec<String> = files.iter().map(|f| format!("{out}{f}")).collect();
    let mut args = vec!["lint"];
    args.extend(paths.iter().map(String::as_str));
    let lint = run(&args).await;
    assert_eq!(lint.status.code(), Some(0), "{}", stderr(&lint));
    let first: Vec<String> = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    import(&[
        "nagios",
        "/etc/nagios4/nagios.cfg",
        "--datacenter",
        "ams1",
        "-o",
        &out,
    ])
    .await;
    let second: Vec<String> = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    assert_eq!(first, second, "byte-identical");
}

/// A plugin that writes its arguments, one per line, to the file its first argument names.
fn recorder(dir: &Path) -> PathBuf {
    let path = dir.join("record");
    std::fs::write(
        &path,
        "#!/bin/sh\nout=$1; shift\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$out\"\necho 'OK - recorded'\n",
    )
    .expect("write");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    path
}

#[tokio::test]
async fn imported_checks_run_the_plugins_nagios_would_run_with_the_same_argv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tcp = mdd_testkit::tcp::serve("hello\r\n", &[]).await;
    let http = mdd_testkit::http::serve(
        mdd_testkit::http::Routes::new().with("/health", mdd_testkit::http::Reply::ok("fine")),
    )
    .await;
    let record = recorder(dir.path());
    let by_mdd = dir.path().join("by-mdd");
    let by_sh = dir.path().join("by-sh");
    let objects = format!(
        r#"
define command {{
    command_name check_tcp
    command_line $USER1$/check_tcp -H $HOSTADDRESS$ -p $ARG1$
}}
define command {{
    command_name check_http
    command_line $USER1$/check_http -H '$HOSTADDRESS$' -p $ARG1$ -u "$ARG2$" -s fine
}}
define command {{
    command_name record
    command_line {record} $ARG1$ -H $HOSTADDRESS$ -w '$ARG2$' "x $ARG3$" \'lone\' a\ b
}}
define host {{
    host_name lo
    address   127.0.0.1
}}
define service {{
    host_name           lo
    service_description tcp
    check_command       check_tcp!{tcp_port}
    check_interval      1
}}
define service {{
    host_name           lo
    service_description http
    check_command       check_http!{http_port}!/health
    check_interval      1
}}
define service {{
    host_name           lo
    service_description record
    check_command       record!{by_mdd}!10%,20 ms!two words
    check_interval      1
}}
"#,
        record = record.display(),
        tcp_port = tcp.port(),
        http_port = http.port(),
        by_mdd = by_mdd.display(),
    );
    let objects_file = dir.path().join("lo.cfg");
    std::fs::write(&objects_file, objects).expect("write");
    let resource = dir.path().join("resource.cfg");
    std::fs::write(&resource, "$USER1$=/usr/lib/nagios/plugins\n").expect("write");
    let out = dir.path().join("lo.yaml");
    import(&[
        "nagios",
        resource.to_str().expect("utf-8"),
        objects_file.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ])
    .await;
    let verify = run(&["verify", out.to_str().expect("utf-8"), "--format", "json"]).await;
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&verify), stderr(&verify)));
    let statuses: BTreeMap<String, String> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        BTreeMap::from([
            ("lo-http".to_string(), "ok".to_string()),
            ("lo-record".to_string(), "ok".to_string()),
            ("lo-tcp".to_string(), "ok".to_string()),
        ]),
        "{report:#}"
    );
    // The line Nagios would hand to /bin/sh, with its macros filled in, run by sh itself.
    let line = format!(
        "{} {} -H 127.0.0.1 -w '10%,20 ms' \"x two words\" \\'lone\\' a\\ b",
        record.display(),
        by_sh.display()
    );
    let sh = std::process::Command::new("/bin/sh")
        .args(["-c", &line])
        .output()
        .expect("sh");
    assert!(sh.status.success());
    let by_mdd = std::fs::read_to_string(&by_mdd).expect("the imported check ran the recorder");
    let by_sh = std::fs::read_to_string(&by_sh).expect("sh ran the recorder");
    assert_eq!(by_mdd, by_sh);
    assert_eq!(
        by_mdd,
        "-H\n127.0.0.1\n-w\n10%,20 ms\nx two words\n'lone'\na b\n"
    );
}

#[tokio::test]
async fn nrpe_commands_become_checks_for_a_subscription() {
    let (text, said) = import(&["nrpe", "/etc/nagios/nrpe.cfg"]).await;
    let spec = parse(&text);
    assert_eq!(
        names(&spec),
        [
            "check_hda1",
            "check_load",
            "check_total_procs",
            "check_users",
            "check_zombie_procs"
        ]
    );
    let load = check(&spec, "check_load");
    assert_eq!(
        argv(load),
        [
            "/usr/lib/nagios/plugins/check_load",
            "-r",
            "-w",
            ".15,.10,.05",
            "-c",
            ".30,.25,.20"
        ]
    );
    assert_eq!(load.subscriptions, ["nrpe"]);
    assert_eq!(load.timeout, Duration::from_secs(60), "command_timeout");
    assert!(said.contains("configure the NRPE daemon"), "{said}");

    // include_dir, a command taking arguments, one needing a shell, a redefinition.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("nrpe.d")).expect("dir");
    std::fs::write(
        dir.path().join("nrpe.cfg"),
        "command_timeout=20\ninclude_dir=nrpe.d\ncommand[check_disk]=/usr/lib/nagios/plugins/check_disk -w 20% -c 10% -p /\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("nrpe.d/local.cfg"),
        "command[check_disk]=/usr/lib/nagios/plugins/check_disk -w 5% -c 2% -p /\ncommand[check_any]=/usr/lib/nagios/plugins/check_dummy $ARG1$\ncommand[check_count]=ls /tmp | wc -l\n",
    )
    .expect("write");
    let config = dir.path().join("nrpe.cfg");
    let (text, said) = import(&[
        "nrpe",
        config.to_str().expect("utf-8"),
        "--subscription",
        "web",
    ])
    .await;
    let spec = parse(&text);
    assert_eq!(names(&spec), ["check_count", "check_disk"]);
    assert_eq!(
        argv(check(&spec, "check_disk")),
        [
            "/usr/lib/nagios/plugins/check_disk",
            "-w",
            "5%",
            "-c",
            "2%",
            "-p",
            "/"
        ],
        "the later definition wins, as in NRPE"
    );
    assert_eq!(
        argv(check(&spec, "check_count")),
        ["sh", "-c", "ls /tmp | wc -l"]
    );
    assert_eq!(check(&spec, "check_disk").subscriptions, ["web"]);
    assert_eq!(check(&spec, "check_disk").timeout, Duration::from_secs(20));
    assert!(
        said.contains("local.cfg:2: NRPE command `check_any` takes its arguments from the caller"),
        "{said}"
    );
}

#[tokio::test]
async fn sensu_go_resources_in_yaml_and_json() {
    let (text, said) = import(&[
        "sensu-go",
        corpus("sensu-go/sensu-docs-6.14-examples.yaml")
            .to_str()
            .expect("utf-8"),
    ])
    .await;
    let spec = parse(&text);
    assert_eq!(
        names(&spec),
        [
            "ad_hoc_check",
            "check_cpu",
            "check_minimum",
            "collect-metrics",
            "cron_check",
            "interval_check",
            "interval_test",
            "nginx_service",
            "ping-github-api",
            "proxy_check",
            "proxy_check_proxy_requests"
        ]
    );
    let proxy = check(&spec, "proxy_check");
    assert_eq!(argv(proxy), ["http_check.sh", "https://sensu.io"]);
    assert_eq!(proxy.entity.as_deref(), Some("sensu-site"));
    assert_eq!(proxy.subscriptions, ["run_proxies"]);
    assert_eq!(proxy.handlers, ["slack"]);
    assert_eq!(proxy.interval, Duration::from_secs(60));
    // publish: false is push-only.
    assert!(check(&spec, "ad_hoc_check").is_push_only());
    // Quoted JSON stays one argument; an environment variable keeps the shell.
    assert_eq!(
        argv(check(&spec, "nginx_service")),
        [
            "sensu-processes-check",
            "--search",
            r#"[{"search_string": "nginx"}]"#
        ]
    );
    assert_eq!(
        argv(check(&spec, "ping-github-api")),
        ["sh", "-c", "ping-github-api.sh $GITHUB_TOKEN"]
    );
    // The pipe handler is a command handler; the TCP one is noted.
    assert_eq!(spec.handlers.len(), 1);
    assert_eq!(
        spec.handlers[0].kind.describe(),
        (
            "command",
            "[sensu-slack-handler, --channel, '#monitoring']".to_string()
        )
    );
    for expected in [
        "examples.yaml:28: Sensu Go check `cron_check`: `cron` is not carried over",
        "examples.yaml:88: Sensu Go check `check_cpu`: `subdues` is not carried over",
        "examples.yaml:231: the handler `tcp_handler` is a tcp handler",
        "examples.yaml:205: the HookConfig `process_tree` is not carried over",
        "make it with `mdd silence add --entity i-424242",
    ] {
        assert!(said.contains(expected), "{expected}\n{said}");
    }

    let (text, said) = import(&[
        "sensu-go",
        corpus("sensu-go/sensu-docs-6.14-examples.json")
            .to_str()
            .expect("utf-8"),
    ])
    .await;
    let spec = parse(&text);
    assert_eq!(
        names(&spec),
        ["check_minimum", "nginx_service", "proxy_check"]
    );
    assert!(
        said.contains("examples.json:19: Sensu Go check `proxy_check` names the handler `slack`"),
        "{said}"
    );
}

#[tokio::test]
async fn sensu_classic_merges_as_sensu_does() {
    let fixture = corpus("sensu-classic/sensu-spec-fixture");
    let (text, said) = import(&[
        "sensu-classic",
        fixture.join("config.json").to_str().expect("utf-8"),
        fixture.join("conf.d").to_str().expect("utf-8"),
    ])
    .await;
    let spec = parse(&text);
    // conf.d/merger.json replaces the command and adds subscribers; the interval stays.
    let merger = check(&spec, "merger");
    assert_eq!(argv(merger), ["echo", "-n", "merger"]);
    assert_eq!(merger.subscriptions, ["test"]);
    assert_eq!(merger.interval, Duration::from_secs(60));
    assert_eq!(check(&spec, "source").entity.as_deref(), Some("switch-y"));
    assert_eq!(check(&spec, "standalone").subscriptions, ["standalone"]);
    assert!(check(&spec, "unpublished").is_push_only());
    assert!(
        said.contains("config.json:214: the `client` section is not carried over"),
        "{said}"
    );

    // Lists combined without repeats, later scalars win, dependencies in both forms.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("conf.d/more")).expect("dir");
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"checks": {"app": {"command": "check-app", "subscribers": ["a"], "interval": 10,
             "dependencies": ["db", "db1/disk"], "playbook": "https://wiki/app"},
           "db": {"command": "check-db --port 5432", "subscribers": ["db"]},
           "disk": {"command": "check-disk", "subscribers": ["db"], "handlers": ["mail"]}},
           "handlers": {"mail": {"type": "pipe", "command": "mail -s alert ops@example.com"}}}"#,
    )
    .expect("write");
    std::fs::write(
        dir.path().join("conf.d/more/app.json"),
        r#"{"checks": {"app": {"subscribers": ["b", "a"], "interval": 20, "contact": "web-team"}}}"#,
    )
    .expect("write");
    let (text, _) = import(&[
        "sensu-classic",
        dir.path().join("config.json").to_str().expect("utf-8"),
        dir.path().join("conf.d").to_str().expect("utf-8"),
    ])
    .await;
    let spec = parse(&text);
    let app = check(&spec, "app");
    assert_eq!(app.subscriptions, ["a", "b"]);
    assert_eq!(app.interval, Duration::from_secs(20));
    assert_eq!(app.depends_on, ["db", "disk"]);
    assert_eq!(app.runbook.as_deref(), Some("https://wiki/app"));
    assert_eq!(app.owner.as_deref(), Some("web-team"));
    assert_eq!(argv(check(&spec, "db")), ["check-db", "--port", "5432"]);
    assert_eq!(check(&spec, "disk").handlers, ["mail"]);
    assert_eq!(
        spec.handlers[0].kind.describe(),
        ("command", "[mail, -s, alert, ops@example.com]".to_string())
    );
}

#[tokio::test]
async fn unreadable_and_broken_inputs_exit_2_naming_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.cfg");
    std::fs::write(
        &broken,
        "define host {\n  host_name a\n\n  define service {\n}\n",
    )
    .expect("write");
    let output = run(&["import", "nagios", broken.to_str().expect("utf-8")]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("broken.cfg:4:3: `define` inside the host defined at line 1"),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty(), "nothing written");

    let missing = dir.path().join("nowhere.cfg");
    let output = run(&["import", "nagios", missing.to_str().expect("utf-8")]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read") && stderr(&output).contains("nowhere.cfg"),
        "{}",
        stderr(&output)
    );

    let yaml = dir.path().join("bad.yaml");
    std::fs::write(&yaml, "type: CheckConfig\nspec: [unclosed\n").expect("write");
    let output = run(&["import", "sensu-go", yaml.to_str().expect("utf-8")]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("bad.yaml:"), "{}", stderr(&output));

    let json = dir.path().join("bad.json");
    std::fs::write(&json, "{\"checks\": {\"a\": }}").expect("write");
    let output = run(&["import", "sensu-classic", json.to_str().expect("utf-8")]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("bad.json:1:"),
        "{}",
        stderr(&output)
    );

    // An output that exists is left as it was when the import fails.
    let out = dir.path().join("out.yaml");
    std::fs::write(&out, "kept").expect("write");
    let output = run(&[
        "import",
        "nagios",
        broken.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "kept");
}

/// Directories and constants that let the real Icinga 2 run from a temporary directory as
/// whoever runs the tests.
fn icinga_defines(dir: &Path) -> Vec<String> {
    let user = std::process::Command::new("id")
        .arg("-un")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .expect("id");
    let group = std::process::Command::new("id")
        .arg("-gn")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .expect("id");
    let mut defines = Vec::new();
    for (name, sub) in [
        ("InitRunDir", "run"),
        ("DataDir", "data"),
        ("CacheDir", "cache"),
        ("LogDir", "log"),
        ("SpoolDir", "spool"),
    ] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).expect("icinga dir");
        defines.push(format!("-D{name}={}", path.display()));
    }
    defines.push(format!("-DRunAsUser={user}"));
    defines.push(format!("-DRunAsGroup={group}"));
    defines
}

/// What `icinga2 daemon -C` says it instantiated: (services, hosts).
fn icinga_counts(config: &Path, dir: &Path) -> (usize, usize) {
    let output = std::process::Command::new("icinga2")
        .args(["daemon", "-C", "-c"])
        .arg(config)
        .args(icinga_defines(dir))
        .output()
        .expect("icinga2 runs (the test command installs icinga2-bin)");
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "icinga2 -C:\n{said}");
    let count = |what: &str| -> usize {
        said.lines()
            .find_map(|l| {
                let rest = l.split("Instantiated ").nth(1)?;
                rest.strip_suffix(&format!(" {what}."))?.parse().ok()
            })
            .unwrap_or(0)
    };
    (
        count("Services").max(count("Service")),
        count("Hosts").max(count("Host")),
    )
}

#[tokio::test]
async fn debians_icinga2_config_imports_as_icinga_counts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Path::new("/etc/icinga2/icinga2.conf");
    let (text, said) = import(&[
        "icinga2",
        "/etc/icinga2/icinga2.conf",
        "-D",
        "NodeName=node1",
    ])
    .await;
    let spec = parse(&text);
    let services = text
        .lines()
        .filter(|l| l.starts_with("  # service `"))
        .count();
    let inside = said.matches("runs inside Icinga, not as a plugin").count();
    let hosts = text.lines().filter(|l| l.starts_with("  # host `")).count();
    assert_eq!(
        (services + inside, hosts),
        icinga_counts(config, dir.path()),
        "{said}\n{text}"
    );
    assert_eq!(inside, 1, "the `icinga` check: {said}");
    // The ITL's commands, with its functions evaluated.
    assert_eq!(
        argv(check(&spec, "node1")),
        [
            "/usr/lib/nagios/plugins/check_ping",
            "-H",
            "127.0.0.1",
            "-c",
            "5000,100%",
            "-w",
            "3000,80%"
        ]
    );
    assert_eq!(
        argv(check(&spec, "node1-ssh")),
        ["/usr/lib/nagios/plugins/check_ssh", "127.0.0.1"]
    );
    assert_eq!(
        argv(check(&spec, "node1-http")),
        [
            "/usr/lib/nagios/plugins/check_http",
            "-I",
            "127.0.0.1",
            "-u",
            "/"
        ]
    );
    assert_eq!(
        argv(check(&spec, "node1-swap")),
        [
            "/usr/lib/nagios/plugins/check_swap",
            "-c",
            "25%",
            "-w",
            "50%"
        ]
    );
    let disk_root = argv(check(&spec, "node1-disk-2"));
    assert_eq!(disk_root[disk_root.len() - 2..], ["-p", "/"]);
    let ping = check(&spec, "node1-ping4");
    assert_eq!(ping.owner.as_deref(), Some("icingaadmins"));
    assert_eq!(ping.depends_on, ["node1"]);
    assert_eq!(ping.interval, Duration::from_secs(60));
    assert_eq!(ping.labels["hostgroup/linux-servers"], "member");
    assert_eq!(ping.labels["servicegroup/ping"], "member");
    assert!(
        said.contains("/etc/icinga2/conf.d/templates.conf:")
            && said.contains("`retry_interval` is not carried over"),
        "{said}"
    );
    let out = dir.path().join("icinga.yaml");
    std::fs::write(&out, &text).expect("write");
    let lint = run(&["lint", out.to_str().expect("utf-8")]).await;
    assert_eq!(lint.status.code(), Some(0), "{}", stderr(&lint));
}

/// A plugin that writes its arguments, one per line, to `$RECORD_DIR/<its first argument>`.
fn env_recorder(dir: &Path) -> PathBuf {
    let path = dir.join("record.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nout=\"$RECORD_DIR/$1\"; shift\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$out\"\necho 'OK - recorded'\n",
    )
    .expect("write");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    path
}

#[tokio::test]
async fn imported_icinga2_checks_run_the_argv_icinga_itself_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = env_recorder(dir.path());
    let config = dir.path().join("icinga2.conf");
    std::fs::write(
        &config,
        format!(
            r#"const PluginDir = "/usr/lib/nagios/plugins"
include <itl>
include <plugins>
object CheckerComponent "checker" {{ }}
object CheckCommand "rec" {{
  command = [ "{record}", "$service.name$" ]
  arguments = {{
    "-z" = {{ value = "$zed$"; order = -1 }}
    "-b" = "$bee$"
    "-a" = {{ set_if = "$flag$" }}
    "-n" = {{ set_if = "$no_flag$" }}
    "--list" = {{ value = "$items$"; repeat_key = false }}
    "-r" = {{ value = "$items$" }}
    "--sep" = {{ value = "$bee$"; separator = "=" }}
    "plain" = {{ value = "$bee$"; skip_key = true; order = 5 }}
    "-m" = "$missing$"
    "-f" = {{{{ return macro("$bee$") + "-fn" }}}}
    "-k" = {{ key = "--renamed"; value = "$address$" }}
  }}
  vars.bee = "from-command"
  vars.zed = 3000.0
  vars.no_flag = false
}}
object Host "h" {{
  address = "127.0.0.1"
  check_command = "dummy"
  vars.bee = "from-host"
  vars.flag = true
  vars.items = [ "x", "y z" ]
  vars.things["one"] = {{ bee = "loop-one" }}
  vars.things["two"] = {{ }}
}}
apply Service "s-" for (thing => config in host.vars.things) {{
  check_command = "rec"
  check_interval = 1s
  vars += config
}}
apply Service "plain" {{
  check_command = "rec"
  check_interval = 1s
  vars.zed = 1.5
  assign where match("127.*", host.address)
  ignore where host.name == "db"
}}
apply Service "never" {{
  check_command = "rec"
  assign where host.vars.os == "Windows"
}}
object Host "db" {{
  address = "127.0.0.2"
  check_command = "dummy"
  vars.dummy_state = 0
  vars.dummy_text = "db is up"
}}
object HostGroup "web" {{
  assign where host.name == "h"
}}
apply Dependency "on-db" to Service {{
  parent_host_name = "db"
  assign where service.name == "plain"
}}
"#,
            record = record.display()
        ),
    )
    .expect("write");
    // Icinga itself runs the checks.
    let by_icinga = dir.path().join("by-icinga");
    std::fs::create_dir_all(&by_icinga).expect("dir");
    let mut daemon = Command::new("icinga2");
    daemon
        .args(["daemon", "-c"])
        .arg(&config)
        .args(icinga_defines(dir.path()))
        .env("RECORD_DIR", &by_icinga)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        // The daemon starts a child of its own that outlives a kill of the first process:
        // the whole group is killed, here and if the test fails on the way.
        .process_group(0);
    let mut daemon = daemon.spawn().expect("icinga2 daemon");
    let group = KillGroup(daemon.id().and_then(|id| i32::try_from(id).ok()));
    let recorded = ["plain", "s-one", "s-two"];
    for _ in 0..300 {
        if recorded.iter().all(|n| by_icinga.join(n).exists()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A moment for the last file to be written whole.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(group);
    let _ = daemon.wait().await;
    // mdd runs what it imported.
    let (text, _) = import(&["icinga2", config.to_str().expect("utf-8")]).await;
    let spec = parse(&text);
    assert_eq!(names(&spec), ["db", "h", "h-plain", "h-s-one", "h-s-two"]);
    assert_eq!(
        argv(check(&spec, "db")),
        ["/usr/lib/nagios/plugins/check_dummy", "0", "db is up"]
    );
    // `apply Dependency`, the implicit dependency on the host, a group by `assign where`.
    let plain = check(&spec, "h-plain");
    assert_eq!(plain.depends_on, ["db", "h"]);
    assert_eq!(plain.labels["hostgroup/web"], "member");
    assert_eq!(check(&spec, "h-s-one").depends_on, ["h"]);
    let out = dir.path().join("imported.yaml");
    std::fs::write(&out, &text).expect("write");
    let by_mdd = dir.path().join("by-mdd");
    std::fs::create_dir_all(&by_mdd).expect("dir");
    let verify = tokio::time::timeout(
        Duration::from_secs(60),
        mdd()
            .args(["verify", out.to_str().expect("utf-8")])
            .env("RECORD_DIR", &by_mdd)
            .output(),
    )
    .await
    .expect("in time")
    .expect("verify ran");
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    for name in recorded {
        let icinga = std::fs::read_to_string(by_icinga.join(name))
            .unwrap_or_else(|e| panic!("icinga ran {name}: {e}"));
        let mdd = std::fs::read_to_string(by_mdd.join(name)).expect("mdd ran it");
        assert_eq!(mdd, icinga, "{name}");
    }
    // The loop's own value wins over the host's, which wins over the command's.
    let one = std::fs::read_to_string(by_mdd.join("s-one")).expect("read");
    assert!(
        one.contains("--sep=loop-one\n") && one.contains("-f\nloop-one-fn\n"),
        "{one}"
    );
}

/// Kills a process group with SIGKILL when dropped.
struct KillGroup(Option<i32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
