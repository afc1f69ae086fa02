//! Unit tests of the namespace invariants and the listing plans, each run on both backends
//! (a real SQLite file, a real PostgreSQL schema: [`crate::conformance!`]).

use mobula_http::Code;

use crate::api::*;
use crate::db::Db;
use crate::namespace::{self, list_sql};
use crate::params;
use crate::{registry, repairs, uploads};

fn setup(db: &Db) {
    db.write(|tx| namespace::create_account(tx, "a")).unwrap();
}

fn data(id: &str) -> Data {
    Data {
        id: id.repeat(32 / id.len()),
        size: 3,
        md5: "m".into(),
        blake3: "b".into(),
        durability: 2,
        nodes: vec!["n1".into(), "n2".into()],
    }
}

fn put(db: &Db, path: &str, d: Data) -> Result<Entry, crate::Error> {
    db.write(|tx| {
        namespace::put_object(
            tx,
            &PutObject {
                parents: false,
                path: path.into(),
                data: d,
                content_type: "text/plain".into(),
                headers: Headers::new(),
                preconditions: Preconditions::default(),
            },
        )
    })
}

fn garbage(db: &Db) -> Vec<String> {
    db.read(|c| registry::garbage(c, 100))
        .unwrap()
        .into_iter()
        .map(|g| g.data_id)
        .collect()
}

fn every_listing_variant_is_an_index_range_scan(db: &Db) {
    for sort in [SortBy::Name, SortBy::Mtime] {
        for reverse in [false, true] {
            for marker in [false, true] {
                let sql_text = list_sql(sort, reverse, marker);
                let what = format!("{sort:?} {reverse} {marker}");
                let (name, mtime) = match marker {
                    true => (Some("m"), Some(0)),
                    false => (None, None),
                };
                let p = params!["/a", name, mtime, 10];
                crate::testdb::assert_range_scan(db, &sql_text, p, &what);
            }
        }
    }
}

fn references_and_reclamation(db: &Db) {
    put(db, "/a/stor/x", data("1")).unwrap();
    db.write(|tx| {
        namespace::put_link(
            tx,
            &PutLink {
                path: "/a/stor/l".into(),
                source: "/a/stor/x".into(),
                preconditions: Preconditions::default(),
            },
        )
    })
    .unwrap();
    put(db, "/a/stor/x", data("2")).unwrap();
    assert!(garbage(db).is_empty(), "the link still holds data 1");
    db.write(|tx| {
        namespace::delete(
            tx,
            &DeleteEntry {
                path: "/a/stor/l".into(),
                preconditions: Preconditions::default(),
            },
        )
    })
    .unwrap();
    assert_eq!(garbage(db), vec!["1".repeat(32)]);
    let stor = db.read(|c| namespace::get(c, "/a/stor")).unwrap().unwrap();
    assert_eq!(stor.children, 1);
    // Known data: live and queued ids; unknown ids are orphans.
    let known = db
        .read(|c| registry::known_data(c, &["1".repeat(32), "2".repeat(32), "3".repeat(32)]))
        .unwrap();
    assert_eq!(known.len(), 2);
}

fn failed_writes_change_nothing(db: &Db) {
    put(db, "/a/stor/x", data("1")).unwrap();
    let e = db
        .write(|tx| {
            namespace::put_object(
                tx,
                &PutObject {
                    parents: false,
                    path: "/a/stor/x".into(),
                    data: data("2"),
                    content_type: String::new(),
                    headers: Headers::new(),
                    preconditions: Preconditions {
                        if_none_match: Some(vec!["*".into()]),
                        ..Default::default()
                    },
                },
            )
        })
        .unwrap_err();
    assert_eq!(e.code(), Code::PreconditionFailed);
    let cur = db
        .read(|c| namespace::get(c, "/a/stor/x"))
        .unwrap()
        .unwrap();
    assert_eq!(cur.data.unwrap().id, "1".repeat(32));
    assert!(db
        .read(|c| registry::known_data(c, &["2".repeat(32)]))
        .unwrap()
        .is_empty());
    assert_eq!(
        put(db, "/a/stor/no/x", data("3")).unwrap_err().code(),
        Code::DirectoryDoesNotExist
    );
    assert_eq!(
        put(db, "/a/stor/x/y", data("3")).unwrap_err().code(),
        Code::ParentNotDirectory
    );
}

