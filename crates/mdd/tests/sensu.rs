//! Events as Sensu handlers read them: a handler built on the real PyPI `sensu-plugin`
//! package (its `SensuHandler` class) gets every notification on stdin, for a check the
//! server runs (a real plugin printing summary, perfdata and long output), one an agent runs,
//! and one reported for a proxy entity; what it reads is compared with Sensu Go's documented
//! event.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::TestServer;

/// The field names and JSON types of Sensu Go's documented status-only event (Events
/// reference, "Example status-only event", docs.sensu.io/sensu-go/latest/reference/events),
/// as handlers get it on stdin, restricted to the fields mdd knows; `null` where the
/// documentation shows null.
const SENSU_GO_DOCUMENTED_EVENT: &str = r#"{
  "check": {
    "check_hooks": null,
    "command": "check-cpu-usage -w 75 -c 90",
    "duration": 5.058211427,
    "env_vars": null,
    "executed": 1617050501,
    "handlers": [],
    "high_flap_threshold": 0,
    "history": [ { "executed": 1617050261, "status": 0 } ],
    "interval": 60,
    "is_silenced": false,
    "processed_by": "sensu-centos",
    "issued": 1617050501,
    "last_ok": 1617050501,
    "low_flap_threshold": 0,
    "metadata": { "name": "check_cpu", "namespace": "default" },
    "occurrences": 5,
    "occurrences_watermark": 5,
    "output": "CheckCPU TOTAL OK: total=0.41 user=0.2 nice=0.0 system=0.2 idle=99.59\n",
    "output_metric_format": "",
    "proxy_entity_name": "",
    "publish": true,
    "round_robin": false,
    "state": "passing",
    "status": 0,
    "stdin": false,
    "subdue": null,
    "subscriptions": [ "system" ],
    "timeout": 0,
    "total_state_change": 0,
    "ttl": 0
  },
  "entity": {
    "deregister": false,
    "entity_class": "agent",
    "last_seen": 1617050501,
    "metadata": { "name": "sensu-centos", "namespace": "default" },
    "redact": [ "password" ],
    "subscriptions": [ "system", "entity:sensu-centos" ],
    "system": {
      "arch": "amd64",
      "hostname": "sensu-centos",
      "network": { "interfaces": [ { "name": "lo", "addresses": [ "127.0.0.1/8" ] } ] },
      "os": "linux",
      "platform": "centos"
    },
    "user": "agent"
  },
  "id": "3a5948f3-6ffd-4ea2-a41e-334f4a72ca2f",
  "metadata": { "namespace": "default" },
  "timestamp": 1617050507
}"#;

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field of `documented` is in `ours` with the same JSON type (any type where the
/// documentation shows null), down into objects and the first element of arrays.
fn same_shape(documented: &Value, ours: &Value, path: &str, problems: &mut Vec<String>) {
    match (documented, ours) {
        (Value::Null, _) => {}
        (Value::Object(doc), Value::Object(mine)) => {
            for (key, value) in doc {
                match mine.get(key) {
                    Some(ours) => same_shape(value, ours, &format!("{path}.{key}"), problems),
                    None => problems.push(format!("{path}.{key} is missing")),
                }
            }
        }
        (Value::Array(doc), Value::Array(mine)) => {
            if let (Some(first), Some(ours)) = (doc.first(), mine.first()) {
                same_shape(first, ours, &format!("{path}[0]"), problems);
            }
        }
        (doc, mine) if json_type(doc) == json_type(mine) => {}
        (doc, mine) => problems.push(format!(
            "{path} is {} ({mine}), Sensu documents {}",
            json_type(mine),
            json_type(doc)
        )),
    }
}

/// A Sensu handler written as Sensu users write them: subclass `SensuHandler`, implement
/// `handle()`. This one appends what it read to a file, one JSON document per line.
fn write_handler(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("record_handler.py");
    let out = dir.join("handled.jsonl");
    std::fs::write(
        &script,
        format!(
            "import json\n\
             from sensu_plugin import SensuHandler\n\
             \n\
             class Record(SensuHandler):\n\
             \x20   def handle(self):\n\
             \x20       with open({out:?}, 'a') as f:\n\
             \x20           f.write(json.dumps(self.event) + '\\n')\n\
             \x20       print('recorded', self.event['check']['metadata']['name'])\n\
             \n\
             Record()\n",
            out = out.display().to_string()
        ),
    )
    .expect("write handler");
    script
}

fn handled(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("handled.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn a_sensu_plugin_handler_reads_sensu_go_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handler = write_handler(dir.path());
    // A real plugin: summary, perfdata, long output, exit 2.
    let plugin = dir.path().join("check_disk_like");
    std::fs::write(
        &plugin,
        "#!/bin/sh\nprintf 'DISK CRITICAL - / is 95%% full | /=95%%;80;90;0;100\\n/boot is fine\\n/var is fine | /boot=10%%;80;90\\n'\nexit 2\n",
    )
    .expect("write plugin");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let spec = format!(
        "defaults: {{ interval: 1s, timeout: 5s }}\n\
         handlers:\n  - {{ name: sensu, type: command, command: [python3, {handler:?}], filter: {{ owners: [ops] }} }}\n\
         checks:\n\
         \x20 - {{ name: disk, owner: ops, command: {plugin:?} }}\n\
         \x20 - {{ name: agent-check, owner: ops, subscriptions: [linux], command: /usr/lib/nagios/plugins/check_dummy 1 'agent warns' }}\n\
         \x20 - {{ name: router, owner: ops, ttl: 1h, entity: router1 }}\n",
        handler = handler.display().to_string(),
        plugin = plugin.display().to_string(),
    );
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec).expect("write spec");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--spec", spec_path.to_str().expect("utf-8")],
    )
    .await;
    let (_, token) = server
        .post("/api/v1/tokens", &json!({ "role": "agent" }))
        .await;
    let _agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args(["agent", "--server", &server.url, "--name", "web1"])
        .args(["--token", token["token"].as_str().expect("token")])
        .args(["--subscriptions", "linux", "--data"])
        .arg(dir.path().join("agent"))
        .env("MDD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent");
    let (status, body) = server
        .post(
            "/api/v1/results",
            &json!({ "results": [{ "id": "r1", "check": "router", "entity": "router1",
                                   "status": 2, "output": "PING CRITICAL - 100% loss" }] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut events = Vec::new();
    for _ in 0..200 {
        events = handled(dir.path());
        let names: std::collections::BTreeSet<String> = events
            .iter()
            .filter_map(|e| e["check"]["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        if names.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let of = |check: &str| {
        events
            .iter()
            .find(|e| e["check"]["metadata"]["name"] == check)
            .cloned()
            .unwrap_or_else(|| panic!("the handler never read {check}: {events:?}"))
    };
    let documented: Value = serde_json::from_str(SENSU_GO_DOCUMENTED_EVENT).expect("fixture");

    let disk = of("disk");
    let mut problems = Vec::new();
    same_shape(&documented, &disk, "event", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}\n{disk:#}");
    assert_eq!(
        disk["check"]["output"],
        "DISK CRITICAL - / is 95% full | /=95%;80;90;0;100\n/boot is fine\n/var is fine | /boot=10%;80;90\n",
        "the plugin's whole output, as printed"
    );
    assert_eq!(disk["check"]["status"], 2);
    assert_eq!(disk["check"]["state"], "failing");
    assert_eq!(disk["check"]["command"], plugin.display().to_string());
    assert_eq!(disk["check"]["interval"], 1);
    assert_eq!(disk["check"]["timeout"], 5);
    assert_eq!(
        disk["entity"]["entity_class"], "proxy",
        "the server's own entity runs no agent"
    );
    assert!(
        disk["id"].as_str().is_some_and(|id| id.len() == 36),
        "{disk}"
    );
    assert_eq!(disk["metadata"]["namespace"], "default");
    // SensuHandler filled in what Sensu 1 handlers expect, from the same document.
    assert_eq!(disk["occurrences"], 1, "{disk}");

    let agent = of("agent-check");
    let mut problems = Vec::new();
    same_shape(&documented, &agent, "event", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}\n{agent:#}");
    assert_eq!(agent["entity"]["entity_class"], "agent");
    assert_eq!(agent["entity"]["metadata"]["name"], "web1");
    assert_eq!(agent["entity"]["subscriptions"], json!(["linux"]));
    assert!(
        agent["entity"]["system"]["hostname"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{agent}"
    );
    assert_eq!(agent["entity"]["system"]["os"], "linux");
    assert_eq!(agent["check"]["subscriptions"], json!(["linux"]));
    assert_eq!(agent["check"]["output"], "WARNING: agent warns\n");

    let router = of("router");
    assert_eq!(router["entity"]["entity_class"], "proxy");
    assert_eq!(router["check"]["proxy_entity_name"], "router1");
    assert_eq!(router["check"]["publish"], false, "push-only");
    assert_eq!(router["check"]["ttl"], 3600);
    assert_ne!(disk["id"], router["id"], "an id per event");
    server.stop().await;
}
