use super::*;

/// Where a test's store lives: a data directory (SQLite), or a database of its own on a
/// private PostgreSQL server. Every test that is not about the data directory runs on both.
enum Place {
    Sqlite(tempfile::TempDir),
    /// The server (kept running for as long as the place lives) and the database's URL.
    Postgres(#[allow(dead_code)] mdd_testkit::postgres::Postgres, String),
}

impl Place {
    fn sqlite() -> Place {
        Place::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    fn postgres() -> Place {
        let server = mdd_testkit::postgres::Postgres::start();
        let url = server.create_database("mdd");
        Place::Postgres(server, url)
    }

    /// Opens the store (again: what was written before is there).
    async fn open(&self) -> Store {
        match self {
            Place::Sqlite(dir) => Store::open(dir.path()).await.expect("open"),
            Place::Postgres(_, url) => Store::connect(url).await.expect("connect"),
        }
    }
}

/// The test `$name` once on SQLite and once on PostgreSQL: `$name::sqlite`, `$name::postgres`.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Place::sqlite()).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(super::Place::postgres()).await
            }
        }
    };
}

fn event_row(result_id: &str, status: Status, at: i64) -> EventRow {
    EventRow {
        check: "dns".into(),
        entity: "server".into(),
        status,
        executed_at: at,
        last_result_id: result_id.into(),
        body: format!("{{\"made_by\": \"{result_id}\"}}"),
    }
}

fn result(id: &str, status: Status, at: i64) -> StoredResult {
    StoredResult {
        id: id.into(),
        check: "dns".into(),
        entity: "server".into(),
        status,
        summary: format!("{status:?}"),
        long_output: String::new(),
        perfdata: vec![PerfDatum::new("time", 0.01, "s")],
        duration_ms: 1.5,
        exit_code: Some(status.exit_code()),
        executed_at: at,
        received_at: at + 1,
        output: format!("{status:?} | time=0.01s"),
    }
}

on_both!(results_events_and_entities_survive_a_reopen);
async fn results_events_and_entities_survive_a_reopen(place: Place) {
    let store = place.open().await;
    let r1 = result("a", Status::Ok, 1_000);
    let r2 = result("b", Status::Critical, 2_000);
    let event = event_row("b", Status::Critical, 2_000);
    store
        .commit(Commit {
            results: &[&r1, &r2],
            entities: &[("server", 2_000)],
        })
        .await
        .expect("commit");
    assert_eq!(
        store
            .checkpoint_events(std::slice::from_ref(&event))
            .await
            .expect("checkpoint"),
        2
    );
    let r3 = result("c", Status::Ok, 3_000);
    store
        .commit(Commit {
            results: &[&r3],
            entities: &[],
        })
        .await
        .expect("commit after the checkpoint");
    store.close().await;

    let store = place.open().await;
    let checkpoint = store.load_event_checkpoint().await.expect("events");
    assert_eq!(checkpoint.events, [event]);
    assert_eq!(checkpoint.through_rowid, 2);
    let after = store
        .results_after(checkpoint.through_rowid, 100)
        .await
        .expect("replay");
    assert_eq!(
        after,
        [(3, r3)],
        "only what the checkpoint does not include"
    );
    assert_eq!(store.result("b").await.expect("result"), Some(r2.clone()));
    let window = store
        .results("dns", Some("server"), 0, 2_500, 10)
        .await
        .expect("results");
    assert_eq!(window, [r2, r1], "newest first");
    assert_eq!(
        store.entities().await.expect("entities")[0].last_seen,
        2_000
    );
}

on_both!(a_replayed_result_is_stored_once);
async fn a_replayed_result_is_stored_once(place: Place) {
    let store = place.open().await;
    let r = result("same", Status::Ok, 1_000);
    for attempt in 0..3 {
        let inserted = store
            .commit(Commit {
                results: &[&r],
                ..Commit::default()
            })
            .await
            .expect("commit");
        assert_eq!(
            inserted.contains("same"),
            attempt == 0,
            "new only the first time"
        );
    }
    assert_eq!(store.count_results().await.expect("count"), 1);
}

