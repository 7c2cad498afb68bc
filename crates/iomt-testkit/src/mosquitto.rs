//! A real MQTT broker for tests: Debian's `mosquitto`, started as a child process on a free
//! 127.0.0.1 port with a generated configuration, and killed when the [`Mosquitto`] is dropped.
//!
//! # Why the real broker
//! The MQTT source's guarantees (a QoS 1 message is acknowledged only once durable, the broker
//! keeps a persistent session's messages while the connector is down, a wrong password is
//! refused) are promises about a conversation with a broker. An in-process fake would answer
//! what its author expects; mosquitto answers what brokers do.
//!
//! # What must hold
//! * The listener is bound to 127.0.0.1 only; nothing is reachable from outside the machine.
//! * Everything the broker writes (configuration, password file, certificates, log) lives in a
//!   temporary folder removed on drop.
//! * A missing `mosquitto` fails with how to install it; only [`SKIP_MQTT_ENV`]
//!   (`IOMT_SKIP_MQTT=1`) makes [`Mosquitto::start_unless_skipped`] return `None`, and it says so
//!   on stderr.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to skip the tests that need mosquitto (they then print why and pass).
pub const SKIP_MQTT_ENV: &str = "IOMT_SKIP_MQTT";

/// How to install the broker, for messages.
const INSTALL_HINT: &str = "install it with `apt-get install -y mosquitto mosquitto-clients` \
     (or set IOMT_SKIP_MQTT=1 to skip the tests that need it)";

/// Why the broker could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MosquittoError {
    /// A program (`mosquitto`, `mosquitto_passwd`) is not installed.
    #[error("cannot run {program}: {source}; {INSTALL_HINT}")]
    NotInstalled {
        /// The program.
        program: String,
        /// The spawn error.
        source: io::Error,
    },
    /// A file the broker needs could not be written, or no port could be found.
    #[error("cannot prepare the broker's files in {path}: {source}")]
    Prepare {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// `mosquitto_passwd` failed.
    #[error("mosquitto_passwd failed ({status}): {output}")]
    Passwd {
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The broker exited, or did not listen in time.
    #[error("mosquitto did not start ({reason}); its log:\n{log}")]
    NotReady {
        /// What happened.
        reason: String,
        /// The broker's log.
        log: String,
    },
}

/// TLS for the broker's listener: PEM text of the CA and the server certificate and key.
#[derive(Debug, Clone)]
pub struct MosquittoTls {
    /// The CA that signed the server certificate (and, if required, client certificates).
    pub ca_pem: String,
    /// The server certificate (its names must include 127.0.0.1).
    pub cert_pem: String,
    /// The server certificate's private key.
    pub key_pem: String,
    /// Require a client certificate signed by the CA.
    pub require_client_cert: bool,
}

/// What the broker is started with.
#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions {
    users: Vec<(String, String)>,
    tls: Option<MosquittoTls>,
    max_queued_messages: Option<u32>,
}

