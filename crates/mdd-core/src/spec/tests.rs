use std::time::Duration;

use super::*;

fn errors_of(text: &str) -> Vec<SpecError> {
    match load_one("spec.yaml", text) {
        Ok(spec) => panic!("expected errors, got {spec:?}"),
        Err(SpecErrors(errors)) => errors,
    }
}

/// `(line, field, a fragment of the message)` for every error, for compact assertions.
fn summary(errors: &[SpecError]) -> Vec<(u32, String, String)> {
    errors
        .iter()
        .map(|e| (e.line, e.field.clone(), e.message.clone()))
        .collect()
}

fn assert_has(errors: &[SpecError], line: u32, field: &str, fragment: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.line == line && e.field == field && e.message.contains(fragment)),
        "no error at line {line} on `{field}` containing `{fragment}` in:\n{:#?}",
        summary(errors)
    );
}

const FULL: &str = r#"
defaults: { interval: 1m, timeout: 5s }
deployments:
  - name: ams1
    description: The Amsterdam datacenter.
    selector: { datacenter: ams1 }
    settle: 10m
checks:
  - name: ams1-dns
    description: Internal resolvers answer for the service domain.
    owner: network
    runbook: https://wiki.example/dns
    labels: { datacenter: ams1, rack: 12 }
    dns: { name: api.ams1.example.com, type: aaaa, server: "127.0.0.1:5353", expect: ["::1"], max_latency: 100ms }
  - name: ams1-ldap
    owner: identity
    depends_on: [ams1-dns]
    timeout: 2s
    tcp: { host: ldap.ams1.example.com, port: 636, send: "PING\n", expect: PONG, max_latency: 200ms }
  - name: ams1-registry
    interval: 10s
    http:
      url: https://registry.ams1.example.com/v2/
      method: head
      headers: { Authorization: "Bearer x" }
      status: [200, 401]
      body_contains: ok
      body_regex: "^v[0-9]+"
      max_latency: 500ms
      follow_redirects: false
      ca: certs/ca.pem
      insecure: false
  - name: ams1-registry-cert
    tls: { host: registry.ams1.example.com, warn_days: 30, crit_days: 3 }
  - name: docker-host-disk
    subscriptions: [docker-hosts]
    command: /usr/lib/nagios/plugins/check_disk -w "20 %" -c 10% -p /
  - name: listed
    command: [sh, -c, "echo 'OK'"]
  - name: scalars
    command: [check_dummy, 0, true, 1.5]
"#;