fn upload_parts_are_released_on_commit_and_abort(db: &Db) {
    let u = Upload {
        id: "u".repeat(32),
        account: "a".into(),
        object_path: "/a/stor/big".into(),
        content_type: "x".into(),
        headers: Headers::new(),
        durability: 2,
        nodes: vec!["n1".into(), "n2".into()],
        state: "created".into(),
        created: 0,
        committed_parts: None,
        parts: vec![],
    };
    db.write(|tx| uploads::create(tx, &u)).unwrap();
    for (n, id) in [(0, "4"), (1, "5"), (1, "6")] {
        db.write(|tx| {
            uploads::put_part(
                tx,
                &PutPart {
                    upload_id: u.id.clone(),
                    n,
                    data: data(id),
                    link: false,
                },
            )
        })
        .unwrap();
    }
    assert_eq!(garbage(db), vec!["5".repeat(32)], "replaced part");
    db.write(|tx| {
        uploads::commit(
            tx,
            &CommitUpload {
                upload_id: u.id.clone(),
                parts: vec!["4".repeat(32), "6".repeat(32)],
                data: data("7"),
                headers: Headers::new(),
                preconditions: Preconditions::default(),
            },
        )
    })
    .unwrap();
    let mut g = garbage(db);
    g.sort();
    assert_eq!(g, vec!["4".repeat(32), "5".repeat(32), "6".repeat(32)]);
    let done = db.read(|c| uploads::get(c, &u.id)).unwrap().unwrap();
    assert_eq!(done.state, "done");
    assert_eq!(
        db.write(|tx| uploads::abort(tx, &u.id)).unwrap_err().code(),
        Code::InvalidUpdate
    );
}

fn data_on_node_pages_by_id(db: &Db) {
    put(db, "/a/stor/x", data("1")).unwrap();
    put(db, "/a/stor/y", data("2")).unwrap();
    let on = |node: &str, after: &str| {
        db.read(|c| registry::data_on_node(c, node, after, 10))
            .unwrap()
    };
    assert_eq!(on("n1", ""), vec!["1".repeat(32), "2".repeat(32)]);
    assert_eq!(on("n2", &"1".repeat(32)), vec!["2".repeat(32)]);
    assert!(on("n3", "").is_empty());
}

fn a_job_log_creates_its_outputs_and_leaves_out_one_whose_path_is_taken(db: &Db) {
    let job = NewJob {
        id: "j".into(),
        account: "a".into(),
        name: String::new(),
        spec: "{}".into(),
    };
    db.write(|tx| crate::jobs::create(tx, &job)).unwrap();
    let object = |path: &str, d: Data| PutObject {
        parents: true,
        path: path.into(),
        data: d,
        content_type: "application/octet-stream".into(),
        headers: Headers::new(),
        preconditions: Preconditions::default(),
    };
    // A user's object where one output's parent directory would go.
    db.write(|tx| namespace::put_object(tx, &object("/a/jobs/j/stor/in", data("1"))))
        .unwrap();
    let (ok, bad) = ("/a/jobs/j/stor/x.0.u1", "/a/jobs/j/stor/in/y.0.u2");
    let log = |expect_events| JobAppend {
        id: "j".into(),
        expect_events,
        events: vec!["e".into()],
        out: vec![ok.into(), bad.into()],
        objects: vec![object(ok, data("2")), object(bad, data("3"))],
        ..Default::default()
    };
    // A coordinator that has not seen the whole log creates nothing.
    let e = db.write(|tx| crate::jobs::log(tx, &log(5))).unwrap_err();
    assert_eq!(e.code(), Code::ConcurrentRequest);
    assert!(db.read(|c| namespace::get(c, ok)).unwrap().is_none());
    db.write(|tx| crate::jobs::log(tx, &log(0))).unwrap();
    let got = db.read(|c| namespace::get(c, ok)).unwrap().unwrap();
    assert_eq!(got.data.unwrap().id, data("2").id);
    assert!(db.read(|c| namespace::get(c, bad)).unwrap().is_none());
    let q = JobRecords {
        id: "j".into(),
        kind: "out".into(),
        from: 0,
        limit: 10,
    };
    assert_eq!(db.read(|c| crate::jobs::records(c, &q)).unwrap(), [ok]);
    assert_eq!(garbage(db), [data("3").id]);
}

/// A writer that did not hear its commit succeed queues the data as garbage: live data is
/// never handed to the reclaimer all the same.
fn live_data_queued_as_garbage_is_not_reclaimed(db: &Db) {
    put(db, "/a/stor/x", data("7")).unwrap();
    let g = Garbage {
        data_id: "7".repeat(32),
        nodes: vec!["n1".into()],
    };
    db.write(|tx| registry::queue_garbage(tx, &g)).unwrap();
    assert!(garbage(db).is_empty(), "live data reclaimed");
    db.write(|tx| {
        namespace::delete(
            tx,
            &DeleteEntry {
                path: "/a/stor/x".into(),
                preconditions: Preconditions::default(),
            },
        )
    })
    .unwrap();
    assert_eq!(garbage(db), vec!["7".repeat(32)]);
}