impl MosquittoOptions {
    /// Requires a user name and password (a password file with this user; anonymous clients
    /// are refused). Call again for more users.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Serves MQTT over TLS only.
    pub fn tls(mut self, tls: MosquittoTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How many QoS 1 messages the broker keeps per offline persistent session (mosquitto's
    /// default is 1000).
    pub fn max_queued_messages(mut self, count: u32) -> Self {
        self.max_queued_messages = Some(count);
        self
    }
}

/// A running mosquitto; killed on drop.
pub struct Mosquitto {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    tls: bool,
}

impl Mosquitto {
    /// Starts mosquitto on a free 127.0.0.1 port and waits until it accepts connections.
    ///
    /// # Errors
    /// [`MosquittoError`] saying what to install or what the broker logged.
    pub fn start(options: MosquittoOptions) -> Result<Mosquitto, MosquittoError> {
        let dir = tempfile::Builder::new()
            .prefix("iomt-mosquitto-")
            .tempdir()
            .map_err(|source| MosquittoError::Prepare {
                path: std::env::temp_dir(),
                source,
            })?;
        let port = free_port().map_err(|source| MosquittoError::Prepare {
            path: dir.path().to_owned(),
            source,
        })?;
        let write = |name: &str, text: &str| -> Result<PathBuf, MosquittoError> {
            let path = dir.path().join(name);
            std::fs::write(&path, text).map_err(|source| MosquittoError::Prepare {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        };
        let mut conf = String::new();
        // Run as the invoking user even as root (mosquitto would otherwise switch to the
        // `mosquitto` user, which cannot read the private temporary folder).
        let user = if is_root() { "root" } else { "" };
        if !user.is_empty() {
            let _ = writeln!(conf, "user {user}");
        }
        let _ = writeln!(conf, "persistence false");
        let _ = writeln!(conf, "log_dest stderr");
        let _ = writeln!(conf, "log_type error");
        let _ = writeln!(conf, "log_type warning");
        let _ = writeln!(conf, "log_type notice");
        let _ = writeln!(conf, "log_type information");
        let _ = writeln!(conf, "connection_messages true");
        if let Some(count) = options.max_queued_messages {
            let _ = writeln!(conf, "max_queued_messages {count}");
        }
        let _ = writeln!(conf, "listener {port} 127.0.0.1");
        if options.users.is_empty() {
            let _ = writeln!(conf, "allow_anonymous true");
        } else {
            let passwords = write("passwords", "")?;
            for (name, password) in &options.users {
                passwd(&passwords, name, password)?;
            }
            let _ = writeln!(conf, "allow_anonymous false");
            let _ = writeln!(conf, "password_file {}", passwords.display());
        }
        if let Some(tls) = &options.tls {
            let ca = write("ca.pem", &tls.ca_pem)?;
            let cert = write("server.pem", &tls.cert_pem)?;
            let key = write("server-key.pem", &tls.key_pem)?;
            let _ = writeln!(conf, "cafile {}", ca.display());
            let _ = writeln!(conf, "certfile {}", cert.display());
            let _ = writeln!(conf, "keyfile {}", key.display());
            if tls.require_client_cert {
                let _ = writeln!(conf, "require_certificate true");
            }
        }
        write("mosquitto.conf", &conf)?;
        let mut broker = Mosquitto {
            child: None,
            dir,
            port,
            tls: options.tls.is_some(),
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// Starts the broker, or returns `None` (saying so on stderr) when [`SKIP_MQTT_ENV`] is set.
    ///
    /// # Panics
    /// When the broker cannot start and skipping was not asked for: the message says what to
    /// install.
    pub fn start_unless_skipped(options: MosquittoOptions) -> Option<Mosquitto> {
        if Mosquitto::skip_requested() {
            eprintln!("{SKIP_MQTT_ENV}=1: skipping a test that needs mosquitto");
            return None;
        }
        match Mosquitto::start(options) {
            Ok(broker) => Some(broker),
            Err(e) => panic!("{e}"),
        }
    }

    /// Whether [`SKIP_MQTT_ENV`] asks to skip.
    pub fn skip_requested() -> bool {
        std::env::var(SKIP_MQTT_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// `mqtt://127.0.0.1:<port>` or `mqtts://…` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// What the broker has logged so far (connections, refusals, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker (sessions are not persisted, so they are lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts the broker again on the same port with the same configuration.
    ///
    /// # Errors
    /// As [`Mosquitto::start`].
    pub fn restart(&mut self) -> Result<(), MosquittoError> {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> Result<(), MosquittoError> {
        let log_path = self.dir.path().join("mosquitto.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| MosquittoError::Prepare {
                path: log_path.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| MosquittoError::Prepare {
            path: log_path.clone(),
            source,
        })?;
        let conf = self.dir.path().join("mosquitto.conf");
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| MosquittoError::NotInstalled {
                program: "mosquitto".into(),
                source,
            })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(MosquittoError::NotReady {
                    reason: format!("it exited: {status}"),
                    log: self.log(),
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(MosquittoError::NotReady {
                    reason: format!("nothing listened on {addr} within 10 s"),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

fn is_root() -> bool {
    // `id -u` rather than libc: this crate has no unsafe code and no libc dependency.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn passwd(file: &Path, name: &str, password: &str) -> Result<(), MosquittoError> {
    let output = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(file)
        .arg(name)
        .arg(password)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| MosquittoError::NotInstalled {
            program: "mosquitto_passwd".into(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(MosquittoError::Passwd {
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_listens_on_loopback_and_stops_on_drop() {
        let Some(broker) = Mosquitto::start_unless_skipped(MosquittoOptions::default()) else {
            return;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], broker.port()));
        assert!(TcpStream::connect(addr).is_ok());
        assert!(broker.url().starts_with("mqtt://127.0.0.1:"));
        drop(broker);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            TcpStream::connect(addr).is_err(),
            "the broker still listens after drop"
        );
    }

    #[test]
    fn password_file_variant_starts() {
        let Some(broker) =
            Mosquitto::start_unless_skipped(MosquittoOptions::default().user("device", "s3cret"))
        else {
            return;
        };
        let passwords = std::fs::read_to_string(broker.dir.path().join("passwords")).unwrap();
        assert!(passwords.starts_with("device:"), "{passwords}");
        assert!(!passwords.contains("s3cret"), "the password must be hashed");
    }
}