#[test]
fn a_full_spec_parses_with_defaults_applied() {
    let spec = load(&[SpecSource {
        file: "dc/spec.yaml",
        text: FULL,
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.checks.len(), 7);
    assert_eq!(spec.deployments[0].settle, Duration::from_secs(600));

    let dns = &spec.checks[0];
    assert_eq!(dns.interval, Duration::from_secs(60));
    assert_eq!(dns.timeout, Duration::from_secs(5));
    assert_eq!(dns.labels["rack"], "12");
    assert_eq!(dns.source.line, 9);
    let Probe::Dns(d) = &dns.probe else {
        panic!("dns probe expected")
    };
    assert_eq!(d.record_type, RecordType::Aaaa);
    assert_eq!(d.server.map(|s| s.port()), Some(5353));

    let ldap = &spec.checks[1];
    assert_eq!(ldap.depends_on, ["ams1-dns"]);
    assert_eq!(ldap.timeout, Duration::from_secs(2));

    let Probe::Http(h) = &spec.checks[2].probe else {
        panic!("http probe expected")
    };
    assert_eq!(h.method, "HEAD");
    assert_eq!(h.status, [200, 401]);
    assert!(!h.follow_redirects);
    assert_eq!(
        h.ca.as_deref(),
        Some(std::path::Path::new("dc/certs/ca.pem"))
    );
    assert_eq!(spec.checks[2].interval, Duration::from_secs(10));

    let Probe::Tls(t) = &spec.checks[3].probe else {
        panic!("tls probe expected")
    };
    assert_eq!(
        (t.port, t.server_name.as_str()),
        (443, "registry.ams1.example.com")
    );
    assert_eq!((t.warn_days, t.crit_days), (30, 3));

    let Probe::Command(c) = &spec.checks[4].probe else {
        panic!("command probe expected")
    };
    assert_eq!(
        c.argv,
        [
            "/usr/lib/nagios/plugins/check_disk",
            "-w",
            "20 %",
            "-c",
            "10%",
            "-p",
            "/"
        ]
    );
    assert_eq!(spec.checks[4].subscriptions, ["docker-hosts"]);
    let Probe::Command(c) = &spec.checks[5].probe else {
        panic!("command probe expected")
    };
    assert_eq!(c.argv, ["sh", "-c", "echo 'OK'"]);
    let Probe::Command(c) = &spec.checks[6].probe else {
        panic!("command probe expected")
    };
    assert_eq!(c.argv, ["check_dummy", "0", "true", "1.5"]);
}

#[test]
fn every_error_in_the_file_is_reported_with_its_position() {
    let text = r#"checks:
  - name: a
    tcp: { host: h, port: 70000 }
  - name: b
    interval: 30
    timeout: soon
    tcp: { host: h, port: "636" }
  - name: c
    http: { url: "http://x/" }
    tcp: { host: h, port: 1 }
  - name: d
    owner: me
  - name: a
    command: check
  - name: e
    depends_on: [nope, a]
    dependson: [a]
    http: { url: "http://x/", body_regex: "([a-z" }
  - name: "bad name!"
    command: [true, 0, {}]
  - name: f
    labels: x
    command: "unterminated 'quote"
"#;
    let errors = errors_of(text);
    assert_has(&errors, 3, "checks[0].tcp.port", "out of range");
    assert_has(&errors, 5, "checks[1].interval", "expected a duration");
    assert_has(&errors, 6, "checks[1].timeout", "not a duration");
    assert_has(&errors, 7, "checks[1].tcp.port", "expected a port number");
    assert_has(&errors, 10, "checks[2].tcp", "exactly one probe");
    assert_has(&errors, 11, "checks[3]", "no probe");
    assert_has(&errors, 13, "checks[4].name", "duplicate check name `a`");
    assert_has(
        &errors,
        16,
        "checks[5].depends_on[0]",
        "unknown check `nope`",
    );
    assert_has(
        &errors,
        17,
        "checks[5].dependson",
        "did you mean `depends_on`",
    );
    assert_has(
        &errors,
        18,
        "checks[5].http.body_regex",
        "invalid regular expression: unclosed character class",
    );
    assert_has(&errors, 19, "checks[6].name", "not a valid name");
    assert_has(
        &errors,
        20,
        "checks[6].command[2]",
        "expected an argument, found a mapping",
    );
    assert_has(&errors, 22, "checks[7].labels", "expected a mapping");
    assert_has(&errors, 23, "checks[7].command", "quote is not closed");
    assert_eq!(errors.len(), 14, "{:#?}", summary(&errors));
    // Errors are in file order and render as file:line:column: field (check): message.
    assert!(errors.windows(2).all(|w| w[0].line <= w[1].line));
    let rendered = SpecErrors(errors).to_string();
    assert!(
        rendered.contains("spec.yaml:3:") && rendered.contains("checks[0].tcp.port (check a): "),
        "{rendered}"
    );
}

#[test]
fn columns_point_at_the_value() {
    let errors = errors_of("checks:\n  - name: a\n    tcp: { host: h, port: 0 }\n");
    assert_eq!((errors[0].line, errors[0].column), (3, 27));
}

#[test]
fn cycles_are_rejected_naming_the_loop() {
    let text = "checks:
  - { name: a, depends_on: [b], command: x }
  - { name: b, depends_on: [c], command: x }
  - { name: c, depends_on: [a], command: x }
  - { name: self, depends_on: [self], command: x }
  - { name: free, command: x }
";
    let errors = errors_of(text);
    assert_eq!(errors.len(), 2, "{:#?}", summary(&errors));
    assert!(
        errors[0].message.contains("a → b → c → a"),
        "{:#?}",
        summary(&errors)
    );
    assert!(
        errors[1].message.contains("self → self"),
        "{:#?}",
        summary(&errors)
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let errors = errors_of("checks:\n  - name: a\n    tcp: { host: h\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].line >= 3, "{:?}", errors[0]);
    let errors = errors_of("checks:\n  - name: a\n    name: b\n    command: x\n");
    assert!(
        errors[0].message.to_lowercase().contains("duplicate"),
        "{:?}",
        errors[0]
    );
}

#[test]
fn wrong_shapes_everywhere() {
    assert_has(&errors_of("- a\n- b\n"), 1, "", "expected a mapping");
    assert_has(&errors_of("checks: 5\n"), 1, "checks", "expected a list");
    assert_has(
        &errors_of("checks: []\nalerts: []\n"),
        2,
        "alerts",
        "unknown field",
    );
    assert_has(
        &errors_of("defaults: { interval: 0s }\nchecks: []\n"),
        1,
        "defaults.interval",
        "longer than zero",
    );
    assert_has(
        &errors_of("checks:\n  - name: x\n    command: []\n"),
        3,
        "checks[0].command",
        "empty",
    );
    assert_has(
        &errors_of("checks:\n  - name: x\n    http: { url: 'ftp://h/' }\n"),
        3,
        "checks[0].http.url",
        "http:// or https://",
    );
    assert_has(
        &errors_of("checks:\n  - name: x\n    dns: { name: h, type: BOGUS }\n"),
        3,
        "checks[0].dns.type",
        "unknown record type",
    );
    assert_has(
        &errors_of("checks:\n  - name: x\n    dns: { name: h, server: ns1.example }\n"),
        3,
        "checks[0].dns.server",
        "not an IP address",
    );
    assert_has(
        &errors_of("checks:\n  - name: x\n    tls: { host: h, warn_days: 3, crit_days: 7 }\n"),
        3,
        "checks[0].tls.crit_days",
        "must not be more than",
    );
    assert_has(
        &errors_of("checks:\n  - name: x\n    http: { url: 'http://h/', status: [99] }\n"),
        3,
        "checks[0].http.status",
        "not an HTTP status",
    );
    assert_has(
        &errors_of("checks:\n  - name: x\n    http: { url: 'http://h/', headers: { 'a b': c } }\n"),
        3,
        "checks[0].http.headers.a b",
        "header name",
    );
    assert_has(
        &errors_of("checks:\n  - name: x\n    tcp: { port: 1 }\n"),
        3,
        "checks[0].tcp",
        "missing required field `host`",
    );
}

#[test]
fn several_files_form_one_set() {
    let a = "defaults: { timeout: 3s }\nchecks:\n  - { name: dns, command: x }\n";
    let b = "checks:\n  - { name: ldap, depends_on: [dns], command: x }\n";
    let spec = load(&[
        SpecSource {
            file: "a.yaml",
            text: a,
        },
        SpecSource {
            file: "b.yaml",
            text: b,
        },
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.checks[0].timeout, Duration::from_secs(3));
    assert_eq!(
        spec.checks[1].timeout, DEFAULT_TIMEOUT,
        "defaults are per file"
    );

    let Err(SpecErrors(errors)) = load(&[
        SpecSource {
            file: "a.yaml",
            text: a,
        },
        SpecSource {
            file: "b.yaml",
            text: a,
        },
    ]) else {
        panic!("duplicate across files must fail")
    };
    assert_eq!(errors[0].file, "b.yaml");
    assert!(
        errors[0].message.contains("already used at a.yaml:3"),
        "{errors:?}"
    );
}

#[test]
fn an_invalid_check_does_not_cascade_into_unknown_dependency_errors() {
    let errors = errors_of(
        "checks:\n  - { name: dns, tcp: { host: h, port: 0 } }\n  - { name: ldap, depends_on: [dns], command: x }\n",
    );
    assert_eq!(errors.len(), 1, "{:#?}", summary(&errors));
}

#[test]
fn an_empty_file_has_no_checks() {
    for text in ["", "# only a comment\n", "checks:\n"] {
        let spec = load_one("s.yaml", text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(spec.checks.is_empty());
    }
}

mod properties {
    use proptest::prelude::*;

    use super::super::load_one;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = load_one("fuzz.yaml", &text);
        }

        #[test]
        fn yaml_shaped_text_never_panics(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("checks:".to_string()),
                    Just("  - name: a".to_string()),
                    Just("    depends_on: [a, b]".to_string()),
                    Just("  - { name: b, command: [x] }".to_string()),
                    Just("    tcp: { host: h, port: 99999999999999999999999 }".to_string()),
                    Just("    http: { url: 'http://[::1/' }".to_string()),
                    Just("    interval: 1e400s".to_string()),
                    Just("    &a x: *a".to_string()),
                    "[ -~]{0,40}",
                ],
                0..20,
            )
        ) {
            let _ = load_one("fuzz.yaml", &lines.join("\n"));
        }
    }
}

#[test]
fn hostile_yaml_is_refused_not_obeyed() {
    // A billion laughs: each level multiplies the one before by ten.
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..10 {
        let prev = level - 1;
        bomb.push_str(&format!(
            "a{level}: &a{level} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    bomb.push_str("checks: []\n");
    let errors = errors_of(&bomb);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("budget"), "{errors:?}");

    let deep = format!("checks: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let errors = errors_of(&deep);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("recursion limit"), "{errors:?}");
}

#[test]
fn push_only_checks_ttl_and_flap_thresholds() {
    let spec = load_one(
        "s.yaml",
        "defaults: { interval: 10s, timeout: 2s }
checks:
  - { name: nightly-backup, ttl: 25h }
  - { name: web, low_flap_threshold: 20, high_flap_threshold: 40, command: x }
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(spec.checks[0].is_push_only());
    assert_eq!(
        spec.checks[0].effective_ttl(),
        Duration::from_secs(25 * 3600)
    );
    assert_eq!(
        spec.checks[1].effective_ttl(),
        Duration::from_secs(22),
        "2 × interval + timeout"
    );
    assert_eq!(
        (spec.checks[1].flap.low, spec.checks[1].flap.high),
        (20, 40)
    );

    let errors = errors_of(
        "checks:
  - { name: a, low_flap_threshold: 50, high_flap_threshold: 40, command: x }
  - { name: b, high_flap_threshold: 101, command: x }
  - { name: c, ttl: 0s }
",
    );
    assert_has(
        &errors,
        2,
        "checks[0].low_flap_threshold",
        "must not be above",
    );
    assert_has(&errors, 3, "checks[1].high_flap_threshold", "percentage");
    assert_has(&errors, 4, "checks[2].ttl", "longer than zero");
}

/// Checks travel as JSON from the server to agents; nothing may be lost on the way.
#[test]
fn checks_round_trip_through_json() {
    let spec = load_one("dc/spec.yaml", FULL).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_string(&spec.checks).expect("serialize");
    let back: Vec<Check> = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, spec.checks);
    assert!(json.contains("\"interval_ms\":60000.0"), "{json}");
    let push = load_one("s.yaml", "checks:\n  - { name: p, ttl: 1h }\n").expect("valid");
    let json = serde_json::to_string(&push.checks[0]).expect("serialize");
    assert!(json.contains("\"probe\":\"push\""), "{json}");
}

#[test]
fn proxy_entities() {
    let spec = load_one(
        "s.yaml",
        "checks:\n  - { name: ldap, entity: ldap.ams1, subscriptions: [dc], tcp: { host: ldap.ams1, port: 636 } }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.checks[0].entity.as_deref(), Some("ldap.ams1"));
    let errors = errors_of(
        "checks:\n  - { name: x, entity: 'not ok', command: x }\n  - { name: keepalive, command: x }\n",
    );
    assert_has(&errors, 2, "checks[0].entity", "not a valid entity name");
    assert_has(&errors, 3, "checks[1].name", "reserved");
}

#[test]
fn handlers_parse_and_say_which_checks_they_notify_about() {
    let spec = load_one(
        "spec.yaml",
        "handlers:
  - name: pager
    type: webhook
    url: https://hooks.example.com/pager
    headers: { X-Team: network }
    secret_file: /etc/mdd/pager.secret
    timeout: 5s
    filter: { states: [failing, unknown], occurrences: 3, reminder: 30m, owners: [network] }
  - name: slack
    type: command
    command: [/usr/local/bin/sensu-slack-handler, --channel, ops]
checks:
  - { name: dns, owner: network, ttl: 1h }
  - { name: web, owner: web, ttl: 1h, handlers: [slack] }
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pager = &spec.handlers[0];
    assert_eq!(pager.timeout, Duration::from_secs(5));
    assert_eq!(
        pager.kind,
        HandlerKind::Webhook {
            url: "https://hooks.example.com/pager".into(),
            headers: [("X-Team".to_string(), "network".to_string())].into(),
            secret_file: Some("/etc/mdd/pager.secret".into()),
        }
    );
    assert_eq!(pager.filter.occurrences, 3);
    assert_eq!(pager.filter.reminder, Some(Duration::from_secs(1800)));
    assert_eq!(
        pager.filter.states,
        [crate::State::Failing, crate::State::Unknown]
    );
    let slack = &spec.handlers[1];
    assert_eq!(
        slack.kind,
        HandlerKind::Command {
            argv: vec![
                "/usr/local/bin/sensu-slack-handler".into(),
                "--channel".into(),
                "ops".into()
            ]
        }
    );
    assert_eq!(slack.filter.occurrences, 1, "the default");
    let (dns, web) = (&spec.checks[0], &spec.checks[1]);
    assert!(pager.applies_to(dns), "selected by owner");
    assert!(!pager.applies_to(web));
    assert!(slack.applies_to(web), "named by the check");
    assert!(
        !slack.applies_to(dns),
        "no selector: only checks that name it"
    );
}

#[test]
fn handler_mistakes_are_reported_where_they_are() {
    let errors = errors_of(
        "handlers:
  - name: pager
    type: webhook
  - name: pager
    type: carrier-pigeon
  - name: run
    type: command
    url: http://x.example
    command: [notify]
  - name: hook
    type: webhook
    url: ftp://files.example
    filter: { states: [on-fire], occurrences: 0, remind: 1h }
checks:
  - { name: dns, ttl: 1h, handlers: [pagr] }
",
    );
    assert_has(&errors, 2, "handlers[0]", "needs a `url`");
    assert_has(
        &errors,
        5,
        "handlers[1].type",
        "unknown handler type `carrier-pigeon`",
    );
    assert_has(&errors, 8, "handlers[2].url", "not `url`");
    assert_has(&errors, 12, "handlers[3].url", "must be an http");
    assert_has(
        &errors,
        13,
        "handlers[3].filter.states[0]",
        "unknown state `on-fire`",
    );
    assert_has(&errors, 13, "handlers[3].filter.occurrences", "at least 1");
    assert_has(
        &errors,
        13,
        "handlers[3].filter.remind",
        "did you mean `reminder`",
    );
    assert_has(
        &errors,
        15,
        "checks[0].handlers[0]",
        "unknown handler `pagr`",
    );
}

#[test]
fn webhook_secrets_are_absolute_paths_and_signing_headers_are_mdds() {
    let errors = errors_of(
        "handlers:
  - name: signed
    type: webhook
    url: https://hooks.example
    secret_file: secrets/hook
  - name: forged
    type: webhook
    url: https://hooks.example
    headers: { Webhook-Signature: 'v1,abc' }
  - name: run
    type: command
    command: [notify]
    secret_file: /etc/mdd/s
",
    );
    assert_has(&errors, 5, "handlers[0].secret_file", "absolute path");
    assert_has(&errors, 9, "handlers[1].headers", "set by mdd");
    assert_has(&errors, 13, "handlers[2].secret_file", "not `secret_file`");
}

#[test]
fn duplicate_handler_names_are_refused() {
    let errors = errors_of(
        "handlers:
  - { name: log, type: command, command: [logger] }
  - { name: log, type: command, command: [logger, -t, mdd] }
",
    );
    assert_has(
        &errors,
        3,
        "handlers[1].name",
        "duplicate handler name `log`",
    );
}

#[test]
fn a_spec_of_twelve_thousand_checks_loads() {
    let mut text = String::from("defaults: { interval: 30s, timeout: 5s }\nchecks:\n");
    for i in 0..12_000 {
        text.push_str(&format!(
            "  - name: dc1-web-{i:05}\n    description: The web tier answers on host {i}.\n    owner: web\n    labels: {{ datacenter: dc1, tier: web, rack: r{} }}\n    subscriptions: [web]\n    http: {{ url: 'http://web-{i}.dc1.example:8080/healthz', status: [200] }}\n",
            i % 40
        ));
    }
    assert!(text.len() > 2_000_000, "{} bytes", text.len());
    let spec = load_one("big.yaml", &text).expect("a big spec is legitimate");
    assert_eq!(spec.checks.len(), 12_000);
}

#[test]
fn subscriptions_and_labels_like_no_and_on_are_strings() {
    let spec = load_one(
        "spec.yaml",
        "checks:\n  - { name: a, ttl: 1h, subscriptions: [y, no], labels: { ipv6: on, legacy: off } }\n",
    )
    .expect("loads");
    assert_eq!(spec.checks[0].subscriptions, ["y", "no"]);
    assert_eq!(spec.checks[0].labels["ipv6"], "on");
    assert_eq!(spec.checks[0].labels["legacy"], "off");
}

#[test]
fn commands_are_listed_as_the_spec_writes_them() {
    let argv = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        super::flow_list(&argv(&[
            "/usr/local/bin/sensu-slack-handler",
            "--channel",
            "ops"
        ])),
        "[/usr/local/bin/sensu-slack-handler, --channel, ops]"
    );
    assert_eq!(
        super::flow_list(&argv(&["python3", "-c", "import sys, json; print('x')"])),
        "[python3, -c, 'import sys, json; print(''x'')']"
    );
    assert_eq!(super::flow_list(&argv(&["echo", ""])), "[echo, '']");
    // What it prints parses back to the same list.
    let text = format!(
        "handlers:\n  - {{ name: h, type: command, command: {} }}\n",
        super::flow_list(&argv(&["sh", "-c", "a: b, [c] # d", "it's"]))
    );
    let spec = load_one("spec.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        spec.handlers[0].kind,
        HandlerKind::Command {
            argv: argv(&["sh", "-c", "a: b, [c] # d", "it's"])
        }
    );
}