fn account_names_are_checked_and_console_is_reserved(db: &Db) {
    for bad in [
        "",
        "Admin",
        "1abc",
        "a b",
        "a/b",
        "console",
        &"a".repeat(65),
    ] {
        let e = db
            .write(|tx| namespace::create_account(tx, bad))
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
    }
    assert!(db
        .write(|tx| namespace::create_account(tx, "b-2_x"))
        .unwrap());
}

fn a_drained_nodes_copy_counts_until_its_replacement_exists(db: &Db) {
    for n in ["n1", "n2", "n3"] {
        let hb = Heartbeat {
            id: n.into(),
            url: format!("http://{n}"),
            free_bytes: 1,
            total_bytes: 2,
            slots: 0,
        };
        db.write(|tx| registry::heartbeat(tx, &hb)).unwrap();
    }
    put(db, "/a/stor/x", data("1")).unwrap();
    let id = data("1").id;
    let set = |state: &str| NodeState {
        id: "n1".into(),
        state: state.into(),
    };
    assert_eq!(
        db.write(|tx| registry::remove(tx, "n1"))
            .unwrap_err()
            .code(),
        Code::InvalidUpdate,
        "an active node is not removed"
    );
    db.write(|tx| registry::set_state(tx, &set("draining")))
        .unwrap();
    assert_eq!(
        db.write(|tx| registry::set_state(tx, &set("gone")))
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // A heartbeat does not make it active again.
    let hb = Heartbeat {
        id: "n1".into(),
        url: "http://n1".into(),
        free_bytes: 1,
        total_bytes: 2,
        slots: 0,
    };
    db.write(|tx| registry::heartbeat(tx, &hb)).unwrap();
    let nodes = db.read(registry::nodes).unwrap();
    assert_eq!(
        nodes.iter().find(|n| n.id == "n1").unwrap().state,
        "draining"
    );
    let e = Evacuate {
        id: "n1".into(),
        after: String::new(),
        limit: 10,
    };
    assert_eq!(
        db.write(|tx| registry::evacuate(tx, &e)).unwrap(),
        Some(id.clone())
    );
    // Queued, but the copy on n1 still counts: the object is not under-replicated.
    let r = db.read(|c| repairs::repairs(c, 10)).unwrap();
    assert_eq!((r.len(), r[0].bad_node.as_str()), (1, "n1"));
    assert_eq!(r[0].data.nodes, vec!["n1".to_string(), "n2".to_string()]);
    assert_eq!(db.read(registry::summary).unwrap().under_replicated, 0);
    assert_eq!(
        db.write(|tx| registry::remove(tx, "n1"))
            .unwrap_err()
            .code(),
        Code::InvalidUpdate,
        "it still holds a needed copy"
    );
    // The new copy on n3 replaces it in one step.
    let c = Copy {
        data_id: id.clone(),
        node: "n3".into(),
    };
    db.write(|tx| repairs::repaired(tx, "n1", &c)).unwrap();
    let d = db
        .read(|c| namespace::get(c, "/a/stor/x"))
        .unwrap()
        .unwrap();
    assert_eq!(
        d.data.unwrap().nodes,
        vec!["n2".to_string(), "n3".to_string()]
    );
    assert_eq!(db.read(|c| registry::copies_on(c, "n1")).unwrap(), 0);
    db.write(|tx| registry::remove(tx, "n1")).unwrap();
    assert_eq!(db.read(registry::nodes).unwrap().len(), 2);
    // Still running, it heartbeats on: it stays forgotten (no copies placed on it again).
    db.write(|tx| registry::heartbeat(tx, &hb)).unwrap();
    assert!(db
        .read(registry::nodes)
        .unwrap()
        .iter()
        .all(|n| n.id != "n1"));
    for e in [
        db.write(|tx| registry::remove(tx, "n1")).unwrap_err(),
        db.write(|tx| registry::set_state(tx, &set("active")))
            .unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::ResourceNotFound);
    }
}

