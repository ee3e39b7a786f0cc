//! The store under faults: a database at its size cap, a real full disk, a
//! lock held for long, a stop while the store cannot commit. In each the
//! calls themselves are answered as usual, `/health` and `/metrics` say the
//! store is degraded and what it keeps, and once the fault passes every
//! record is committed, exactly once. Each test prints what it measured:
//! records sent, records lost (0).
//!
//! How the faults are made, for real and without a mock of SQLite:
//!
//! * **a full database**: `store.max_size` caps the file (`PRAGMA
//!   max_page_count`) and filler rows take it to the cap, so SQLite fails the
//!   commit with `SQLITE_FULL` exactly as on a full disk; deleting filler
//!   rows frees pages inside the file, as a prune does. Works anywhere.
//! * **a full disk**: a small `tmpfs` holds the database and a file fills it
//!   until the kernel answers `ENOSPC` — the spill file, on the same disk,
//!   fails too. Mounting needs root: these tests are ignored unless
//!   `TRACEGATE_REQUIRE_ROOT_TESTS=1` (CI runs as root and sets it), and
//!   then fail if they cannot mount.
//! * **a lock**: another connection holds `BEGIN EXCLUSIVE` for as long as
//!   the test says (longer than the busy timeout: every commit fails).
//!
//! How long the store stays unable to commit is `TRACEGATE_FAULT_SECONDS`
//! (default 2), calls arriving all along: `TRACEGATE_FAULT_SECONDS=300
//! TRACEGATE_REQUIRE_ROOT_TESTS=1 cargo test --test store_faults -- --nocapture`
//! proves the five-minute mark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::Serve;
use common::{Gateway, Setup, records_in, start_mock, until};
use rusqlite::Connection;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracegate::store::spill_file_of;

/// How long a fault lasts while calls keep coming.
fn fault_duration() -> Duration {
    let seconds = std::env::var("TRACEGATE_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    Duration::from_secs(seconds)
}

/// A chat body whose message is `bytes` of text that does not compress
/// (so that its record needs pages of its own), different for each `n`.
fn body(n: u64, bytes: usize) -> Value {
    let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut text = format!("call {n}: ");
    while text.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(&format!("{state:016x}"));
    }
    json!({"model": "mock-model", "messages": [{"role": "user", "content": text}]})
}

/// The message content of each body.
fn contents(bodies: &[Value]) -> BTreeSet<String> {
    bodies
        .iter()
        .map(|b| b["messages"][0]["content"].as_str().unwrap().to_string())
        .collect()
}

