//! The real `tracegate` binary as a child process, for tests that need it:
//! [`tracegate`] for a command with a clean environment ([`succeed`] and
//! [`cli_json`] to run one that must succeed), [`Serve`] for `tracegate
//! serve` on a free port ([`Mocked`] for one in front of a fresh mock
//! upstream), [`Running`] for the process it starts.

use super::http::Gateway;
use serde_json::Value;
use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;
use tracegate::mock_upstream::MockServer;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tracegate");

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `tracegate` command with a clean environment (no TRACEGATE_* or
/// OPENAI_BASE_URL / ANTHROPIC_BASE_URL leaking in from the developer's shell).
pub fn tracegate(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("TRACEGATE_") {
            cmd.env_remove(key);
        }
    }
    // A command run where a gateway recorded into PostgreSQL reads there.
    if let Some(url) = super::postgres::database_made_for(dir) {
        cmd.env("TRACEGATE_DB", url);
    }
    cmd
}

/// Runs `cmd` and returns what it wrote; fails the test with its stderr
/// if it did not succeed.
pub fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `tracegate <args> --db <db> --format json` run in `dir`, which must
/// succeed, its output parsed.
pub fn cli_json(dir: &Path, db: impl AsRef<OsStr>, args: &[&str]) -> Value {
    let out = succeed(
        tracegate(dir)
            .args(args)
            .arg("--db")
            .arg(db)
            .args(["--format", "json"]),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `tracegate serve` in `dir` with these arguments and environment,
/// and checks that it refused to start the way the CLI promises: exit
/// status 2 and a single line on stderr, which it returns.
pub fn refused_serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tracegate(dir)
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

/// `tracegate serve` in a directory, listening on a free port: add
/// arguments and environment, then [`spawn`](Serve::spawn) it.
pub struct Serve {
    cmd: Command,
    port: u16,
}

impl Serve {
    /// `tracegate serve --listen 127.0.0.1:<free port>`, run in `dir`.
    /// Under `TRACEGATE_TEST_BACKEND=postgres` its database is `dir`'s
    /// PostgreSQL one, given as `TRACEGATE_DB` (so a test's own `--db` or
    /// `TRACEGATE_DB` still wins).
    pub fn new(dir: &Path) -> Serve {
        let port = free_port();
        let mut cmd = tracegate(dir);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
        if super::postgres::backend() == super::postgres::Backend::Postgres {
            cmd.env("TRACEGATE_DB", super::postgres::database_for(dir));
        }
        Serve { cmd, port }
    }

    /// The port it will listen on (to point another gateway at it).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forwarding to `upstream` (`--upstream`).
    pub fn upstream(self, upstream: &str) -> Serve {
        self.args(["--upstream", upstream])
    }

    /// With these arguments too.
    pub fn args<I, S>(mut self, args: I) -> Serve
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// With these environment variables.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Serve {
        self.cmd.envs(vars.iter().copied());
        self
    }

    /// Starts it and waits until it listens.
    pub fn spawn(self) -> Running {
        Running::spawn(self.cmd, self.port)
    }
}

/// A fresh mock upstream and a fresh directory, the start of most tests
/// of the binary: [`Mocked::serve`] is `tracegate serve` there, forwarding
/// to the mock.
pub struct Mocked {
    /// The mock upstream.
    pub mock: MockServer,
    /// The directory the gateway runs in.
    pub dir: TempDir,
}

impl Mocked {
    /// Starts the mock ([`start_mock`](super::start_mock)) and makes the
    /// directory.
    pub async fn start() -> Mocked {
        Mocked {
            mock: super::start_mock().await,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `tracegate serve` in the directory with `--upstream` the mock: add
    /// arguments, then [`spawn`](Serve::spawn) it.
    pub fn serve(&self) -> Serve {
        Serve::new(self.dir.path()).upstream(&self.mock.base_url())
    }
}

/// A running gateway process.
pub struct Running {
    child: Child,
    /// Everything the process wrote to stderr so far. A thread drains the
    /// pipe continuously so a chatty log level can never block the child.
    stderr: Arc<Mutex<Vec<u8>>>,
    drain: Option<std::thread::JoinHandle<()>>,
    /// The port it listens on.
    pub port: u16,
}

impl Running {
    /// Spawns `cmd` and waits until `port` accepts connections.
    pub fn spawn(mut cmd: Command, port: u16) -> Running {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let mut running = Running {
            child,
            stderr,
            drain: Some(drain),
            port,
        };
        running.wait_ready();
        running
    }

    fn wait_ready(&mut self) {
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tracegate exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("tracegate did not start listening on {}", self.port);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits (off the async runtime) for the process to
    /// exit; returns everything it logged.
    pub async fn stop(self) -> String {
        self.terminate();
        tokio::task::spawn_blocking(move || self.wait_output())
            .await
            .unwrap()
    }

    /// Sends SIGTERM and waits (off the async runtime) for the process to
    /// exit; returns its exit status and everything it logged.
    pub async fn stop_with_status(self) -> (std::process::ExitStatus, String) {
        self.terminate();
        tokio::task::spawn_blocking(move || {
            let mut running = self;
            let status = running.wait_exit();
            (status, running.wait_output())
        })
        .await
        .unwrap()
    }

    /// Waits (off the async runtime) for the process to exit.
    pub async fn exited(self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || self.wait())
            .await
            .unwrap()
    }

    /// Waits for the process to exit.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.wait_exit()
    }

    /// Waits for the process to exit and returns everything it logged.
    pub fn wait_output(mut self) -> String {
        self.wait_exit();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        let bytes = self.stderr.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        panic!("tracegate did not exit");
    }
}

impl Gateway for Running {
    fn at(&self, path: &str) -> String {
        self.url(path)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