/// Gateways share the repair queue: a claimed repair goes to no other claimant until its claim
/// runs out or is released; the swap ends it.
fn repairs_are_claimed_by_one_gateway_at_a_time(db: &Db) {
    for (i, id) in ["1", "2", "3"].iter().enumerate() {
        put(db, &format!("/a/stor/r{i}"), data(id)).unwrap();
        let bad = Copy {
            data_id: data(id).id,
            node: "n1".into(),
        };
        db.write(|tx| registry::report_bad(tx, &bad)).unwrap();
    }
    let claim = |limit, lease_ms| db.write(|tx| repairs::claim(tx, limit, lease_ms)).unwrap();
    let first = claim(2, 60_000);
    assert_eq!(first.len(), 2);
    let second = claim(10, 60_000);
    assert_eq!(second.len(), 1, "only the unclaimed one");
    assert!(first.iter().all(|r| r.data.id != second[0].data.id));
    assert!(claim(10, 60_000).is_empty(), "all claimed");
    // A released claim is free at once; a run-out claim too.
    let lost = |r: &Repair| Copy {
        data_id: r.data.id.clone(),
        node: r.bad_node.clone(),
    };
    db.write(|tx| repairs::release(tx, &lost(&first[0]), 0))
        .unwrap();
    let again = claim(10, 0);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].data.id, first[0].data.id);
    assert_eq!(claim(10, 60_000).len(), 1, "its zero lease ran out");
    // Released to be retried later: no one's until then.
    db.write(|tx| repairs::release(tx, &lost(&first[0]), 60_000))
        .unwrap();
    assert!(claim(10, 60_000).is_empty(), "not before its retry time");
    // Still listed while claimed; gone once repaired.
    assert_eq!(db.read(|c| repairs::repairs(c, 10)).unwrap().len(), 3);
    let new = Copy {
        data_id: first[1].data.id.clone(),
        node: "n3".into(),
    };
    db.write(|tx| repairs::repaired(tx, "n1", &new)).unwrap();
    assert_eq!(db.read(|c| repairs::repairs(c, 10)).unwrap().len(), 2);
    // A claim is one index range, never a walk over the repairs claimed or waiting.
    let plan = crate::testdb::assert_range_scan_of(
        db,
        &repairs::claim_sql(),
        crate::params![10, 0],
        "claiming repairs",
        "r",
    );
    assert!(plan.contains("repairs_by_claim"), "{plan}");
}

/// Two repairs of one data's copies decided on the same (stale) view both put their new copy
/// on the same node: the second finds it there already, and the copy it was to replace keeps
/// counting (refused, nothing changed) rather than leave the data one copy short.
fn a_repair_on_a_stale_view_never_drops_a_needed_copy(db: &Db) {
    put(db, "/a/stor/s", data("s")).unwrap();
    let id = data("s").id;
    for node in ["n1", "n2"] {
        let e = crate::api::Evacuate {
            id: node.into(),
            after: String::new(),
            limit: 10,
        };
        db.write(|tx| registry::evacuate(tx, &e)).unwrap();
    }
    let to_n3 = Copy {
        data_id: id.clone(),
        node: "n3".into(),
    };
    db.write(|tx| repairs::repaired(tx, "n1", &to_n3)).unwrap();
    let nodes = |db: &Db| db.read(|c| registry::data_nodes(c, &id)).unwrap().unwrap();
    assert_eq!(nodes(db), ["n2", "n3"]);
    let e = db
        .write(|tx| repairs::repaired(tx, "n2", &to_n3))
        .unwrap_err();
    assert_eq!(e.code(), mobula_http::Code::PreconditionFailed, "{e}");
    assert_eq!(nodes(db), ["n2", "n3"], "n2's copy still counts");
    assert_eq!(db.read(|c| repairs::repairs(c, 10)).unwrap().len(), 1);
    // With fresh eyes the repair puts its copy elsewhere, and n2's stops counting.
    let to_n4 = Copy {
        data_id: id.clone(),
        node: "n4".into(),
    };
    db.write(|tx| repairs::repaired(tx, "n2", &to_n4)).unwrap();
    assert_eq!(nodes(db), ["n3", "n4"]);
}

crate::conformance!(
    super::setup;
    a_repair_on_a_stale_view_never_drops_a_needed_copy,
    every_listing_variant_is_an_index_range_scan,
    references_and_reclamation,
    failed_writes_change_nothing,
    upload_parts_are_released_on_commit_and_abort,
    data_on_node_pages_by_id,
    a_job_log_creates_its_outputs_and_leaves_out_one_whose_path_is_taken,
    live_data_queued_as_garbage_is_not_reclaimed,
    account_names_are_checked_and_console_is_reserved,
    a_drained_nodes_copy_counts_until_its_replacement_exists,
    repairs_are_claimed_by_one_gateway_at_a_time,
);
