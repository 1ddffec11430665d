use std::collections::BTreeMap;

use mdd_core::State;
use mdd_core::spec::load_one;

use super::*;

const SPEC: &str = "deployments:
  - { name: ams1, description: Amsterdam 1 goes live, selector: { dc: ams1 }, settle: 10m }
checks:
  - name: ams1-dns
    owner: team-network
    description: Resolvers answer | for the zone
    runbook: https://wiki.example/dns
    labels: { dc: ams1 }
    tcp: { host: 10.0.0.53, port: 53 }
  - name: ams1-ldap
    owner: team-identity
    labels: { dc: ams1 }
    depends_on: [ams1-dns]
    tcp: { host: ldap.ams1.example.com, port: 636 }
  - name: ams1-app
    owner: team-app
    description: \"<script>alert('x')</script>\"
    labels: { dc: ams1 }
    depends_on: [ams1-ldap]
    subscriptions: [web]
    http: { url: 'https://app.ams1.example.com/healthz' }
  - name: nightly-backup
    ttl: 25h
";

fn live() -> BTreeMap<String, Live> {
    [
        ("ams1-dns", State::Passing, Some("2026-11-26 09:00 UTC")),
        ("ams1-ldap", State::Failing, Some("2026-11-26 09:30 UTC")),
        ("ams1-app", State::Blocked, None),
    ]
    .into_iter()
    .map(|(name, state, since)| {
        (
            name.to_string(),
            Live {
                state,
                since: since.map(str::to_string),
            },
        )
    })
    .collect()
}

fn spec() -> Spec {
    load_one("dc.yaml", SPEC).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn markdown_with_live_states() {
    let spec = spec();
    let live = live();
    let doc = Document::new(
        &spec,
        Some(&live),
        Some("http://127.0.0.1:7700 at 2026-11-26 10:00 UTC".into()),
    );
    insta::assert_snapshot!(doc.render(Format::Markdown));
}

#[test]
fn why_it_matters_follows_the_chain_and_the_deployments() {
    let spec = spec();
    let doc = Document::new(&spec, None, None);
    let check = |name: &str| {
        spec.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(
        doc.why(check("ams1-dns")),
        "Needed by ams1-ldap (and 1 more check through it); the deployment ams1 cannot be done without it."
    );
    assert_eq!(
        doc.why(check("nightly-backup")),
        "Nothing in this spec depends on it."
    );
}

#[test]
fn html_escapes_everything_it_shows_and_draws_the_graph() {
    let spec = spec();
    let live = live();
    let doc = Document::new(&spec, Some(&live), None);
    let html = doc.render(Format::Html);
    assert!(!html.contains("<script>alert"), "escaped");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)"),
        "and shown"
    );
    // Two arrows: dns -> ldap, ldap -> app; every check a node in the graph.
    assert_eq!(html.matches("class=\"edge\"").count(), 2);
    assert_eq!(html.matches("<rect class=\"node").count(), 4);
    assert!(
        html.contains("<style>"),
        "a standalone file carries its styles"
    );
    let linked = doc.render_html(Styles::Link("/static/docs.css"));
    assert!(!linked.contains("<style>") && linked.contains("href=\"/static/docs.css\""));
}