/// The message content of each record in `db`, checking none is there twice.
fn stored_contents(db: &Path) -> BTreeSet<String> {
    let records = records_in(db);
    let contents: BTreeSet<String> = records
        .iter()
        .map(|r| r.messages[0]["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(contents.len(), records.len(), "no record is stored twice");
    contents
}

/// The store part of `/health`.
async fn store(gw: &impl Gateway) -> Value {
    let health = gw.get_json("/health").await;
    let mut store = health["store"].clone();
    store["status"] = health["status"].clone();
    store
}

/// Waits until the store keeps `records` records (and is degraded).
async fn until_kept(gw: &impl Gateway, records: usize) -> Value {
    let what = format!("{records} records kept by a degraded store");
    common::eventually(&what, async || {
        let s = store(gw).await;
        (s["backlog"]["records"] == records && s["status"] == "degraded").then_some(s)
    })
    .await
}

/// Waits until the store commits again and keeps nothing.
async fn until_recovered(gw: &impl Gateway) {
    until("the store to commit its backlog", async || {
        let s = store(gw).await;
        s["status"] == "ok" && s["backlog"]["records"] == 0
    })
    .await;
}

/// The lines of the spill file (0 when there is none).
fn spill_lines(db: &Path) -> usize {
    std::fs::read_to_string(spill_file_of(db)).map_or(0, |text| text.lines().count())
}

/// Filler rows in the gateway's database: they take it to its cap, and
/// deleting them makes room inside the file, as a prune would.
struct Ballast {
    conn: Connection,
}

impl Ballast {
    /// Fills the database at `db` until it holds at least `pages` pages.
    fn fill(db: &Path, pages: i64) -> Ballast {
        let conn = Connection::open(db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("CREATE TABLE IF NOT EXISTS ballast (b BLOB)")
            .unwrap();
        let page_count =
            |c: &Connection| -> i64 { c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap() };
        while page_count(&conn) < pages {
            // About one 16 KiB page each.
            conn.execute("INSERT INTO ballast VALUES (zeroblob(16000))", [])
                .unwrap();
        }
        Ballast { conn }
    }

    /// Deletes `rows` filler rows: about as many pages become free.
    fn free(&self, rows: usize) {
        self.conn
            .execute(
                "DELETE FROM ballast WHERE rowid IN (SELECT rowid FROM ballast LIMIT ?1)",
                [rows as i64],
            )
            .unwrap();
    }

    /// Deletes every filler row.
    fn free_all(&self) {
        self.conn.execute("DELETE FROM ballast", []).unwrap();
    }
}

/// The cap of the capped gateways, and the pages it is (the store makes
/// 8 KiB pages).
const MAX_SIZE: &str = "2MiB";
const MAX_PAGES: i64 = (2 << 20) / 8192;

/// A configuration file with these `[store]` settings, in `dir`.
fn store_config(dir: &Path, settings: &str) -> PathBuf {
    let path = dir.join("store.toml");
    std::fs::write(&path, format!("[store]\n{settings}\n")).unwrap();
    path
}

/// The mock and a gateway whose database is capped at [`MAX_SIZE`] and
/// already full, with a flush that gives up after a second.
async fn full_database() -> (Setup, Ballast, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = store_config(
        dir.path(),
        &format!("max_size = \"{MAX_SIZE}\"\nflush_timeout = \"1s\""),
    );
    let gw = Setup::with(|args| args.config = Some(config)).await;
    let ballast = Ballast::fill(&gw.db, MAX_PAGES);
    (gw, ballast, dir)
}

/// Sends `bodies` one after the other; each is answered 200.
async fn send_all(gw: &impl Gateway, bodies: &[Value]) {
    for body in bodies {
        let answer = gw.chat(body).answer().await;
        assert_eq!(answer.status, 200, "the call never waits on the store");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_keeps_every_record_until_room_is_made() {
    if common::sqlite_only("a_full_database_keeps_every_record_until_room_is_made") {
        return;
    }
    let (setup, ballast, _dir) = full_database().await;
    let gw = &*setup;
    let bodies: Vec<Value> = (0..12).map(|n| body(n, 24_000)).collect();
    send_all(gw, &bodies).await;

    let kept = until_kept(gw, bodies.len()).await;
    assert_eq!(kept["state"], "degraded");
    assert_eq!(kept["reason"], "full");
    assert!(
        kept["last_error"].as_str().unwrap().contains("full"),
        "{kept}"
    );
    assert_eq!(
        kept["backlog"]["spilled"],
        bodies.len(),
        "in the spill file"
    );
    assert_eq!(kept["backlog"]["in_memory"], 0);
    assert!(kept["backlog"]["oldest_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(spill_lines(&gw.db), bodies.len());
    let metrics = gw.get("/metrics").answer().await.text();
    assert!(metrics.contains("tracegate_store_degraded 1"), "{metrics}");
    let spilled = format!(
        "tracegate_store_backlog_records{{place=\"spill\"}} {}",
        bodies.len()
    );
    assert!(metrics.contains(&spilled), "{metrics}");

    let flush = gw.post("/admin/flush").answer().await;
    assert_eq!(
        flush.status, 503,
        "a flush gives up after store.flush_timeout"
    );
    let error = &flush.json()["error"];
    assert_eq!(error["code"], "store_unavailable");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("cannot commit (full)"),
        "{error}"
    );

    ballast.free_all();
    until_recovered(gw).await;
    gw.flush().await;
    assert_eq!(stored_contents(&gw.db), contents(&bodies));
    assert_eq!(spill_lines(&gw.db), 0, "the spill file is gone");
    assert!(!spill_file_of(&gw.db).exists());
    let metrics = gw.get("/metrics").answer().await.text();
    assert!(metrics.contains("tracegate_store_degraded 0"));
    println!(
        "database full: {} calls answered, {} records kept in the spill file, 0 lost",
        bodies.len(),
        bodies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_commits_in_pieces_that_fit_the_room_made() {
    if common::sqlite_only("a_backlog_commits_in_pieces_that_fit_the_room_made") {
        return;
    }
    let (setup, ballast, _dir) = full_database().await;
    let gw = &*setup;
    let bodies: Vec<Value> = (0..30).map(|n| body(n, 24_000)).collect();
    send_all(gw, &bodies).await;
    until_kept(gw, bodies.len()).await;

    // Room for a few records, far from all 30: committed whole, the backlog
    // would never fit; in pieces, some of it does.
    const FREED: usize = 12;
    ballast.free(FREED);
    let db = gw.db.clone();
    let committed = common::eventually("a first piece to commit", async || {
        let n = common::count(&db, "SELECT COUNT(*) FROM traces");
        (n > 0).then_some(n)
    })
    .await;
    assert!(
        committed < bodies.len() as i64,
        "{committed} records fit in {FREED} pages"
    );

    ballast.free_all();
    until_recovered(gw).await;
    gw.flush().await;
    assert_eq!(stored_contents(&gw.db), contents(&bodies));
    println!(
        "pieces: {committed} of {} records fit in the {FREED} pages freed first; all after the rest was freed",
        bodies.len()
    );
}

/// Another connection's `BEGIN EXCLUSIVE` on `db`, held until released.
struct Lock {
    release: std::sync::mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
}

impl Lock {
    fn take(db: &Path) -> Lock {
        let db = db.to_path_buf();
        let (taken, is_taken) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let conn = Connection::open(db).unwrap();
            conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
            taken.send(()).unwrap();
            let _ = released.recv();
            conn.execute_batch("COMMIT").unwrap();
        });
        is_taken.recv().unwrap();
        Lock { release, holder }
    }

    fn release(self) {
        self.release.send(()).unwrap();
        self.holder.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lock_keeps_the_records_and_refuses_what_must_wait() {
    if common::sqlite_only("a_long_lock_keeps_the_records_and_refuses_what_must_wait") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = store_config(
        dir.path(),
        "busy_timeout = \"200ms\"\nflush_timeout = \"1s\"",
    );
    let setup = Setup::with(|args| args.config = Some(config)).await;
    let gw = &*setup;
    let lock = Lock::take(&gw.db);

    // Calls keep coming for as long as the lock is held.
    let (started, mut bodies) = (Instant::now(), Vec::new());
    while started.elapsed() < fault_duration() || bodies.len() < 3 {
        let body = body(bodies.len() as u64, 500);
        send_all(gw, std::slice::from_ref(&body)).await;
        bodies.push(body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = until_kept(gw, bodies.len()).await;
    assert_eq!(kept["reason"], "locked", "{kept}");
    let flush = gw.post("/admin/flush").answer().await;
    assert_eq!(flush.status, 503);
    assert_eq!(flush.json()["error"]["code"], "store_unavailable");
    let session = gw
        .post("/sessions")
        .json(&json!({"session_id": "s"}))
        .answer()
        .await;
    assert_eq!(
        session.status, 503,
        "a session change is refused, not queued"
    );
    assert_eq!(session.json()["error"]["code"], "store_unavailable");

    lock.release();
    until_recovered(gw).await;
    gw.flush().await;
    assert_eq!(stored_contents(&gw.db), contents(&bodies));
    let session = gw
        .post("/sessions")
        .json(&json!({"session_id": "s"}))
        .answer()
        .await;
    assert_eq!(session.status, 200);
    println!(
        "records lost with the database locked for {:?}: 0 of {}",
        started.elapsed(),
        bodies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_while_degraded_commits_its_spill_file_at_the_next_start() {
    if common::sqlite_only(
        "a_gateway_stopped_while_degraded_commits_its_spill_file_at_the_next_start",
    ) {
        return;
    }
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = store_config(dir.path(), &format!("max_size = \"{MAX_SIZE}\""));
    let serve = || {
        Serve::new(dir.path())
            .upstream(&mock.base_url())
            .args(["--db", "traces.db", "--config"])
            .args([&config])
    };
    let db = dir.path().join("traces.db");
    let gw = serve().spawn();
    let ballast = Ballast::fill(&db, MAX_PAGES);
    let bodies: Vec<Value> = (0..8).map(|n| body(n, 24_000)).collect();
    send_all(&gw, &bodies).await;
    until_kept(&gw, bodies.len()).await;

    let (status, log) = gw.stop_with_status().await;
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.contains("records wait in the spill file; the next start commits them"),
        "{log}"
    );
    assert_eq!(spill_lines(&db), bodies.len(), "the backlog is on disk");
    assert_eq!(common::count(&db, "SELECT COUNT(*) FROM traces"), 0);

    ballast.free_all();
    let gw = serve().spawn();
    until_recovered(&gw).await;
    gw.flush().await;
    assert_eq!(stored_contents(&db), contents(&bodies));
    assert!(!spill_file_of(&db).exists());
    let (status, log) = gw.stop_with_status().await;
    assert!(
        status.success() && !log.contains("checkpoint failed"),
        "{log}"
    );
    println!(
        "stopped while degraded: {} records kept in the spill file, committed at the next start, 0 lost",
        bodies.len()
    );
}

/// A small `tmpfs` (root only), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a `tmpfs` of `size` (`16m`) on a fresh directory.
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a tmpfs: the full-disk tests need root (in a container, CAP_SYS_ADMIN); unset TRACEGATE_REQUIRE_ROOT_TESTS to skip them: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with a file, until the kernel refuses another byte;
    /// removing the file makes the room again.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 16, 4096, 1] {
            while file.write_all(&vec![0u8; chunk]).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// `tracegate serve` recording into `db` on the disk, spilling to `spill`.
fn serve_on(disk: &SmallDisk, upstream: &str, spill: Option<&Path>) -> Serve {
    let db = disk.path().join("traces.db");
    let serve = Serve::new(disk.path())
        .upstream(upstream)
        .args(["--db"])
        .args([&db]);
    match spill {
        Some(spill) => {
            let config = store_config(
                spill.parent().unwrap(),
                &format!("spill_file = {:?}", spill.display().to_string()),
            );
            serve.args(["--config"]).args([&config])
        }
        None => serve,
    }
}

/// Waits until each of `calls` calls is either committed (before the store
/// noticed the disk was full) or kept by the degraded store; returns the
/// store's status and the number committed.
async fn until_accounted(gw: &impl Gateway, db: &Path, calls: usize) -> (Value, usize) {
    common::eventually("every call committed or kept", async || {
        let s = store(gw).await;
        let committed = common::count(db, "SELECT COUNT(*) FROM traces") as usize;
        let kept = s["backlog"]["records"].as_u64()? as usize;
        (s["status"] == "degraded" && kept + committed == calls).then_some((s, committed))
    })
    .await
}

/// Sends small calls to `gw` until its store says it is degraded, then for
/// `for_how_long`; returns their bodies.
async fn calls_while_degraded(gw: &impl Gateway, for_how_long: Duration) -> Vec<Value> {
    let mut bodies = Vec::new();
    let mut degraded_at = None;
    loop {
        let body = body(bodies.len() as u64, 300);
        send_all(gw, std::slice::from_ref(&body)).await;
        bodies.push(body);
        if degraded_at.is_none() && store(gw).await["status"] == "degraded" {
            degraded_at = Some(Instant::now());
        }
        if degraded_at.is_some_and(|at| at.elapsed() >= for_how_long) {
            return bodies;
        }
        assert!(bodies.len() < 100_000, "the store never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(root_tests),
    ignore = "mounts a tmpfs: needs root; run with TRACEGATE_REQUIRE_ROOT_TESTS=1, as CI does"
)]
async fn no_record_is_lost_while_the_disk_is_full() {
    if common::sqlite_only("no_record_is_lost_while_the_disk_is_full") {
        return;
    }
    let disk = SmallDisk::mount("16m");
    let mock = start_mock().await;
    let db = disk.path().join("traces.db");
    let gw = serve_on(&disk, &mock.base_url(), None).spawn();
    let filler = disk.fill();

    let full_for = fault_duration();
    let bodies = calls_while_degraded(&gw, full_for).await;
    let (kept, _) = until_accounted(&gw, &db, bodies.len()).await;
    assert_eq!(kept["reason"], "full", "{kept}");
    assert!(
        kept["backlog"]["in_memory"].as_u64().unwrap() > 0,
        "the spill file is on the full disk too: {kept}"
    );

    std::fs::remove_file(filler).unwrap();
    until_recovered(&gw).await;
    gw.flush().await;
    let stored = stored_contents(&db);
    let lost = contents(&bodies).difference(&stored).count();
    assert_eq!(lost, 0);
    assert_eq!(stored, contents(&bodies));
    // Once the backlog is committed the WAL is checkpointed to nothing.
    let wal = disk.path().join("traces.db-wal");
    until("the WAL to be truncated", async || {
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0)
    })
    .await;
    let (status, log) = gw.stop_with_status().await;
    assert!(status.success(), "{log}");
    assert!(!log.contains("checkpoint failed"), "{log}");
    println!(
        "records lost with the disk full for {full_for:?}: {lost} of {} calls answered",
        bodies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(root_tests),
    ignore = "mounts a tmpfs: needs root; run with TRACEGATE_REQUIRE_ROOT_TESTS=1, as CI does"
)]
async fn a_spill_file_on_another_disk_keeps_the_backlog_of_a_stop_on_a_full_disk() {
    if common::sqlite_only(
        "a_spill_file_on_another_disk_keeps_the_backlog_of_a_stop_on_a_full_disk",
    ) {
        return;
    }
    let disk = SmallDisk::mount("16m");
    let elsewhere = tempfile::tempdir().unwrap();
    let spill = elsewhere.path().join("spill.jsonl");
    let mock = start_mock().await;
    let db = disk.path().join("traces.db");
    let gw = serve_on(&disk, &mock.base_url(), Some(&spill)).spawn();
    let filler = disk.fill();
    let bodies = calls_while_degraded(&gw, Duration::ZERO).await;
    let (kept, committed) = until_accounted(&gw, &db, bodies.len()).await;
    assert_eq!(kept["backlog"]["in_memory"], 0, "{kept}");

    let (status, log) = gw.stop_with_status().await;
    assert!(status.success(), "{log}");
    assert_eq!(
        std::fs::read_to_string(&spill).unwrap().lines().count(),
        bodies.len() - committed
    );
    std::fs::remove_file(filler).unwrap();
    let gw = serve_on(&disk, &mock.base_url(), Some(&spill)).spawn();
    until_recovered(&gw).await;
    gw.flush().await;
    assert_eq!(stored_contents(&db), contents(&bodies));
    assert!(!spill.exists());
    println!(
        "stopped on a full disk, spill file elsewhere: {} records kept, 0 lost",
        bodies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(root_tests),
    ignore = "mounts a tmpfs: needs root; run with TRACEGATE_REQUIRE_ROOT_TESTS=1, as CI does"
)]
async fn a_stop_on_a_full_disk_with_nowhere_to_spill_says_what_it_lost() {
    if common::sqlite_only("a_stop_on_a_full_disk_with_nowhere_to_spill_says_what_it_lost") {
        return;
    }
    let disk = SmallDisk::mount("16m");
    let mock = start_mock().await;
    let db = disk.path().join("traces.db");
    let gw = serve_on(&disk, &mock.base_url(), None).spawn();
    let _filler = disk.fill();
    let bodies = calls_while_degraded(&gw, Duration::ZERO).await;
    let (kept, _) = until_accounted(&gw, &db, bodies.len()).await;
    let in_memory = kept["backlog"]["in_memory"].as_u64().unwrap();
    assert!(in_memory > 0, "{kept}");

    let (status, log) = gw.stop_with_status().await;
    assert_eq!(status.code(), Some(1), "{log}");
    let said = format!("{in_memory} records lost at shutdown");
    assert!(log.contains(&said), "{log}");
    println!("stopped on a full disk with the spill file on it too: {said} (the documented loss)");
}
