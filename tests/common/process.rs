//! The real `tracegate` binary as a child process, for tests that need it.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
/// OPENAI_BASE_URL leaking in from the developer's shell).
pub fn tracegate(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("OPENAI_BASE_URL")
        .env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("TRACEGATE_") {
            cmd.env_remove(key);
        }
    }
    cmd
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

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