on_both!(retention_keeps_what_events_point_at);
async fn retention_keeps_what_events_point_at(place: Place) {
    let store = place.open().await;
    let old = result("old", Status::Ok, 1_000);
    let latest = result("latest", Status::Ok, 2_000);
    let event = event_row("latest", Status::Ok, 2_000);
    store
        .commit(Commit {
            results: &[&old, &latest],
            entities: &[],
        })
        .await
        .expect("commit");
    let unchecked = result("unchecked", Status::Ok, 500);
    store.checkpoint_events(&[event]).await.expect("checkpoint");
    store
        .commit(Commit {
            results: &[&unchecked],
            entities: &[],
        })
        .await
        .expect("commit");
    if store.is_shared() {
        // PostgreSQL: events are folded with their results (`commit_folding`), nothing waits
        // for a checkpoint, so only what events point at is kept.
        assert_eq!(store.prune_results(1_000_000).await.expect("prune"), 2);
        assert!(store.result("unchecked").await.expect("read").is_none());
    } else {
        assert_eq!(store.prune_results(1_000_000).await.expect("prune"), 1);
        assert!(
            store.result("unchecked").await.expect("read").is_some(),
            "results after the checkpoint are needed to rebuild events"
        );
    }
    assert!(store.result("latest").await.expect("read").is_some());
    assert!(store.result("old").await.expect("read").is_none());
}

on_both!(spec_revisions_and_tokens);
async fn spec_revisions_and_tokens(place: Place) {
    let store = place.open().await;
    assert!(store.latest_spec().await.expect("spec").is_none());
    let files = vec![SpecFile {
        file: "a.yaml".into(),
        text: "checks: []\n".into(),
    }];
    assert_eq!(store.apply_spec(&files, 5).await.expect("apply"), 1);
    assert_eq!(store.apply_spec(&files, 6).await.expect("apply"), 2);
    let latest = store.latest_spec().await.expect("spec").expect("some");
    assert_eq!((latest.revision, latest.files), (2, files));

    let record = |id: &str, role: &str| TokenRecord {
        id: id.into(),
        role: role.into(),
        name: "first".into(),
        created_at: 7,
        ..TokenRecord::default()
    };
    store
        .create_token(&[1, 2, 3], &record("t1", "admin"))
        .await
        .expect("token");
    assert!(
        store
            .create_token(&[1, 2, 3], &record("t2", "read"))
            .await
            .is_err(),
        "hashes are unique"
    );
    let tokens = store.tokens().await.expect("tokens");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].0, [1, 2, 3]);
    assert_eq!(tokens[0].1.role, "admin");

    // An enrollment token with one use: the first enrollment takes it, the second finds none.
    let mut enroll = record("e1", "enroll");
    enroll.uses_left = Some(1);
    store
        .create_token(&[9], &enroll)
        .await
        .expect("enroll token");
    let mut agent = record("a1", "agent");
    agent.entity = Some("web1".into());
    assert!(store.enroll("e1", &[10], &agent).await.expect("enroll"));
    let mut second = record("a2", "agent");
    second.entity = Some("web2".into());
    assert!(
        !store
            .enroll("e1", &[11], &second)
            .await
            .expect("no use left")
    );
    store.token_uses(&[("a1".into(), 42)]).await.expect("uses");
    let tokens = store.tokens().await.expect("tokens");
    let a1 = tokens.iter().find(|(_, t)| t.id == "a1").expect("a1");
    assert_eq!(a1.1.last_used_at, Some(42));
    assert!(
        tokens.iter().all(|(_, t)| t.id != "a2"),
        "nothing stored for a refused enrollment"
    );
    assert!(store.delete_token("a1").await.expect("delete"));
    assert!(!store.delete_token("a1").await.expect("delete again"));
}

on_both!(deployment_tracks_are_upserted_removed_and_survive_a_reopen);
async fn deployment_tracks_are_upserted_removed_and_survive_a_reopen(place: Place) {
    let store = place.open().await;
    let tracks = [
        ("ams1".to_string(), "{\"v\":1}".to_string()),
        ("fra1".to_string(), "{\"v\":1}".to_string()),
    ];
    store
        .save_deployment_tracks(&tracks, &[], 1_000)
        .await
        .expect("save");
    store
        .save_deployment_tracks(
            &[("ams1".to_string(), "{\"v\":2}".to_string())],
            &["fra1".to_string()],
            2_000,
        )
        .await
        .expect("update");
    store.close().await;
    let store = place.open().await;
    assert_eq!(
        store.deployment_tracks().await.expect("read"),
        [("ams1".to_string(), "{\"v\":2}".to_string())]
    );
}

on_both!(silences_are_kept_replaced_and_deleted);
async fn silences_are_kept_replaced_and_deleted(place: Place) {
    let store = place.open().await;
    store
        .save_silence("a", "{\"v\":1}", Some(5))
        .await
        .expect("save");
    store
        .save_silence("b", "{\"v\":1}", None)
        .await
        .expect("save");
    store
        .save_silence("a", "{\"v\":2}", Some(6))
        .await
        .expect("replace");
    assert_eq!(
        store
            .delete_silences(&["b".into(), "nope".into()])
            .await
            .expect("delete"),
        1
    );
    store.close().await;
    let store = place.open().await;
    assert_eq!(store.silences().await.expect("read"), ["{\"v\":2}"]);
}

