//! The PostgreSQL backend, end to end: the store-facing suites run on it,
//! records wait out a database outage, and three gateway replicas behind a
//! balancer share one database and one span outbox.
//!
//! A real PostgreSQL: `TRACEGATE_TEST_POSTGRES` names one, else a private
//! cluster is started from Debian's `postgresql` package (`.ci/run`
//! installs it); without either the tests say so and pass, unless
//! `TRACEGATE_REQUIRE_POSTGRES_TESTS=1` (CI) makes that a failure.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::otlp::{Receiver, Transport};
use common::postgres::{self, Cluster};
use common::process::{Running, Serve};
use common::{Gateway, chat_body, eventually, start_mock};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The test binaries whose gateways record through the store: run again
/// with `TRACEGATE_TEST_BACKEND=postgres`, they are the store's suite on
/// PostgreSQL (a test that reads the SQLite file itself skips, saying so).
const STORE_SUITES: &[&str] = &[
    "api",
    "records",
    "queries",
    "cli",
    "export",
    "identity",
    "trajectory",
    "feedback",
    "harness_spans",
    "proxy",
    "resilience",
    "security",
    "routing",
    "cost",
    "rllm_client",
    "storage",
    "vocabulary",
    "openapi",
    "fidelity",
    "metrics",
    "faults",
    "upstream_kind",
    "first_hour",
    "ui",
];

/// The newest build of the test binary `name` beside this one.
fn sibling_test_binary(name: &str) -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let deps = me.parent()?;
    let prefix = format!("{name}-");
    std::fs::read_dir(deps)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let file = e.file_name();
            let file = file.to_string_lossy();
            file.starts_with(&prefix)
                && !file.contains('.')
                && file[prefix.len()..].chars().all(|c| c.is_ascii_hexdigit())
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, path)| path)
}

