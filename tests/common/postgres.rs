//! The PostgreSQL a test records into, and which backend the store-facing
//! tests run on.
//!
//! **Which backend.** `TRACEGATE_TEST_BACKEND=postgres` makes the shared
//! gateway fixtures ([`Setup`](super::Setup), [`Serve`](super::process::Serve))
//! record into PostgreSQL instead of a SQLite file, so one set of test files
//! runs on both ([`backend`]; the default is `sqlite`).
//! `tests/postgres_backend.rs` re-runs the store-facing test binaries with it
//! set. A test that opens the SQLite file itself starts with
//! [`sqlite_only`], which skips it under PostgreSQL, counted and printed.
//!
//! **Which server.** `TRACEGATE_TEST_POSTGRES` (a superuser URL, such as
//! `postgresql://tg:tg@127.0.0.1:5432/postgres`) names a running server;
//! without it the first test that needs one starts a private cluster for
//! the whole test process (`initdb` + `pg_ctl` from Debian's
//! `/usr/lib/postgresql/15/bin`, on a free 127.0.0.1 port in a temporary
//! directory; as root they run as the `postgres` user, since `initdb`
//! refuses root). Each gateway directory gets a fresh database,
//! `tg_t_<uuid>`. A watchdog process, started with the first database,
//! waits for the test process to end (however it ends: a panic, SIGKILL)
//! and then drops the databases it made, or stops and removes the private
//! cluster. With `TRACEGATE_REQUIRE_POSTGRES_TESTS=1` (CI) a missing
//! PostgreSQL fails the test instead of skipping it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Where Debian's `postgresql` package puts the server programs.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The backend the store-facing fixtures record into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's directory (the default).
    Sqlite,
    /// A fresh database on the test PostgreSQL server.
    Postgres,
}

/// The backend `TRACEGATE_TEST_BACKEND` chose (`sqlite` when unset).
pub fn backend() -> Backend {
    match std::env::var("TRACEGATE_TEST_BACKEND").as_deref() {
        Ok("postgres") | Ok("postgresql") => Backend::Postgres,
        Ok("sqlite") | Ok("") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("TRACEGATE_TEST_BACKEND={other}: expected postgres or sqlite"),
    }
}

/// How many tests of this process [`sqlite_only`] skipped.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// For a test that reads or writes the SQLite file itself: true (skip the
/// test: `if common::sqlite_only("name") { return; }`) when the fixtures
/// record into PostgreSQL, with a line saying so and how many were skipped.
pub fn sqlite_only(test: &str) -> bool {
    if backend() == Backend::Sqlite {
        return false;
    }
    let n = SKIPPED.fetch_add(1, Ordering::SeqCst) + 1;
    println!("sqlite-only test skipped on postgres ({n} in this binary so far): {test}");
    true
}

/// A PostgreSQL server the tests may create databases on.
pub struct Server {
    /// A superuser URL without the database (`postgresql://u:p@host:port`).
    base: String,
    /// The database connected to for `CREATE DATABASE` and `DROP DATABASE`.
    admin: String,
    /// The private cluster's directory, when this process started one.
    cluster: Option<PathBuf>,
    /// The watchdog's list of databases to drop (external servers).
    made: Mutex<Option<std::fs::File>>,
}

impl Server {
    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// A client connected to database `name` (`postgres` for the admin one).
    pub fn client(&self, name: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(name), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url(name)))
    }

    /// A new empty database (`tg_t_<uuid>`), dropped when the test process
    /// ends: its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("tg_t_{}", uuid::Uuid::new_v4().simple());
        off_runtime(|| {
            self.client(&self.admin)
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap()
        });
        if self.cluster.is_none() {
            let mut made = self.made.lock().unwrap();
            let list = made.get_or_insert_with(|| watch_databases(self));
            writeln!(list, "{name}").unwrap();
        }
        self.url(&name)
    }
}

/// The test PostgreSQL server, started on first use; `None` when there is
/// none (no `TRACEGATE_TEST_POSTGRES` and no PostgreSQL installed), which
/// fails instead under `TRACEGATE_REQUIRE_POSTGRES_TESTS=1`.
pub fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    let server = SERVER.get_or_init(|| match std::env::var("TRACEGATE_TEST_POSTGRES") {
        Ok(url) => Some(external(&url)),
        Err(_) => private_cluster(),
    });
    if server.is_none() {
        assert!(
            std::env::var("TRACEGATE_REQUIRE_POSTGRES_TESTS").as_deref() != Ok("1"),
            "PostgreSQL tests are required (TRACEGATE_REQUIRE_POSTGRES_TESTS=1) but there is \
             no server: set TRACEGATE_TEST_POSTGRES or install postgresql ({PG_BIN})"
        );
        println!("no PostgreSQL (TRACEGATE_TEST_POSTGRES unset, no {PG_BIN}): skipped");
    }
    server.as_ref()
}

/// A fresh database's URL on the test server (see [`server`]).
pub fn fresh_database() -> Option<String> {
    server().map(Server::fresh_database)
}

/// The database of the gateway directory `dir` under the PostgreSQL
/// backend: made on first use, the same for every gateway started in
/// `dir` (a restart finds what the last one wrote).
pub fn database_for(dir: &Path) -> String {
    databases()
        .entry(dir.to_path_buf())
        .or_insert_with(|| {
            fresh_database().expect("TRACEGATE_TEST_BACKEND=postgres needs a server")
        })
        .clone()
}