on_both!(incidents_open_close_and_replay_harmlessly);
async fn incidents_open_close_and_replay_harmlessly(place: Place) {
    use mdd_core::incident::IncidentChange::{Closed, Flapped, Opened};
    let store = place.open().await;
    let (c, e) = ("dns".to_string(), "a".to_string());
    let changes = [
        Opened {
            check: c.clone(),
            entity: e.clone(),
            at: 100,
        },
        Closed {
            check: c.clone(),
            entity: e.clone(),
            at: 150,
        },
        Opened {
            check: c.clone(),
            entity: e.clone(),
            at: 200,
        },
        Flapped {
            check: c.clone(),
            entity: e.clone(),
            at: 210,
        },
    ];
    store.record_incidents(&changes).await.expect("record");
    // A replay of the same changes stores nothing twice and does not close the open one.
    store.record_incidents(&changes).await.expect("replay");
    let (incidents, flaps) = store.incidents_since(0).await.expect("read");
    let spans: Vec<(i64, Option<i64>)> = incidents
        .iter()
        .map(|i| (i.started_at, i.ended_at))
        .collect();
    assert_eq!(spans, [(100, Some(150)), (200, None)]);
    assert_eq!(flaps, [(c.clone(), e, 210)]);
    let (recent, _) = store.incidents_since(160).await.expect("read");
    assert_eq!(
        recent.len(),
        1,
        "the one that ended before 160 is out of the window"
    );
    // Several opens and closes of one event in one batch (as one fold of many results
    // records them on PostgreSQL), replayed too: each incident ends at the first close after
    // its start; another event's are its own.
    let change = |kind: &str, entity: &str, at: i64| {
        let (check, entity) = (c.clone(), entity.to_string());
        match kind {
            "open" => Opened { check, entity, at },
            _ => Closed { check, entity, at },
        }
    };
    let batch = [
        change("close", "a", 300),
        change("open", "b", 310),
        change("open", "a", 400),
        change("close", "a", 500),
        change("close", "b", 520),
        change("open", "a", 600),
    ];
    // Right after the batch, and again after its replay.
    for time in ["record", "replay"] {
        store.record_incidents_batched(&batch).await.expect(time);
        let (incidents, _) = store.incidents_since(0).await.expect("read");
        let mut spans: Vec<(&str, i64, Option<i64>)> = incidents
            .iter()
            .map(|i| (i.entity.as_str(), i.started_at, i.ended_at))
            .collect();
        spans.sort();
        assert_eq!(
            spans,
            [
                ("a", 100, Some(150)),
                ("a", 200, Some(300)),
                ("a", 400, Some(500)),
                ("a", 600, None),
                ("b", 310, Some(520)),
            ],
            "after the {time}"
        );
    }
}

fn delivery(handler: &str, n: i64) -> DeliveryRow {
    DeliveryRow {
        handler: handler.into(),
        at: n,
        check: "dns".into(),
        entity: "server".into(),
        kind: "incident".into(),
        attempt: 1,
        outcome: format!("ok {n}"),
        latency_ms: 1.25,
        output: String::new(),
    }
}

fn notified(handler: &str, check: &str, status: Status) -> NotifiedRow {
    NotifiedRow {
        handler: handler.into(),
        check: check.into(),
        entity: "server".into(),
        status,
        notified_at: 7,
    }
}

on_both!(delivery_logs_keep_the_newest_per_handler_across_a_reopen);
async fn delivery_logs_keep_the_newest_per_handler_across_a_reopen(place: Place) {
    let store = place.open().await;
    let first: Vec<_> = (0..8).map(|n| delivery("pager", n)).collect();
    store
        .save_notifications(
            &NotificationChanges {
                deliveries: &first,
                ..Default::default()
            },
            5,
        )
        .await
        .expect("save");
    let more = [delivery("pager", 8), delivery("chat", 100)];
    store
        .save_notifications(
            &NotificationChanges {
                deliveries: &more,
                ..Default::default()
            },
            5,
        )
        .await
        .expect("save");
    store.close().await;
    let store = place.open().await;
    let kept = store.deliveries(5).await.expect("read");
    let pager: Vec<i64> = kept
        .iter()
        .filter(|d| d.handler == "pager")
        .map(|d| d.at)
        .collect();
    assert_eq!(pager, [4, 5, 6, 7, 8], "the newest five, oldest first");
    assert_eq!(
        kept.iter()
            .filter(|d| d.handler == "chat")
            .collect::<Vec<_>>(),
        [&delivery("chat", 100)]
    );
    // Asking for fewer than are stored gives the newest of each, in the order they came.
    let two = store.deliveries(2).await.expect("read");
    assert_eq!(two.iter().map(|d| d.at).collect::<Vec<_>>(), [7, 8, 100]);
}