#[test]
fn the_store_facing_suites_pass_on_postgres() {
    let Some(server) = postgres::server() else {
        return;
    };
    let mut failed = Vec::new();
    for suite in STORE_SUITES {
        let Some(binary) = sibling_test_binary(suite) else {
            panic!(
                "no test binary for {suite} beside {:?}",
                std::env::current_exe()
            );
        };
        let out = Command::new(&binary)
            .env("TRACEGATE_TEST_BACKEND", "postgres")
            .env("TRACEGATE_TEST_POSTGRES", server.url("postgres"))
            .args(["--test-threads", "4"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout
            .lines()
            .filter(|l| l.starts_with("test result") || l.contains("skipped on postgres"))
            .collect::<Vec<_>>()
            .join("\n");
        println!("{suite} on postgres:\n{summary}");
        if !out.status.success() {
            failed.push(format!(
                "{suite}:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "failed on postgres:\n{}",
        failed.join("\n\n")
    );
}

/// A gateway recording into `db`, exporting to `receiver` when given.
fn replica(dir: &Path, db: &str, config: &Path, receiver: Option<&Receiver>) -> Running {
    let mut serve = Serve::new(dir).args(["--db", db, "--config", config.to_str().unwrap()]);
    if let Some(receiver) = receiver {
        serve = serve.args([
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            receiver.protocol(),
        ]);
    }
    serve.spawn()
}

/// A config with one route: a pool of `workers` (and a flush that gives
/// up after 2 s).
fn pool_config(dir: &Path, workers: &[String]) -> PathBuf {
    let listed: Vec<String> = workers
        .iter()
        .enumerate()
        .map(|(i, url)| format!("{{ url = \"{url}\", worker_id = \"w{i}\" }}"))
        .collect();
    let path = dir.join("tracegate.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nflush_timeout = \"2s\"\n\n[[routes]]\nname = \"pool\"\nmodel_prefix = \"*\"\ndefault = true\nkind = \"generic\"\n\
             workers = [{}]\n",
            listed.join(", ")
        ),
    )
    .unwrap();
    path
}

/// One turn of `session` through `gw`: its trace id when answered.
async fn turn(gw: &impl Gateway, session: &str, turn: usize) -> Option<String> {
    let answer = gw
        .chat(&chat_body(&format!("{session} turn {turn}")))
        .headers(&[
            ("x-rllm-session-id", session),
            ("x-rllm-run-id", "replicas"),
        ])
        .answer()
        .await;
    (answer.status == 200).then(|| answer.trace_id())
}

/// Every record in `db`, by trace id.
fn recorded(db: &str) -> BTreeMap<String, Value> {
    postgres::records_in(db)
        .into_iter()
        .map(|r| {
            let value = serde_json::to_value(&r).unwrap();
            (r.trace_id, value)
        })
        .collect()
}

/// Replicas behind the test's balancer: round robin over the live ones.
struct Fleet {
    replicas: Vec<Option<Running>>,
    /// Each replica's instance id, as `/health` names it.
    instances: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Fleet {
    /// `n` replicas recording into `db`, exporting to `receiver`.
    async fn start(n: usize, db: &str, config: &Path, receiver: &Receiver) -> Fleet {
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let replicas: Vec<Option<Running>> = dirs
            .iter()
            .map(|d| Some(replica(d.path(), db, config, Some(receiver))))
            .collect();
        let mut instances = Vec::new();
        for gw in replicas.iter().flatten() {
            let health = gw.get_json("/health").await;
            assert_eq!(health["backend"], "postgres");
            instances.push(health["instance"].as_str().unwrap().to_string());
        }
        Fleet {
            replicas,
            instances,
            _dirs: dirs,
        }
    }

    fn live(&self) -> Vec<&Running> {
        self.replicas.iter().flatten().collect()
    }

    /// One turn of every session, spread over the live replicas: the
    /// trace ids of the answered calls.
    async fn round(&self, sessions: &[String], round: usize) -> Vec<String> {
        let live = self.live();
        let calls = sessions
            .iter()
            .enumerate()
            .map(|(i, session)| turn(live[(i + round) % live.len()], session, round));
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Kills replica `i` (SIGKILL): its process just stops.
    async fn kill(&mut self, i: usize) {
        let dead = self.replicas[i].take().unwrap();
        Command::new("kill")
            .args(["-KILL", &dead.pid().to_string()])
            .status()
            .unwrap();
        let _ = dead.exited().await;
    }
}

/// How many outbox rows the replica `instance` holds claimed, unexported.
fn claimed_by(db: &str, instance: &str) -> i64 {
    let sql = format!(
        "SELECT COUNT(*) FROM spans WHERE exported_at IS NULL AND claimed_by LIKE '{instance}/%'"
    );
    postgres::count(db, &sql)
}

/// Each session's workers (the `upstream` of its calls).
fn workers_of_sessions(records: &BTreeMap<String, Value>) -> BTreeMap<String, BTreeSet<String>> {
    let mut workers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in records.values() {
        let session = record["session_id"].as_str().unwrap().to_string();
        let upstream = record["upstream"].as_str().unwrap().to_string();
        workers.entry(session).or_default().insert(upstream);
    }
    workers
}

/// How many times each recorded call's own span reached the collector,
/// once every call's has.
async fn spans_per_call(
    receiver: &Receiver,
    records: &BTreeMap<String, Value>,
) -> BTreeMap<String, usize> {
    let spans = eventually("every call's span at the collector", async || {
        let spans = receiver.spans();
        let seen: BTreeSet<String> = spans
            .iter()
            .filter_map(|s| s.attr("rllm.trace_id").as_str().map(str::to_string))
            .filter(|id| records.contains_key(id))
            .collect();
        (seen.len() == records.len()).then_some(spans)
    })
    .await;
    let mut per_call: BTreeMap<String, usize> = BTreeMap::new();
    for span in &spans {
        let id = span.attr("rllm.trace_id");
        let Some(record) = id.as_str().and_then(|id| records.get(id)) else {
            continue;
        };
        if span.span_id() == record["span_id"].as_str().unwrap() {
            *per_call.entry(id.to_string()).or_default() += 1;
        }
    }
    per_call
}

/// 16 sessions of 10 turns through `fleet`, each round's turns at once.
/// Half-way the collector stalls, so every replica's exporter hangs
/// mid-batch, and replica 1 dies (SIGKILL) holding its claims on the
/// outbox; the rest of the run goes to the two others. The answered calls.
async fn run_with_a_kill(fleet: &mut Fleet, receiver: &Receiver, db: &str) -> BTreeSet<String> {
    let sessions: Vec<String> = (0..16).map(|i| format!("s{i}")).collect();
    let mut answered = BTreeSet::new();
    for round in 0..10 {
        if round == 5 {
            receiver.stall(true);
        }
        answered.extend(fleet.round(&sessions, round).await);
        if round == 5 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            fleet.kill(1).await;
            let held = claimed_by(db, &fleet.instances[1]);
            println!("replicas: the killed replica held {held} spans claimed");
            assert!(held > 0, "the killed replica died mid-batch");
            receiver.stall(false);
        }
    }
    answered
}

/// Any live replica answers the run's questions the same.
async fn assert_replicas_agree(fleet: &Fleet) {
    let live = fleet.live();
    for path in [
        "/sessions",
        "/runs",
        "/runs/replicas",
        "/sessions/s3/traces",
    ] {
        let (a, b) = (live[0].get_json(path).await, live[1].get_json(path).await);
        assert_eq!(a, b, "{path} differs between replicas");
    }
    let run = live[0].get_json("/runs/replicas").await;
    assert_eq!(run["trace_count"], json!(160));
    assert_eq!(run["session_count"], json!(16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_record_every_answered_call_once_and_export_every_span_once() {
    let Some(db) = postgres::fresh_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (m0, m1) = (start_mock().await, start_mock().await);
    let config = pool_config(dir.path(), &[m0.base_url(), m1.base_url()]);
    let receiver = Receiver::start(Transport::Http).await;
    let mut fleet = Fleet::start(3, &db, &config, &receiver).await;
    let distinct: BTreeSet<_> = fleet.instances.iter().collect();
    assert_eq!(distinct.len(), 3, "each replica has its own instance id");

    let answered = run_with_a_kill(&mut fleet, &receiver, &db).await;
    for gw in fleet.live() {
        gw.flush().await;
    }

    let records = tokio::task::spawn_blocking({
        let db = db.clone();
        move || recorded(&db)
    })
    .await
    .unwrap();
    let ids: BTreeSet<String> = records.keys().cloned().collect();
    println!(
        "replicas: {} calls answered, {} recorded across a replica kill",
        answered.len(),
        records.len()
    );
    assert_eq!(answered.len(), 160, "every call was answered");
    assert_eq!(ids, answered, "every answered call is recorded, once");

    // Sessions stayed on their worker, whichever replica took each turn.
    let workers = workers_of_sessions(&records);
    assert!(workers.values().all(|w| w.len() == 1), "{workers:?}");
    let used: BTreeSet<_> = workers.values().flatten().collect();
    assert_eq!(used.len(), 2, "both workers served sessions: {workers:?}");

    // Every call's span reaches the collector exactly once, the dead
    // replica's claims included (once their lease ran out).
    let per_call = spans_per_call(&receiver, &records).await;
    println!(
        "replicas: {} spans exported for {} recorded calls",
        per_call.values().sum::<usize>(),
        records.len()
    );
    assert_eq!(per_call.len(), records.len());
    assert!(
        per_call.values().all(|n| *n == 1),
        "a span exported twice: {per_call:?}"
    );

    assert_replicas_agree(&fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_wait_while_the_database_is_down_and_commit_once_it_is_back() {
    let Some(cluster) = postgres::server().and_then(|_| Cluster::create()) else {
        println!("no PostgreSQL installed to stop and start: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock().await;
    let config = pool_config(dir.path(), &[mock.base_url()]);
    let db = cluster.url("postgres");
    let gw = replica(dir.path(), &db, &config, None);
    let mut answered = BTreeSet::new();
    answered.extend(turn(&gw, "before", 0).await);
    gw.flush().await;

    cluster.stop();
    for i in 0..20 {
        answered.extend(turn(&gw, "during", i).await);
    }
    let health = eventually("the store degraded", async || {
        let health = gw.get_json("/health").await;
        (health["status"] == "degraded").then_some(health)
    })
    .await;
    println!("while the database is down: {}", health["store"]);
    assert_eq!(health["store"]["reason"], "unreachable");
    assert_eq!(health["store"]["backlog"]["records"], json!(20));
    let flush = gw.post("/admin/flush").answer().await;
    assert_eq!(
        flush.status, 503,
        "a flush cannot finish while the database is down"
    );

    cluster.start();
    eventually("the store commits again", async || {
        let health = gw.get_json("/health").await;
        (health["status"] == "ok" && health["store"]["backlog"]["records"] == 0).then_some(())
    })
    .await;
    gw.flush().await;
    let ids: BTreeSet<String> = tokio::task::spawn_blocking(move || recorded(&db))
        .await
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(answered.len(), 21);
    assert_eq!(ids, answered, "nothing was lost or doubled by the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_version_set_on_one_replica_reaches_the_others() {
    let Some(db) = postgres::fresh_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock().await;
    let config = pool_config(dir.path(), &[mock.base_url()]);
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(da.path(), &db, &config, None);
    let b = replica(db_dir.path(), &db, &config, None);
    let set = a
        .post("/admin/weight_version")
        .json(&json!({"weight_version": 7}))
        .answer()
        .await;
    assert_eq!(set.status, 200);
    eventually("replica b follows", async || {
        let version = b.get_json("/admin/weight_version").await;
        (version["weight_version"] == 7).then_some(())
    })
    .await;
    let trace_id = turn(&b, "after-sync", 0).await.unwrap();
    b.flush().await;
    let records = tokio::task::spawn_blocking({
        let db = db.clone();
        move || recorded(&db)
    })
    .await
    .unwrap();
    assert_eq!(records[&trace_id]["weight_version"], json!(7));
    // A replica started later finds the version too.
    let later_dir = tempfile::tempdir().unwrap();
    let later = replica(later_dir.path(), &db, &config, None);
    eventually("a later replica starts at the version", async || {
        let version = later.get_json("/admin/weight_version").await;
        (version["weight_version"] == 7).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_old_calls_and_only_exported_spans() {
    let Some(db) = postgres::fresh_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock().await;
    let config = pool_config(dir.path(), &[mock.base_url()]);
    let receiver = Receiver::start(Transport::Http).await;
    let gw = replica(dir.path(), &db, &config, Some(&receiver));
    for i in 0..3 {
        turn(&gw, "old", i).await.unwrap();
    }
    gw.flush().await;
    receiver.wait_for(3).await;
    let _ = gw.stop().await;
    let prune = |extra: &[&str]| {
        let mut cmd = common::process::tracegate(dir.path());
        cmd.args(["prune", "--db", &db, "--older-than", "1ms"])
            .args(extra);
        String::from_utf8(common::process::succeed(&mut cmd).stdout).unwrap()
    };
    let dry = prune(&["--dry-run"]);
    assert!(dry.contains("traces 3"), "{dry}");
    assert_eq!(
        postgres::count(&db, "SELECT COUNT(*) FROM traces"),
        3,
        "a dry run changes nothing"
    );
    let done = prune(&[]);
    assert!(
        done.contains("traces 3") && done.contains("spans 3"),
        "{done}"
    );
    for table in ["traces", "sessions", "runs", "spans"] {
        let left = postgres::count(&db, &format!("SELECT COUNT(*) FROM {table}"));
        assert_eq!(left, 0, "{table} after prune: {done}");
    }
}
