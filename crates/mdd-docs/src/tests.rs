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

/// Boxes and edges read back from the drawn SVG: (name, x, y, w, h) and (from, to, points
/// along the path).
#[allow(clippy::type_complexity)]
fn geometry(
    svg: &str,
) -> (
    Vec<(String, f64, f64, f64, f64)>,
    Vec<(String, String, Vec<(f64, f64)>)>,
) {
    let attr = |tag: &str, name: &str| -> String {
        tag.split(&format!(" {name}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    let num = |tag: &str, name: &str| attr(tag, name).parse::<f64>().expect("number");
    let boxes = svg
        .split("<rect ")
        .skip(1)
        .map(|tag| {
            (
                attr(tag, "data-check"),
                num(tag, "x"),
                num(tag, "y"),
                num(tag, "width"),
                num(tag, "height"),
            )
        })
        .collect();
    let mut edges = Vec::new();
    for tag in svg.split("<path class=\"edge\"").skip(1) {
        let d = attr(tag, "d");
        let mut points = Vec::new();
        let mut at = (0.0, 0.0);
        let mut words = d
            .split(|c: char| c == ' ' || c == ',' || c.is_ascii_alphabetic() && c != 'e')
            .filter(|w| !w.is_empty());
        let letters: Vec<char> = d.chars().filter(|c| c.is_ascii_alphabetic()).collect();
        let mut next = || {
            words
                .next()
                .and_then(|w| w.parse::<f64>().ok())
                .expect("coordinate")
        };
        for letter in letters {
            let target = match letter {
                'M' => {
                    at = (next(), next());
                    continue;
                }
                'H' => (next(), at.1),
                'V' => (at.0, next()),
                'C' => {
                    let (c1, c2, end) = ((next(), next()), (next(), next()), (next(), next()));
                    for k in 0..=40 {
                        let t = f64::from(k) / 40.0;
                        let u = 1.0 - t;
                        points.push((
                            u * u * u * at.0
                                + 3.0 * u * u * t * c1.0
                                + 3.0 * u * t * t * c2.0
                                + t * t * t * end.0,
                            u * u * u * at.1
                                + 3.0 * u * u * t * c1.1
                                + 3.0 * u * t * t * c2.1
                                + t * t * t * end.1,
                        ));
                    }
                    at = end;
                    continue;
                }
                other => panic!("unexpected path command {other} in {d}"),
            };
            for k in 0..=40 {
                let t = f64::from(k) / 40.0;
                points.push((at.0 + (target.0 - at.0) * t, at.1 + (target.1 - at.1) * t));
            }
            at = target;
        }
        edges.push((attr(tag, "data-from"), attr(tag, "data-to"), points));
    }
    (boxes, edges)
}

/// No edge segment crosses a box it does not connect, read from the SVG's own coordinates:
/// the demo's `postgres → api` used to run behind `vault` and read as `postgres → registry`.
#[test]
fn edges_never_pass_behind_boxes_they_do_not_connect() {
    let mut text = String::from("checks:\n");
    text.push_str("  - { name: dns, ttl: 1h }\n  - { name: postgres, ttl: 1h }\n");
    text.push_str("  - { name: vault, ttl: 1h, depends_on: [postgres] }\n");
    text.push_str("  - { name: ldap, ttl: 1h, depends_on: [dns] }\n");
    text.push_str("  - { name: registry, ttl: 1h, depends_on: [vault, ldap] }\n");
    text.push_str("  - { name: api, ttl: 1h, depends_on: [postgres, registry, dns] }\n");
    // And a big one: 200 checks, long chains, edges over many columns.
    for i in 0..200 {
        let deps: Vec<String> = [i / 2, i / 3, i / 7]
            .iter()
            .filter(|d| **d < i)
            .map(|d| format!("c{d}"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        text.push_str(&format!(
            "  - {{ name: c{i}, ttl: 1h, depends_on: [{}] }}\n",
            deps.join(", ")
        ));
    }
    let spec = load_one("spec.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let doc = Document::new(&spec, None, None);
    let svg = doc.dependency_graph(&|name| format!("#{name}"));
    let (boxes, edges) = geometry(&svg);
    assert_eq!(boxes.len(), 206);
    assert!(edges.len() > 300, "{} edges", edges.len());
    let mut crossings = Vec::new();
    for (from, to, points) in &edges {
        for (name, x, y, w, h) in &boxes {
            if name == from || name == to {
                continue;
            }
            if let Some(p) = points.iter().find(|(px, py)| {
                *px > x + 0.5 && *px < x + w - 0.5 && *py > y + 0.5 && *py < y + h - 0.5
            }) {
                crossings.push(format!("{from} → {to} passes behind {name} at {p:?}"));
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "{} crossings, e.g. {:?}",
        crossings.len(),
        &crossings[..crossings.len().min(5)]
    );
    // Names too long for their box are cut, whole on hover.
    let long = "a-check-with-a-name-far-too-long-for-its-box";
    let spec = load_one(
        "s.yaml",
        &format!("checks:\n  - {{ name: {long}, ttl: 1h }}\n"),
    )
    .expect("spec");
    let svg = Document::new(&spec, None, None).dependency_graph(&|n| n.to_string());
    assert!(svg.contains(&format!("<title>{long}</title>")), "{svg}");
    assert!(svg.contains("a-check-with-a-name-f…"), "{svg}");
}