/// The database [`database_for`] made for `dir`, if it made one.
pub fn database_made_for(dir: &Path) -> Option<String> {
    databases().get(dir).cloned()
}

/// The PostgreSQL database the fixtures recorded into instead of the
/// SQLite file `db`: under the PostgreSQL backend, when `db` does not exist
/// (a test that named its own file with `--db` finds it as usual).
pub fn database_instead_of(db: &Path) -> Option<String> {
    if backend() == Backend::Sqlite || db.exists() {
        return None;
    }
    db.parent().map(database_for)
}

/// The databases made for gateway directories, by directory.
fn databases() -> std::sync::MutexGuard<'static, HashMap<PathBuf, String>> {
    static DATABASES: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    DATABASES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The server `url` names (its path is the admin database, `postgres` if none).
fn external(url: &str) -> Server {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, admin) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let admin = admin.split('?').next().unwrap_or("postgres");
    Server {
        base: format!("postgresql://{authority}"),
        admin: if admin.is_empty() { "postgres" } else { admin }.to_string(),
        cluster: None,
        made: Mutex::new(None),
    }
}

/// Starts a private cluster in a temporary directory on a free port, or
/// `None` when PostgreSQL is not installed.
fn private_cluster() -> Option<Server> {
    if !Path::new(PG_BIN).join("initdb").exists() {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("tracegate-pg-")
        .tempdir()
        .unwrap()
        .keep();
    let data = dir.join("data");
    let port = super::process::free_port();
    let root = is_root();
    if root {
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir),
        );
    }
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, "tg\n").unwrap();
    if root {
        run_ok(
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pwfile),
        );
    }
    let initdb = format!(
        "{PG_BIN}/initdb -D {} -U tg --pwfile={} -A scram-sha-256 --no-sync -E UTF8 --locale=C.UTF-8",
        data.display(),
        pwfile.display()
    );
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
        dir.display()
    );
    let start = format!(
        "{PG_BIN}/pg_ctl -D {} -l {} -o '{options}' -w start",
        data.display(),
        dir.join("log").display()
    );
    run_ok(&mut as_postgres(root, &initdb));
    run_ok(&mut as_postgres(root, &start));
    watch_cluster(root, &dir);
    Some(Server {
        base: format!("postgresql://tg:tg@127.0.0.1:{port}"),
        admin: "postgres".into(),
        cluster: Some(dir),
        made: Mutex::new(None),
    })
}

/// Whether this process runs as root (where `initdb` must run as `postgres`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// A shell command run as the `postgres` user when we are root.
fn as_postgres(root: bool, script: &str) -> Command {
    let mut cmd = if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", "sh", "-c", script]);
        cmd
    } else {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    };
    cmd.stdin(Stdio::null());
    cmd
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a detached shell that waits for this process to end, then runs
/// `cleanup`.
fn watchdog(cleanup: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {cleanup}",
        pid = std::process::id()
    );
    // `--fork`: setsid returns at once, the watchdog lives on in its own
    // session (a test's process group being killed does not take it).
    Command::new("setsid")
        .args(["--fork", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
}

/// Stops and removes the private cluster in `dir` when this process ends.
fn watch_cluster(root: bool, dir: &Path) {
    let stop = format!(
        "{PG_BIN}/pg_ctl -D {}/data -m immediate stop",
        dir.display()
    );
    let stop = if root {
        format!("runuser -u postgres -- sh -c '{stop}'")
    } else {
        stop
    };
    watchdog(&format!("{stop}; rm -rf {}", dir.display()));
}

/// Drops every database listed in the returned file when this process
/// ends (with `psql` against the external server).
fn watch_databases(server: &Server) -> std::fs::File {
    let list = tempfile::Builder::new()
        .prefix("tracegate-pg-dbs-")
        .tempfile()
        .unwrap()
        .keep()
        .unwrap()
        .1;
    let admin = server.url(&server.admin);
    watchdog(&format!(
        "while read -r db; do psql '{admin}' -qc \"DROP DATABASE IF EXISTS $db WITH (FORCE)\"; done < {list}; rm -f {list}",
        list = list.display()
    ));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&list)
        .unwrap()
}

/// Every record in the PostgreSQL database `url`, oldest first, as
/// `tracegate export` gives them (the same records the API answers).
pub fn records_in(url: &str) -> Vec<tracegate::record::TraceRecord> {
    let dir = tempfile::tempdir().unwrap();
    let out = super::process::succeed(
        super::process::tracegate(dir.path()).args(["export", "--db", url, "--out", "-"]),
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The single number `sql` selects from the PostgreSQL database `url`
/// (`COUNT` and `SUM` come back as `bigint` or `numeric`: both read as i64).
pub fn count(url: &str, sql: &str) -> i64 {
    off_runtime(|| {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        let row = client
            .query_one(&format!("SELECT ({sql})::bigint"), &[])
            .unwrap();
        row.get::<_, Option<i64>>(0).unwrap_or(0)
    })
}

/// Runs `work` on a thread of its own: the blocking `postgres` client runs
/// a runtime of its own, which must not start inside a test's.
pub fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(work).join().unwrap())
}
