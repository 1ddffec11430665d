//! Which hosts each Nagios service runs on: `host_name` and `hostgroup_name` lists with `*`
//! for all and `!` for exclusions, host groups from their `members`, their nested
//! `hostgroup_members`, and the `hostgroups` hosts name themselves in (templates included,
//! since the objects given are resolved).

use std::collections::{BTreeMap, BTreeSet};

use crate::nagios::{Note, Object};

/// One service on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance<'a> {
    pub host: String,
    pub service: &'a Object,
}

fn list(value: Option<&String>) -> impl Iterator<Item = &str> {
    value
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Every host group's hosts, nested groups included.
pub fn host_groups(objects: &[Object]) -> BTreeMap<String, BTreeSet<String>> {
    let mut direct: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut nested: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in objects.iter().filter(|o| o.kind == "hostgroup") {
        let Some(name) = o.values.get("hostgroup_name") else {
            continue;
        };
        let entry = direct.entry(name.clone()).or_default();
        entry.extend(list(o.values.get("members")).map(str::to_string));
        nested
            .entry(name.clone())
            .or_default()
            .extend(list(o.values.get("hostgroup_members")).map(str::to_string));
    }
    for host in objects.iter().filter(|o| o.kind == "host") {
        let Some(name) = host.values.get("host_name") else {
            continue;
        };
        for group in list(host.values.get("hostgroups")) {
            direct
                .entry(group.to_string())
                .or_default()
                .insert(name.clone());
        }
    }
    let mut all = BTreeMap::new();
    for group in direct.keys() {
        let mut hosts = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![group.clone()];
        while let Some(g) = stack.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            hosts.extend(direct.get(&g).into_iter().flatten().cloned());
            stack.extend(nested.get(&g).into_iter().flatten().cloned());
        }
        all.insert(group.clone(), hosts);
    }
    all
}

/// Each service on each host it applies to, in the order written, and notes for services that
/// apply to no host or name hosts and groups that do not exist.
pub fn services(objects: &[Object]) -> (Vec<Instance<'_>>, Vec<Note>) {
    let hosts: BTreeSet<String> = objects
        .iter()
        .filter(|o| o.kind == "host")
        .filter_map(|o| o.values.get("host_name").cloned())
        .collect();
    let groups = host_groups(objects);
    let mut instances = Vec::new();
    let mut notes = Vec::new();
    for service in objects.iter().filter(|o| o.kind == "service") {
        let note = |message: String| Note {
            file: service.file.clone(),
            line: service.line,
            message,
        };
        let mut on = BTreeSet::new();
        let mut off = BTreeSet::new();
        for item in list(service.values.get("host_name")) {
            let (excluded, name) = match item.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, item),
            };
            let named: BTreeSet<String> = if name == "*" {
                hosts.clone()
            } else if hosts.contains(name) {
                [name.to_string()].into()
            } else {
                notes.push(note(format!(
                    "names the host `{name}`, which is defined nowhere"
                )));
                BTreeSet::new()
            };
            if excluded {
                off.extend(named)
            } else {
                on.extend(named)
            }
        }
        for item in list(service.values.get("hostgroup_name")) {
            let (excluded, name) = match item.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, item),
            };
            let named: BTreeSet<String> = if name == "*" {
                groups.values().flatten().cloned().collect()
            } else if let Some(members) = groups.get(name) {
                members.clone()
            } else {
                notes.push(note(format!(
                    "names the host group `{name}`, which is defined nowhere"
                )));
                BTreeSet::new()
            };
            if excluded {
                off.extend(named)
            } else {
                on.extend(named)
            }
        }
        let applies: Vec<String> = on.difference(&off).cloned().collect();
        if applies.is_empty() {
            notes.push(note(format!(
                "the service `{}` applies to no host",
                service
                    .values
                    .get("service_description")
                    .map_or("(no description)", String::as_str)
            )));
        }
        instances.extend(applies.into_iter().map(|host| Instance { host, service }));
    }
    (instances, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nagios::{parse, resolve};

    fn on_hosts(instances: &[Instance<'_>], description: &str) -> Vec<String> {
        instances
            .iter()
            .filter(|i| {
                i.service
                    .values
                    .get("service_description")
                    .map(String::as_str)
                    == Some(description)
            })
            .map(|i| i.host.clone())
            .collect()
    }

    #[test]
    fn nagios_cores_fixture_expands_to_its_hosts() {
        let file = format!(
            "{}/corpus/nagios/nagioscore-t-etc/minimal.cfg",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&file).expect("fixture");
        let (objects, _) = resolve(&parse("minimal.cfg", &text).expect("parses"));
        let (instances, notes) = services(&objects);
        assert!(notes.is_empty(), "{notes:#?}");
        assert_eq!(on_hosts(&instances, "Dummy service"), ["host1"]);
        assert_eq!(
            on_hosts(&instances, "Uses important check command"),
            ["host1", "host2"]
        );
        // Group membership the host declares itself (`hostgroups +…`).
        assert_eq!(on_hosts(&instances, "master-service"), ["host3"]);
    }

    #[test]
    fn lists_groups_nesting_stars_and_exclusions() {
        let text = "
define host { host_name a }
define host { host_name b }
define host { host_name c
    hostgroups edge }
define hostgroup { hostgroup_name web
    members a,b }
define hostgroup { hostgroup_name edge }
define hostgroup { hostgroup_name all-web
    hostgroup_members web,edge }
define service { service_description everywhere-but-b
    host_name *,!b }
define service { service_description nested
    hostgroup_name all-web,!edge }
define service { service_description nowhere
    host_name ghost }
";
        let (objects, notes) = resolve(&parse("t.cfg", text).expect("parses"));
        assert!(notes.is_empty(), "{notes:#?}");
        let groups = host_groups(&objects);
        assert_eq!(
            groups["all-web"].iter().collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        let (instances, notes) = services(&objects);
        assert_eq!(on_hosts(&instances, "everywhere-but-b"), ["a", "c"]);
        assert_eq!(on_hosts(&instances, "nested"), ["a", "b"]);
        assert!(on_hosts(&instances, "nowhere").is_empty());
        let said: Vec<&str> = notes.iter().map(|n| n.message.as_str()).collect();
        assert!(
            said.iter()
                .any(|m| m.contains("`ghost`, which is defined nowhere")),
            "{said:?}"
        );
        assert!(
            said.iter()
                .any(|m| m.contains("`nowhere` applies to no host")),
            "{said:?}"
        );
    }
}
