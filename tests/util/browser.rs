//! A real browser for the tests: Debian's `chromium`, headless, driven over the DevTools
//! protocol on a pipe (`--remote-debugging-pipe`: JSON messages ended by a NUL byte, commands
//! on the browser's fd 3, replies and events on its fd 4), so no WebSocket client is needed.
//!
//! [`Browser::launch`] returns `None` after a loud skip when `chromium` cannot run
//! (`scripts/test` installs it; with `VIGILD_TESTS_NO_SKIP=1` that is a failure). The browser
//! gets its own profile in a temporary directory, no sandbox (it runs as root in CI, where
//! Chromium's sandbox refuses to start), and flags that keep it off the network: it only
//! loads what a test navigates to (loopback). Everything the page reports (console messages,
//! uncaught exceptions, log entries such as a Content-Security-Policy refusal, failed loads
//! and HTTP errors) is collected by [`Browser::problems`]. Dropping it closes the browser and
//! kills it if it does not exit.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::TempDir;

/// How long one DevTools command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Browser {
    child: Child,
    commands: File,
    messages: Receiver<Value>,
    next_id: u64,
    /// The page's DevTools session, once [`Browser::open`] attached to it.
    session: Option<String>,
    /// Events seen so far.
    events: Vec<Value>,
    _profile: TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own; we take ownership of both.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts headless chromium, or skips (`None`) when it cannot be run.
    #[track_caller]
    pub fn launch() -> Option<Browser> {
        let program = ["chromium", "chromium-browser"].into_iter().find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        let Some(program) = program else {
            super::skip(
                "chromium is not installed",
                "Debian package chromium; scripts/test installs it",
            );
            return None;
        };
        let profile = TempDir::new("chromium");
        let (cmd_read, cmd_write) = pipe();
        let (msg_read, msg_write) = pipe();
        let (a, b) = (cmd_read.as_raw_fd(), msg_write.as_raw_fd());
        let mut cmd = Command::new(program);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--disable-sync",
            "--no-pings",
            "--hide-scrollbars",
            "--window-size=1200,1900",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) on
        // descriptors that exist in the child: the pipe ends become fds 3 and 4, without
        // close-on-exec (F_DUPFD first, so an end that already is 3 or 4 is not lost).
        unsafe {
            cmd.pre_exec(move || {
                let a2 = libc::fcntl(a, libc::F_DUPFD_CLOEXEC, 10);
                let b2 = libc::fcntl(b, libc::F_DUPFD_CLOEXEC, 10);
                if a2 < 0 || b2 < 0 || libc::dup2(a2, 3) < 0 || libc::dup2(b2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                super::skip(
                    &format!("cannot start {program}: {e}"),
                    "Debian package chromium",
                );
                return None;
            }
        };
        drop(cmd_read);
        drop(msg_write);
        let (tx, messages) = mpsc::channel();
        let reader = File::from(msg_read);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                let Ok(v) = serde_json::from_slice::<Value>(&buf) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Some(Browser {
            child,
            commands: File::from(cmd_write),
            messages,
            next_id: 1,
            session: None,
            events: Vec::new(),
            _profile: profile,
        })
    }

    /// Sends one command (to the page's session when `on_page`) and waits for its result.
    pub fn call(&mut self, method: &str, params: Value, on_page: bool) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if on_page {
            msg["sessionId"] = json!(self.session.clone().expect("open a page first"));
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(v) if v["id"] == json!(id) => {
                    if let Some(e) = v.get("error") {
                        panic!("{method} failed: {e}");
                    }
                    return v["result"].clone();
                }
                Ok(v) => self.events.push(v),
                Err(RecvTimeoutError::Timeout) => panic!("{method}: no answer in {CALL_TIMEOUT:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("{method}: chromium went away"),
            }
        }
    }

    /// Takes the events that arrived since the last call.
    fn pump(&mut self) {
        while let Ok(v) = self.messages.try_recv() {
            self.events.push(v);
        }
    }

    /// Opens `url` in a new page, with every reporting domain on, and waits for its load event.
    pub fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({"url": "about:blank"}), false);
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
            false,
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        for domain in ["Runtime", "Log", "Page", "Network"] {
            self.call(&format!("{domain}.enable"), json!({}), true);
        }
        let before = self.events.len();
        let nav = self.call("Page.navigate", json!({"url": url}), true);
        assert!(nav.get("errorText").is_none(), "navigate {url}: {nav}");
        super::wait_until(Duration::from_secs(20), "the page's load event", || {
            self.pump();
            self.events[before..]
                .iter()
                .any(|e| e["method"] == "Page.loadEventFired")
        });
    }

    /// Evaluates `expression` in the page and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
            true,
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// A PNG of the page as it is now, `height` CSS pixels tall from the top.
    pub fn screenshot(&mut self, height: u32) -> Vec<u8> {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": 1200, "height": height, "scale": 1}}),
            true,
        );
        base64_decode(r["data"].as_str().expect("screenshot data"))
    }

    /// What the page reported that a clean page does not: console messages, uncaught
    /// exceptions, log entries at warning or error (Chromium 156 reports a Content-Security-Policy
    /// refusal there, source `security`: "Executing inline script violates the following
    /// Content Security Policy directive ..."), failed loads and HTTP errors.
    pub fn problems(&mut self) -> Vec<String> {
        self.pump();
        let mut out = Vec::new();
        for e in &self.events {
            let p = &e["params"];
            match e["method"].as_str().unwrap_or_default() {
                "Runtime.consoleAPICalled" => {
                    out.push(format!("console.{}: {}", p["type"], p["args"]))
                }
                "Runtime.exceptionThrown" => {
                    out.push(format!("exception: {}", p["exceptionDetails"]))
                }
                "Log.entryAdded"
                    if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) =>
                {
                    out.push(format!(
                        "log {}: {}",
                        p["entry"]["level"], p["entry"]["text"]
                    ))
                }
                "Network.loadingFailed" => out.push(format!(
                    "load failed: {} {}",
                    p["errorText"], p["blockedReason"]
                )),
                "Network.responseReceived" if p["response"]["status"].as_u64() >= Some(400) => out
                    .push(format!(
                        "HTTP {} for {}",
                        p["response"]["status"], p["response"]["url"]
                    )),
                _ => {}
            }
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let mut bytes = serde_json::to_vec(&json!({"id": 0, "method": "Browser.close"})).unwrap();
        bytes.push(0);
        let _ = self.commands.write_all(&bytes);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (with padding), as DevTools sends binary data.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter_map(value) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
