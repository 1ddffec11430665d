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
        let (objects, notes) =
            resolve(&parse("t.cfg", &crate::nagios::spread(text)).expect("parses"));
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

/// A service on a host: (host, service description).
pub type ServiceKey = (String, String);

/// Every service group's (host, service) members: from `members host,svc,host,svc` and from
/// the `servicegroups` services name themselves in.
pub fn service_groups(
    objects: &[Object],
    instances: &[Instance<'_>],
) -> BTreeMap<String, BTreeSet<ServiceKey>> {
    let mut groups: BTreeMap<String, BTreeSet<ServiceKey>> = BTreeMap::new();
    for o in objects.iter().filter(|o| o.kind == "servicegroup") {
        let Some(name) = o.values.get("servicegroup_name") else {
            continue;
        };
        let items: Vec<&str> = list(o.values.get("members")).collect();
        let entry = groups.entry(name.clone()).or_default();
        for pair in items.chunks(2) {
            if let [host, service] = pair {
                entry.insert((host.to_string(), service.to_string()));
            }
        }
    }
    for instance in instances {
        let description = instance
            .service
            .values
            .get("service_description")
            .cloned()
            .unwrap_or_default();
        for group in list(instance.service.values.get("servicegroups")) {
            groups
                .entry(group.to_string())
                .or_default()
                .insert((instance.host.clone(), description.clone()));
        }
    }
    groups
}

/// What `servicedependency` objects say: each dependent service with the services it depends
/// on. Without master hosts, a dependency is on the same host as each dependent (Nagios' "same
/// host" dependencies); without dependent hosts, the dependents are on the master's hosts.
pub fn service_dependencies(
    objects: &[Object],
    instances: &[Instance<'_>],
) -> (BTreeMap<ServiceKey, BTreeSet<ServiceKey>>, Vec<Note>) {
    let groups = host_groups(objects);
    let service_groups = service_groups(objects, instances);
    let exists: BTreeSet<ServiceKey> = instances
        .iter()
        .map(|i| {
            (
                i.host.clone(),
                i.service
                    .values
                    .get("service_description")
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect();
    let hosts_of = |o: &Object, hosts: &str, hostgroups: &str| -> BTreeSet<String> {
        let mut set: BTreeSet<String> = list(o.values.get(hosts)).map(str::to_string).collect();
        for group in list(o.values.get(hostgroups)) {
            set.extend(groups.get(group).into_iter().flatten().cloned());
        }
        set
    };
    let mut edges: BTreeMap<ServiceKey, BTreeSet<ServiceKey>> = BTreeMap::new();
    let mut notes = Vec::new();
    for dep in objects.iter().filter(|o| o.kind == "servicedependency") {
        let master_hosts = hosts_of(dep, "host_name", "hostgroup_name");
        let master_services: Vec<&str> = list(dep.values.get("service_description")).collect();
        let mut dependent_hosts = hosts_of(dep, "dependent_host_name", "dependent_hostgroup_name");
        let same_host = master_hosts.is_empty();
        if dependent_hosts.is_empty() {
            dependent_hosts = master_hosts.clone();
        }
        let mut dependents: BTreeSet<ServiceKey> = BTreeSet::new();
        for service in list(dep.values.get("dependent_service_description")) {
            for host in &dependent_hosts {
                dependents.insert((host.clone(), service.to_string()));
            }
        }
        for group in list(dep.values.get("dependent_servicegroup_name")) {
            match service_groups.get(group) {
                Some(members) => dependents.extend(members.iter().cloned()),
                None => notes.push(Note {
                    file: dep.file.clone(),
                    line: dep.line,
                    message: format!("names the service group `{group}`, which is defined nowhere"),
                }),
            }
        }
        for dependent in dependents.into_iter().filter(|d| exists.contains(d)) {
            let hosts: Vec<String> = if same_host {
                vec![dependent.0.clone()]
            } else {
                master_hosts.iter().cloned().collect()
            };
            for host in hosts {
                for service in &master_services {
                    let master = (host.clone(), service.to_string());
                    if master != dependent && exists.contains(&master) {
                        edges.entry(dependent.clone()).or_default().insert(master);
                    }
                }
            }
        }
    }
    (edges, notes)
}

#[cfg(test)]
mod dependency_tests {
    use super::*;
    use crate::nagios::{parse, resolve};

    fn load(path: &str) -> Vec<Object> {
        let file = format!("{}/corpus/nagios/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&file).expect("fixture");
        resolve(&parse(path, &text).expect("parses")).0
    }

    fn key(host: &str, service: &str) -> ServiceKey {
        (host.to_string(), service.to_string())
    }

    #[test]
    fn naemons_fixture_dependencies_by_host_group() {
        let objects = load("naemon-t-etc-service-dependencies/service-dependencies.cfg");
        let (instances, notes) = services(&objects);
        assert!(notes.is_empty(), "{notes:#?}");
        let (edges, notes) = service_dependencies(&objects, &instances);
        assert!(notes.is_empty(), "{notes:#?}");
        let masters: Vec<ServiceKey> = ["http-proxy", "http-server-1", "http-server-2"]
            .iter()
            .map(|h| key(h, "check httpd proc"))
            .collect();
        for dependent in ["check get http app health", "check get http app statistics"] {
            assert_eq!(
                edges[&key("http-client", dependent)]
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>(),
                masters,
                "{dependent}"
            );
        }
        assert_eq!(edges.len(), 2);
    }

    #[test]
    fn nagios_cores_fixture_same_host_dependency_through_a_service_group() {
        let objects = load("nagioscore-t-etc/minimal.cfg");
        let (instances, _) = services(&objects);
        let (edges, notes) = service_dependencies(&objects, &instances);
        assert!(notes.is_empty(), "{notes:#?}");
        // No master host: the master service on the dependent's own host.
        assert_eq!(
            edges[&key("host3", "dependent-service")]
                .iter()
                .cloned()
                .collect::<Vec<_>>(),
            [key("host3", "master-service")]
        );
    }
}

/// The host checks' dependencies: each host on its `parents` (hosts that are defined), as
/// Nagios' reachability says; and each service on its host's check, when the host has one.
pub fn host_dependencies(objects: &[Object]) -> (BTreeMap<String, BTreeSet<String>>, Vec<Note>) {
    let hosts: BTreeMap<&str, &Object> = objects
        .iter()
        .filter(|o| o.kind == "host")
        .filter_map(|o| o.values.get("host_name").map(|n| (n.as_str(), o)))
        .collect();
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut notes = Vec::new();
    for (name, host) in &hosts {
        for parent in list(host.values.get("parents")) {
            if hosts.contains_key(parent) && parent != *name {
                parents
                    .entry(name.to_string())
                    .or_default()
                    .insert(parent.to_string());
            } else {
                notes.push(Note {
                    file: host.file.clone(),
                    line: host.line,
                    message: format!(
                        "names the parent `{parent}`, which is not another host defined here"
                    ),
                });
            }
        }
    }
    (parents, notes)
}

/// Whether `host` has a check of its own (`check_command`, inherited or not): a service on it
/// then depends on that check, as Nagios does not check a service on a host that is down.
pub fn has_host_check(objects: &[Object], host: &str) -> bool {
    objects.iter().any(|o| {
        o.kind == "host"
            && o.values.get("host_name").map(String::as_str) == Some(host)
            && o.values
                .get("check_command")
                .is_some_and(|c| !c.trim().is_empty())
    })
}

#[cfg(test)]
mod host_tests {
    use super::*;
    use crate::nagios::{parse, resolve};

    #[test]
    fn hosts_depend_on_their_parents_and_services_on_host_checks() {
        let text = "
define host { name generic
    check_command check-host-alive
    register 0 }
define host { host_name core-switch
    use generic }
define host { host_name rack-switch
    use generic
    parents core-switch }
define host { host_name web1
    parents rack-switch,ghost }
";
        let (objects, notes) =
            resolve(&parse("h.cfg", &crate::nagios::spread(text)).expect("parses"));
        assert!(notes.is_empty(), "{notes:#?}");
        let (parents, notes) = host_dependencies(&objects);
        assert_eq!(
            parents["rack-switch"].iter().collect::<Vec<_>>(),
            ["core-switch"]
        );
        assert_eq!(parents["web1"].iter().collect::<Vec<_>>(), ["rack-switch"]);
        assert!(!parents.contains_key("core-switch"));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].message.contains("`ghost`"), "{notes:?}");
        assert_eq!(notes[0].line, 16);
        // The check comes from the template.
        assert!(has_host_check(&objects, "rack-switch"));
        assert!(!has_host_check(&objects, "web1"));
        // Naemon's fixture: every host has the template's check.
        let file = format!(
            "{}/corpus/nagios/naemon-t-etc-service-dependencies/service-dependencies.cfg",
            env!("CARGO_MANIFEST_DIR")
        );
        let (objects, _) = resolve(
            &parse("sd.cfg", &std::fs::read_to_string(file).expect("fixture")).expect("parses"),
        );
        assert!(has_host_check(&objects, "http-client"));
    }
}

/// What `hostdependency` objects say: each dependent host with the hosts it depends on
/// (`host_name`/`hostgroup_name` the masters, `dependent_host_name`/`dependent_hostgroup_name`
/// the dependents).
pub fn host_dependency_objects(
    objects: &[Object],
) -> (BTreeMap<String, BTreeSet<String>>, Vec<Note>) {
    let groups = host_groups(objects);
    let hosts: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o.kind == "host")
        .filter_map(|o| o.values.get("host_name").map(String::as_str))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut notes = Vec::new();
    for dep in objects.iter().filter(|o| o.kind == "hostdependency") {
        let mut named = |hosts_key: &str, groups_key: &str| -> BTreeSet<String> {
            let mut set: BTreeSet<String> = list(dep.values.get(hosts_key))
                .map(str::to_string)
                .collect();
            for group in list(dep.values.get(groups_key)) {
                match groups.get(group) {
                    Some(members) => set.extend(members.iter().cloned()),
                    None => notes.push(Note {
                        file: dep.file.clone(),
                        line: dep.line,
                        message: format!(
                            "names the host group `{group}`, which is defined nowhere"
                        ),
                    }),
                }
            }
            set.retain(|h| {
                let known = hosts.contains(h.as_str());
                if !known {
                    notes.push(Note {
                        file: dep.file.clone(),
                        line: dep.line,
                        message: format!("names the host `{h}`, which is defined nowhere"),
                    });
                }
                known
            });
            set
        };
        let masters = named("host_name", "hostgroup_name");
        let dependents = named("dependent_host_name", "dependent_hostgroup_name");
        for dependent in &dependents {
            for master in masters.iter().filter(|m| *m != dependent) {
                edges
                    .entry(dependent.clone())
                    .or_default()
                    .insert(master.clone());
            }
        }
    }
    (edges, notes)
}

#[cfg(test)]
mod host_dependency_tests {
    use super::*;
    use crate::nagios::{parse, resolve};

    #[test]
    fn hostdependency_objects_by_host_and_group() {
        let text = "
define host { host_name db1 }
define host { host_name db2 }
define host { host_name app1 }
define host { host_name app2 }
define hostgroup { hostgroup_name dbs
    members db1,db2 }
define hostdependency { hostgroup_name dbs
    dependent_host_name app1,app2,ghost }
";
        let (objects, _) = resolve(&parse("d.cfg", &crate::nagios::spread(text)).expect("parses"));
        let (edges, notes) = host_dependency_objects(&objects);
        assert_eq!(edges["app1"].iter().collect::<Vec<_>>(), ["db1", "db2"]);
        assert_eq!(edges["app2"].iter().collect::<Vec<_>>(), ["db1", "db2"]);
        assert_eq!(edges.len(), 2);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].message.contains("`ghost`"));
    }
}