on_both!(notified_incidents_are_upserted_and_resolved);
async fn notified_incidents_are_upserted_and_resolved(place: Place) {
    let store = place.open().await;
    store
        .save_notifications(
            &NotificationChanges {
                notified: &[
                    notified("pager", "dns", Status::Warning),
                    notified("pager", "ldap", Status::Critical),
                ],
                ..Default::default()
            },
            5,
        )
        .await
        .expect("save");
    store
        .save_notifications(
            &NotificationChanges {
                notified: &[notified("pager", "dns", Status::Critical)],
                resolved: &[("pager".into(), "ldap".into(), "server".into())],
                ..Default::default()
            },
            5,
        )
        .await
        .expect("save");
    store.close().await;
    let store = place.open().await;
    assert_eq!(
        store.notified().await.expect("read"),
        [notified("pager", "dns", Status::Critical)]
    );
}

fn due(id: &str, handler: &str, decided_at: i64) -> DueDelivery {
    DueDelivery {
        id: id.into(),
        handler: handler.into(),
        kind: "incident".into(),
        check: "dns".into(),
        entity: "server".into(),
        body: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        decided_at,
    }
}

on_both!(due_deliveries_stay_until_they_are_done);
async fn due_deliveries_stay_until_they_are_done(place: Place) {
    let store = place.open().await;
    // The record of what the pager was told and the deliveries that tell it go in together.
    store
        .save_notifications(
            &NotificationChanges {
                notified: &[notified("pager", "dns", Status::Critical)],
                due: &[
                    due("msg_b", "pager", 2),
                    due("msg_a", "pager", 1),
                    due("msg_a", "chat", 1),
                ],
                ..Default::default()
            },
            5,
        )
        .await
        .expect("save");
    // Decided again (a catch-up): still one row each. One finished.
    store
        .save_notifications(
            &NotificationChanges {
                due: &[due("msg_a", "pager", 1)],
                done: &[("msg_b".into(), "pager".into())],
                ..Default::default()
            },
            5,
        )
        .await
        .expect("save");
    store.close().await;
    let store = place.open().await;
    assert_eq!(
        store.due_deliveries().await.expect("read"),
        [due("msg_a", "chat", 1), due("msg_a", "pager", 1)],
        "in the order decided, each once, the finished one gone"
    );
    assert_eq!(
        store.notified().await.expect("read"),
        [notified("pager", "dns", Status::Critical)]
    );
    store
        .save_notifications(
            &NotificationChanges {
                done: &[
                    ("msg_a".into(), "pager".into()),
                    ("msg_a".into(), "chat".into()),
                ],
                ..Default::default()
            },
            5,
        )
        .await
        .expect("save");
    assert!(store.due_deliveries().await.expect("read").is_empty());
}

#[tokio::test]
async fn the_data_directory_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let store = Store::open(&data).await.expect("open");
    store
        .commit(Commit {
            results: &[&result("r1", Status::Ok, 1_000)],
            entities: &[],
        })
        .await
        .expect("commit");
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700);
    for name in [DB_FILE, "mdd.db-wal", "mdd.db-shm"] {
        let path = data.join(name);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{name}");
        }
    }
    assert!(
        data.join("mdd.db-wal").exists(),
        "the journal was made and checked"
    );
}

#[tokio::test]
async fn a_second_store_on_one_directory_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Store::open(dir.path()).await.expect("open");
    let second = Store::open(dir.path()).await;
    match second {
        Err(StoreError::InUse { holder, .. }) => {
            assert!(holder.contains(&std::process::id().to_string()), "{holder}")
        }
        other => panic!("a second store opened: {other:?}"),
    }
    first.close().await;
    drop(first);
    Store::open(dir.path())
        .await
        .expect("free again once the first is gone");
}

