//! The mapping debugger page in a real browser: `iomt ui` on a free loopback port, driven by
//! `test-peers/browser/ui.test.mjs` (Debian's chromium through playwright-core).
//!
//! Without chromium or the npm packages the test fails and says how to install them, so CI
//! never passes silently without having run it; `IOMT_SKIP_BROWSER=1` skips it on purpose
//! (with a message on stderr) on machines that cannot have a browser.
//!
//! The screenshots of the main screens go to `target/tmp/screenshots/`; with
//! `IOMT_UPDATE_SCREENSHOTS=1` they replace the committed ones in `docs/screenshots/` (they hold
//! the time of the run, so rewriting them on every run would dirty the tree).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Kills `iomt ui` when the test ends, whether it passed or not.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `iomt ui` on port 0 and returns it with the page's URL, read from its stderr.
fn start_ui(key_file: &Path) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomt"))
        .args(["ui", "--listen", "127.0.0.1:0", "--api-key-file"])
        .arg(key_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iomt runs");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split_once("http://")
                .map(|(_, rest)| format!("http://{rest}"))
        })
        .expect("iomt ui prints its address");
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (server, url)
}

#[test]
fn the_page_finds_a_mapping_error_at_its_line_and_shows_the_observation_and_chart() {
    if std::env::var_os("IOMT_SKIP_BROWSER").is_some_and(|v| v == "1") {
        // Straight to stderr, past the test harness's capture, so the skip is always seen.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: IOMT_SKIP_BROWSER=1 (the browser test of the mapping debugger did not run)"
        );
        return;
    }
    let peer = repo().join("test-peers/browser");
    assert!(
        Path::new(CHROMIUM).exists(),
        "no chromium at {CHROMIUM}: install it with `apt-get install -y chromium`, or set IOMT_SKIP_BROWSER=1 to skip this test"
    );
    assert!(
        peer.join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed: run `npm ci` in test-peers/browser, or set IOMT_SKIP_BROWSER=1 to skip this test"
    );
    let dir = tempfile::tempdir().unwrap();
    let key = "browser-test-key-0123456789";
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let (_server, url) = start_ui(&key_file);

    let screenshots = if std::env::var_os("IOMT_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        repo().join("docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    };
    let output = Command::new("node")
        .arg(peer.join("ui.test.mjs"))
        .args([&url, key])
        .env("IOMT_SCREENSHOTS_DIR", &screenshots)
        .current_dir(&peer)
        .output()
        .expect("node runs: install it with `apt-get install -y nodejs`");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("ok: every step passed"),
        "{stdout}\n{stderr}"
    );
}
