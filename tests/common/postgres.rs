//! The PostgreSQL a test records into, and which backend the store-facing
//! tests run on.
//!
//! **Which backend.** `TRACEGATE_TEST_BACKEND=postgres` makes the shared
//! gateway fixtures ([`Setup`](super::Setup), [`Serve`](super::process::Serve))
//! record into PostgreSQL instead of a SQLite file, so one set of test files
//! runs on both ([`backend`]; the default is `sqlite`).
//! `tests/postgres.rs` re-runs the store-facing test binaries with it
//! set. A test that opens the SQLite file itself starts with
//! [`sqlite_only`], which skips it under PostgreSQL, counted and printed.
//!
//! **Which server.** `TRACEGATE_TEST_POSTGRES` (a superuser URL, such as
//! `postgresql://tg:tg@127.0.0.1:5432/postgres`) names a running server;
//! without it the first test that needs one starts a private cluster for
//! the whole test process (`initdb` + `pg_ctl` from Debian's
//! `/usr/lib/postgresql/<version>/bin`, on a free 127.0.0.1 port in a temporary
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

/// Where Debian's `postgresql` package puts each version's programs.
const PG_LIB: &str = "/usr/lib/postgresql";

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
             no server: set TRACEGATE_TEST_POSTGRES or install postgresql ({PG_LIB})"
        );
        println!("no PostgreSQL (TRACEGATE_TEST_POSTGRES unset, nothing in {PG_LIB}): skipped");
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

/// A private PostgreSQL cluster this process started: in a temporary
/// directory, on a free 127.0.0.1 port, with the superuser `tg`/`tg`;
/// stopped and removed when the test process ends (a watchdog), or
/// stopped and started again by a test ([`Cluster::stop`], [`Cluster::start`]).
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    root: bool,
    bin: PathBuf,
}

impl Cluster {
    /// Makes and starts a cluster, or `None` when PostgreSQL is not installed.
    pub fn create() -> Option<Cluster> {
        let bin = pg_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("tracegate-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let cluster = Cluster {
            port: super::process::free_port(),
            root: is_root(),
            dir,
            bin,
        };
        let pwfile = cluster.dir.join("pw");
        std::fs::write(&pwfile, "tg\n").unwrap();
        if cluster.root {
            run_ok(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&cluster.dir),
            );
        }
        let initdb = format!(
            "{}/initdb -D {}/data -U tg --pwfile={} -A scram-sha-256 --no-sync -E UTF8 --locale=C.UTF-8",
            cluster.bin.display(),
            cluster.dir.display(),
            pwfile.display()
        );
        run_ok(&mut as_postgres(cluster.root, &initdb));
        cluster.start();
        cluster.watch();
        Some(cluster)
    }

    /// Starts the server (waiting until it accepts connections).
    pub fn start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let start = format!(
            "{}/pg_ctl -D {}/data -l {}/log -o '{options}' -w start",
            self.bin.display(),
            self.dir.display(),
            self.dir.display()
        );
        run_ok(&mut as_postgres(self.root, &start));
    }

    /// Stops the server at once (`-m immediate`: connections are cut).
    pub fn stop(&self) {
        run_ok(&mut as_postgres(self.root, &self.stop_command()));
    }

    fn stop_command(&self) -> String {
        format!(
            "{}/pg_ctl -D {}/data -m immediate -w stop",
            self.bin.display(),
            self.dir.display()
        )
    }

    /// A superuser URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgresql://tg:tg@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops and removes the cluster when this process ends.
    fn watch(&self) {
        watchdog(&format!(
            "{}; rm -rf {}",
            self.as_shell(&self.stop_command()),
            self.dir.display()
        ));
    }

    /// `script` as the watchdog's shell runs it (as `postgres` under root).
    fn as_shell(&self, script: &str) -> String {
        if self.root {
            format!("runuser -u postgres -- sh -c '{script}'")
        } else {
            script.to_string()
        }
    }
}

/// Where the installed PostgreSQL's programs are: the newest
/// `/usr/lib/postgresql/<version>/bin` with an `initdb` (Debian's layout).
fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_LIB)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A private cluster for the whole test process, as a [`Server`].
fn private_cluster() -> Option<Server> {
    let cluster = Cluster::create()?;
    Some(Server {
        base: format!("postgresql://tg:tg@127.0.0.1:{}", cluster.port),
        admin: "postgres".into(),
        cluster: Some(cluster.dir.clone()),
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