on_both!(availability_is_the_time_results_said_ok);
async fn availability_is_the_time_results_said_ok(place: Place) {
    let store = place.open().await;
    // server: OK at 0 s, CRITICAL at 10 s, OK at 20 s; other: OK at 0 s, then silent.
    let rows = [
        result("a", Status::Ok, 0),
        result("b", Status::Critical, 10_000),
        result("c", Status::Ok, 20_000),
    ];
    let mut other = result("d", Status::Ok, 0);
    other.entity = "other".into();
    let all: Vec<&StoredResult> = rows.iter().chain(std::iter::once(&other)).collect();
    store
        .commit(Commit {
            results: &all,
            entities: &[("server", 20_000), ("other", 0)],
        })
        .await
        .expect("commit");
    let got = store
        .availability(&[("dns", 3_600_000), ("nothing", 1)], 0, 30_000)
        .await
        .expect("availability");
    // server 20 s of 30 s OK, other 30 s of 30 s.
    assert_eq!(got.get("dns"), Some(&(50_000, 60_000)));
    assert!(!got.contains_key("nothing"), "no results, no figure");
    // With a ttl of 5 s, an OK stops counting 5 s after it: other's silence is not uptime.
    let capped = store
        .availability(&[("dns", 5_000)], 0, 30_000)
        .await
        .expect("availability");
    assert_eq!(capped.get("dns"), Some(&(15_000, 60_000)));
    // A window starting later counts from the first result in it.
    let later = store
        .availability(&[("dns", 3_600_000)], 15_000, 30_000)
        .await
        .expect("availability");
    assert_eq!(later.get("dns"), Some(&(10_000, 10_000)));
}

on_both!(applies_compare_and_swap_and_shared_versions_move_with_every_change);
async fn applies_compare_and_swap_and_shared_versions_move_with_every_change(place: Place) {
    let store = place.open().await;
    let versions = || async { store.shared_versions().await.expect("versions") };
    let start = versions().await;
    assert_eq!(
        start.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "deployments",
            "entities",
            "sessions",
            "silences",
            "spec",
            "tokens"
        ]
    );
    let files = vec![SpecFile {
        file: "a.yaml".into(),
        text: "checks: []\n".into(),
    }];
    assert_eq!(store.spec_head().await.expect("head"), 0);
    assert_eq!(
        store.apply_spec_on(0, &files, 5).await.expect("apply"),
        SpecApplied::Stored(1)
    );
    // Two applies on the same base: the second finds the head moved and stores nothing.
    assert_eq!(
        store.apply_spec_on(0, &files, 6).await.expect("apply"),
        SpecApplied::Moved { head: 1 }
    );
    assert_eq!(store.spec_head().await.expect("head"), 1);
    assert_eq!(
        store.apply_spec_on(1, &files, 7).await.expect("apply"),
        SpecApplied::Stored(2)
    );
    let after_spec = versions().await;
    assert!(after_spec["spec"] > start["spec"]);
    assert_eq!(after_spec["tokens"], start["tokens"]);

    let token = TokenRecord {
        id: "t1".into(),
        role: "admin".into(),
        name: "first".into(),
        created_at: 7,
        ..TokenRecord::default()
    };
    store.create_token(&[1], &token).await.expect("token");
    let created = versions().await;
    assert!(created["tokens"] > after_spec["tokens"]);
    // When a token was last used changes no decision: the version stays.
    store.token_uses(&[("t1".into(), 99)]).await.expect("uses");
    assert_eq!(versions().await["tokens"], created["tokens"]);
    assert!(store.delete_token("t1").await.expect("revoke"));
    let revoked = versions().await;
    assert!(revoked["tokens"] > created["tokens"]);

    store.save_silence("s1", "{}", None).await.expect("silence");
    let silenced = versions().await;
    assert!(silenced["silences"] > revoked["silences"]);
    store
        .delete_silences(&["s1".into()])
        .await
        .expect("end silence");
    assert!(versions().await["silences"] > silenced["silences"]);

    // Sessions: stored by hash, read back, expired ones dropped when a new one is stored;
    // only their end moves the version (a new session is read through where it is missing).
    let session = |hash: u8, expires_at: i64| SessionRecord {
        id_hash: vec![hash; 32],
        token_id: "t2".into(),
        role: "admin".into(),
        name: "ops".into(),
        csrf: "c".into(),
        expires_at,
    };
    let before = versions().await["sessions"];
    store
        .save_session(&session(1, 100), 10)
        .await
        .expect("save");
    assert_eq!(versions().await["sessions"], before);
    assert_eq!(
        store.session(&[1; 32]).await.expect("read"),
        Some(session(1, 100))
    );
    store
        .save_session(&session(2, 500), 200)
        .await
        .expect("save");
    assert_eq!(
        store.session(&[1; 32]).await.expect("read"),
        None,
        "expired"
    );
    let expired = versions().await["sessions"];
    assert!(expired > before);
    store.delete_session(&[2; 32]).await.expect("sign out");
    assert_eq!(store.session(&[2; 32]).await.expect("read"), None);
    assert!(versions().await["sessions"] > expired);
    store.close().await;
}

on_both!(a_lease_has_one_holder_until_it_runs_out_or_is_given_up);
async fn a_lease_has_one_holder_until_it_runs_out_or_is_given_up(place: Place) {
    let store = place.open().await;
    assert_eq!(
        store.take_lease("work", "a", 60_000).await.expect("take"),
        Some(1)
    );
    // Renewed by its holder: the same epoch.
    assert_eq!(
        store.take_lease("work", "a", 60_000).await.expect("renew"),
        Some(1)
    );
    let other = store.take_lease("work", "b", 60_000).await.expect("try");
    if store.is_shared() {
        assert_eq!(other, None, "held by a until it runs out");
        // Run out (a ttl in the past): b takes it, with the next epoch, and a no longer can.
        assert_eq!(
            store.take_lease("work", "a", -1).await.expect("renew"),
            Some(1)
        );
        assert_eq!(
            store.take_lease("work", "b", 60_000).await.expect("take"),
            Some(2)
        );
        assert_eq!(
            store.take_lease("work", "a", 60_000).await.expect("try"),
            None
        );
        // Given up: taken at once.
        store.release_lease("work", "b").await.expect("release");
        assert!(
            store
                .take_lease("work", "a", 60_000)
                .await
                .expect("take")
                .is_some()
        );
    } else {
        // One server has the directory: a new holder is the server started after the last.
        assert_eq!(other, Some(2));
    }
    store.close().await;
}

on_both!(folds_in_the_transaction_count_every_result_once_across_stores);
/// Several stores on one PostgreSQL (as several servers) fold results into the same event at
/// once: every fold sees the one before it, so the count in the event is the number of results
/// stored, each stored once however often it is sent. SQLite checkpoints instead, and says so.
async fn folds_in_the_transaction_count_every_result_once_across_stores(place: Place) {
    let first = place.open().await;
    // A body is the count; `memory` is what a store holds as a server does (the count at a
    // version), used where the store hands an event over without its body.
    let counting = |inserted: &HashSet<String>,
                    stored: Vec<VersionedEvent>,
                    mine: &[&str],
                    memory: Option<(i64, i64)>| {
        let before: i64 = match stored.first() {
            None => 0,
            Some(e) if e.known => match memory {
                Some((version, count)) if version == e.version => count,
                _ => return Err(format!("version {} is not held", e.version)),
            },
            Some(e) => e.row.body.parse().expect("a count"),
        };
        let new = mine.iter().filter(|id| inserted.contains(**id)).count() as i64;
        let mut row = event_row("x", Status::Ok, 1);
        row.body = (before + new).to_string();
        Ok(FoldOutput {
            events: if new > 0 { vec![row] } else { Vec::new() },
            incidents: Vec::new(),
            notices: (new > 0).then(|| format!("+{new}")).into_iter().collect(),
            value: (new, before + new),
        })
    };
    if !first.is_shared() {
        let r = result("a", Status::Ok, 1);
        let refused = first
            .commit_folding(
                Commit {
                    results: &[&r],
                    entities: &[],
                },
                |_, _| None,
                |inserted, stored| counting(inserted, stored, &["a"], None),
            )
            .await;
        assert!(refused.is_err(), "SQLite checkpoints instead");
        return;
    }
    let second = place.open().await;
    let stores = [&first, &second];
    let memories = [
        std::sync::Mutex::new(None::<(i64, i64)>),
        std::sync::Mutex::new(None),
    ];
    let mut tasks = Vec::new();
    for turn in 0..40 {
        let (store, memory) = (stores[turn % 2], &memories[turn % 2]);
        // Every id twice, through both stores: stored and counted once.
        let id = format!("r{}", turn / 2);
        // Most turns hold what their store folded last (written by compare and swap when it
        // is still the stored version; locked and read, body left out or not, when another
        // fold moved it); every fifth holds nothing (while there is no event yet, a
        // placeholder); every seventh says it holds a version never stored (its body comes).
        let pretend = match turn {
            t if t % 5 == 0 => Some(None),
            t if t % 7 == 0 => Some(Some(0)),
            _ => None,
        };
        tasks.push(async move {
            // Staggered: some folds overlap, some find the event as their store left it.
            tokio::time::sleep(std::time::Duration::from_millis(turn as u64 * 2)).await;
            let r = result(&id, Status::Ok, 1_000 + turn as i64);
            let ids = [id.as_str()];
            let held = || *memory.lock().expect("memory");
            let folded = store
                .commit_folding(
                    Commit {
                        results: &[&r],
                        entities: &[("server", 1)],
                    },
                    |_, _| pretend.unwrap_or_else(|| held().map(|(version, _)| version)),
                    |inserted, stored| counting(inserted, stored, &ids, held()),
                )
                .await
                .expect("fold");
            let (new, count) = folded.value;
            if let Some(version) = folded.versions.values().next() {
                let mut memory = memory.lock().expect("memory");
                if memory.is_none_or(|(held, _)| held < *version) {
                    *memory = Some((*version, count));
                }
            }
            new
        });
    }
    let counted: i64 = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .sum();
    assert_eq!(counted, 20, "each id stored once");
    let (next, events) = first.all_events().await.expect("feed");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].row.body, "20", "no fold lost another's");
    assert_eq!(events[0].version, 20, "one version per fold that wrote");
    // Nothing written since: nothing read from `next`.
    let (same, again) = first.events_changed_since(&next).await.expect("feed");
    assert!(again.is_empty(), "{again:?}");
    // A fold through one handle is read once by the other's feed and never by its own.
    let r = result("after", Status::Critical, 9_000);
    second
        .commit_folding(
            Commit {
                results: &[&r],
                entities: &[],
            },
            |_, _| None,
            |inserted, stored| counting(inserted, stored, &["after"], None),
        )
        .await
        .expect("fold");
    let (later, read) = first.events_changed_since(&same).await.expect("feed");
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!((read[0].row.body.as_str(), read[0].version), ("21", 21));
    let (_, own) = second.events_changed_since(&same).await.expect("feed");
    assert!(own.is_empty(), "a handle's own folds are left out: {own:?}");
    let (_, twice) = first.events_changed_since(&later).await.expect("feed");
    assert!(twice.is_empty(), "read once: {twice:?}");
    // The same feed by key and version only, from the same positions.
    let (versions_later, versions) = first
        .event_versions_changed_since(&same)
        .await
        .expect("versions feed");
    assert_eq!(versions_later, later, "the same position on");
    assert_eq!(
        versions,
        vec![("dns".to_string(), "server".to_string(), 21)]
    );
    let (_, own) = second
        .event_versions_changed_since(&same)
        .await
        .expect("versions feed");
    assert!(own.is_empty(), "a handle's own folds are left out: {own:?}");
    let (_, twice) = first
        .event_versions_changed_since(&later)
        .await
        .expect("versions feed");
    assert!(twice.is_empty(), "read once: {twice:?}");
    // Read by key, whoever wrote it.
    let keyed = second
        .events_of(&[("dns".to_string(), "server".to_string())])
        .await
        .expect("by key");
    assert_eq!(keyed.len(), 1);
    assert_eq!(keyed[0].version, 21);
    // A caller holding the stored version folds from what it holds, and the fold is written
    // by compare and swap: one call. One holding an older version folds from it first, the
    // swap finds the event moved and writes nothing of it, and the fold is called again with
    // the stored event, its body read.
    // (A handle of its own: the folds above may have found their events moved often enough
    // for a handle to stop trying compare and swap for a while.)
    let third = place.open().await;
    for (n, held, calls) in [
        (0, 21, vec![(true, 21)]),
        (1, 21, vec![(true, 21), (false, 22)]),
    ] {
        let r = result(&format!("held-{n}"), Status::Ok, 5_000 + n);
        let mut seen = Vec::new();
        let folded = third
            .commit_folding(
                Commit {
                    results: &[&r],
                    entities: &[],
                },
                |_, _| Some(held),
                |inserted, stored| {
                    assert_eq!(inserted.len(), 1, "the result is new either time");
                    assert_eq!(stored.len(), 1);
                    assert_eq!(stored[0].row.body.is_empty(), stored[0].known);
                    seen.push((stored[0].known, stored[0].version));
                    let mut row = event_row(&r.id, Status::Ok, 5_000 + n);
                    row.body = format!("from {}", stored[0].version);
                    Ok(FoldOutput {
                        events: vec![row],
                        incidents: Vec::new(),
                        notices: Vec::new(),
                        value: (),
                    })
                },
            )
            .await
            .expect("fold");
        assert_eq!(seen, calls, "fold {n}");
        let pair = ("dns".to_string(), "server".to_string());
        assert_eq!(folded.versions.get(&pair), Some(&(22 + n)), "fold {n}");
        let stored = third.events_of(&[pair]).await.expect("by key");
        assert_eq!(
            (stored[0].version, stored[0].row.body.as_str()),
            (22 + n, if n == 0 { "from 21" } else { "from 22" }),
            "written from the version the last call was handed"
        );
    }
    // One notice per fold that stored something, in the order the folds committed.
    let notices = second.notices(100).await.expect("notices");
    assert_eq!(notices.len(), 21);
    assert!(notices.iter().all(|(_, body)| body == "+1"));
    let seqs: Vec<i64> = notices.iter().map(|(seq, _)| *seq).collect();
    first.drop_notices(&seqs[..15]).await.expect("drop");
    assert_eq!(second.notices(100).await.expect("notices").len(), 6);
    first.close().await;
    second.close().await;
    third.close().await;
}

/// The change feed takes a transaction that was running when it read at the next read, once,
/// and goes on past one that ended meanwhile: a transaction id window, which a late commit
/// falls behind, would skip it.
#[tokio::test]
async fn the_change_feed_takes_a_transaction_that_ends_after_it_read() {
    let server = mdd_testkit::postgres::Postgres::start();
    let url = server.create_database("feed");
    let follower = Store::connect(&url).await.expect("connect");
    let writer = Store::connect(&url)
        .await
        .expect("connect")
        .writing_as("writer");
    let fold = |id: &'static str, check: &'static str| {
        let writer = &writer;
        async move {
            let mut r = result(id, Status::Ok, 1_000);
            r.check = check.into();
            writer
                .commit_folding(
                    Commit {
                        results: &[&r],
                        entities: &[],
                    },
                    |_, _| None,
                    |_, _| {
                        let mut row = event_row(id, Status::Ok, 1_000);
                        row.check = check.into();
                        Ok(FoldOutput {
                            events: vec![row],
                            incidents: Vec::new(),
                            notices: Vec::new(),
                            value: (),
                        })
                    },
                )
                .await
                .expect("fold");
        }
    };
    fold("first", "late").await;
    let (start, all) = follower.all_events().await.expect("feed");
    assert_eq!(all.len(), 1);
    // A transaction that writes the event and stays open across a read.
    let raw = sqlx::PgPool::connect(&url).await.expect("raw connection");
    let mut late = raw.begin().await.expect("begin");
    sqlx::query(
        "UPDATE events SET body = 'late', version = version + 1,
             changed_xid = pg_current_xact_id()::text::bigint, changed_by = 'other'
         WHERE check_name = 'late'",
    )
    .execute(&mut *late)
    .await
    .expect("update");
    fold("second", "early").await;
    let (during, read) = follower.events_changed_since(&start).await.expect("feed");
    let checks: Vec<&str> = read.iter().map(|e| e.row.check.as_str()).collect();
    assert_eq!(checks, ["early"], "the open transaction is not seen yet");
    // The writer leaves out its own fold.
    let (_, own) = writer.events_changed_since(&start).await.expect("feed");
    assert!(own.is_empty(), "{own:?}");
    late.commit().await.expect("commit");
    let (after, read) = follower.events_changed_since(&during).await.expect("feed");
    let bodies: Vec<&str> = read.iter().map(|e| e.row.body.as_str()).collect();
    assert_eq!(bodies, ["late"], "taken once it ended, and only it");
    let (_, again) = follower.events_changed_since(&after).await.expect("feed");
    assert!(again.is_empty(), "{again:?}");
    raw.close().await;
    follower.close().await;
    writer.close().await;
}

/// Dead event rows piled up by folds are vacuumed away; a clean table is left alone.
#[tokio::test]
async fn churned_tables_are_vacuumed() {
    let server = mdd_testkit::postgres::Postgres::start();
    let url = server.create_database("vacuum");
    let store = Store::connect(&url).await.expect("connect");
    assert!(store.vacuum_churned().await.expect("vacuum").is_empty());
    let raw = sqlx::PgPool::connect(&url).await.expect("raw connection");
    sqlx::query(
        "INSERT INTO events (check_name, entity, status, executed_at, last_result_id, body)
         SELECT 'c', 'e' || n, 0, 0, '', 'x' FROM generate_series(1, 10) AS n",
    )
    .execute(&raw)
    .await
    .expect("insert");
    // One session writes them all and hands its statistics over at once (an idle session
    // holds them up to 10 s).
    let mut session = raw.acquire().await.expect("a session");
    for _ in 0..300 {
        sqlx::query("UPDATE events SET version = version + 1, changed_xid = changed_xid + 1")
            .execute(&mut *session)
            .await
            .expect("update");
    }
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *session)
        .await
        .expect("flush");
    drop(session);
    let dead = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'events'",
        )
        .fetch_one(&raw)
        .await
        .expect("stats")
    };
    // The statistics reach the view within a second or so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let vacuumed = loop {
        let vacuumed = store.vacuum_churned().await.expect("vacuum");
        if !vacuumed.is_empty() || std::time::Instant::now() > deadline {
            break vacuumed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(vacuumed, ["events"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while dead().await > 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "still {} dead",
            dead().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(store.vacuum_churned().await.expect("vacuum").is_empty());
    raw.close().await;
    store.close().await;
}
