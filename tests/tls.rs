//! TLS on the client listener (issue 15) with real clients and certificates the test makes
//! (`util/certs.rs`, rcgen): `redis-cli --tls`, redis-py with `ssl=True` (RESP2 and RESP3), and
//! a rustls client (`util/tls_client.rs`). Versions 1.2 and 1.3, resumption, every refused
//! handshake counted by its cause with its reap line, the handshake bound, `close_notify`,
//! start-up refusing bad files by name, identities bound to names (spoofing refused, a stale
//! holder replaced by the same identity only, plain clients without names), identity in CLIENT
//! LIST / INFO / presence, and certificate rotation under 100 live sessions.
//!
//! The `redis` crate connects over TLS too: its `tls-rustls` feature builds with ring alone (it
//! uses the rustls of the daemon, whose only compiled-in provider is ring; `cargo tree -i
//! aws-lc-rs` finds nothing). The rustls client is for what a stock client does not show: the
//! served certificate, the version, whether the handshake resumed, a wrong key, cut records.

mod util;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::certs::{Ca, Leaf, Setup, Validity};
use util::tls_client::{self, tls_addr, Reply, TlsClient, Versions};
use util::{fields, info, Daemon, TempDir};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A daemon with a TLS listener, and the certificates it serves.
struct Tls {
    d: Daemon,
    addr: SocketAddr,
    setup: Setup,
    dir: TempDir,
}

impl Tls {
    /// Starts vigild with `[tls]` over fresh certificates; `tls_extra` goes into `[tls]`,
    /// `extra` after it (other tables).
    fn start(tls_extra: &str, extra: &str) -> Tls {
        let dir = TempDir::new("tls");
        let setup = Setup::new(dir.path());
        let config = format!("{}{extra}", setup.table(tls_extra));
        let d = Daemon::start(&config);
        let addr = tls_addr(&d);
        Tls {
            d,
            addr,
            setup,
            dir,
        }
    }

    fn ca(&self) -> String {
        self.setup.ca.pem()
    }

    /// A client config with a certificate issued for `leaf` by the test CA.
    fn config_for(&self, leaf: &Leaf, versions: Versions) -> std::sync::Arc<rustls::ClientConfig> {
        let c = self.setup.ca.issue(leaf);
        tls_client::config(&self.ca(), Some((&c.cert_pem(), &c.key_pem())), versions)
    }

    fn anonymous(&self) -> std::sync::Arc<rustls::ClientConfig> {
        tls_client::config(&self.ca(), None, Versions::Both)
    }

    fn connect(&self, config: &std::sync::Arc<rustls::ClientConfig>) -> TlsClient {
        TlsClient::connect(self.addr, config).expect("TLS connect")
    }

    fn admin(&self) -> redis::Connection {
        self.d.admin()
    }

    /// The reap line of the session from `peer`, raw (its `tls_error` is quoted, with spaces).
    fn reap_line(&self, peer: SocketAddr) -> String {
        let needle = format!(" peer={peer} ");
        self.d
            .log
            .wait_for(TIMEOUT, |l| l.contains(" reap ") && l.contains(&needle))
            .unwrap_or_else(|| panic!("{peer} not reaped; log:\n{}", self.d.log.text()))
    }

    fn tls_info(&self) -> HashMap<String, String> {
        info(&mut self.admin(), "tls")
    }
}

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn client_list(con: &mut redis::Connection) -> String {
    redis::cmd("CLIENT")
        .arg("LIST")
        .query(con)
        .expect("CLIENT LIST")
}

/// The CLIENT LIST line of the session from `peer`.
fn list_line(con: &mut redis::Connection, peer: SocketAddr) -> String {
    let needle = format!(" addr={peer} ");
    client_list(con)
        .lines()
        .find(|l| format!(" {l} ").contains(&needle))
        .unwrap_or_else(|| panic!("no CLIENT LIST line for {peer}:\n{}", client_list(con)))
        .to_string()
}

fn redis_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli (scripts/test installs redis-tools)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `redis-cli --tls --cacert`, anonymous and with a client certificate (client_auth =
/// "optional"); a plaintext redis-cli on the TLS port is told so and counted.
#[test]
fn redis_cli_over_tls_with_and_without_a_client_certificate() {
    let t = Tls::start("client_auth = \"optional\"", ADMIN);
    let port = t.addr.port().to_string();
    let ca = t.setup.ca_file.display().to_string();
    let base = ["--tls", "--cacert", &ca, "-h", "127.0.0.1", "-p", &port];
    let (ok, out) = redis_cli(&[&base[..], &["PING"]].concat());
    assert!(ok && out.trim() == "PONG", "redis-cli --tls PING: {out}");
    let (ok, out) = redis_cli(&[&base[..], &["CLIENT", "INFO"]].concat());
    assert!(ok, "{out}");
    let f = fields(&out);
    assert!(f["tls"].starts_with("1."), "{out}");
    assert_eq!(f["identity"], "", "no certificate, no identity: {out}");

    let (crt, key) = t
        .setup
        .client(t.dir.path(), "dev-1", &Leaf::client("dev-1"));
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let with_cert = [&base[..], &["--cert", &crt, "--key", &key]].concat();
    let (ok, out) = redis_cli(&[&with_cert[..], &["CLIENT", "INFO"]].concat());
    assert!(ok, "{out}");
    let f = fields(&out);
    assert_eq!(f["identity"], "dev-1", "{out}");
    assert_eq!(f["name"], "dev-1", "the identity is the name: {out}");
    let (_, out) = redis_cli(&[&with_cert[..], &["CLIENT", "SETNAME", "dev-2"]].concat());
    assert!(out.contains("identity"), "spoofing refused: {out}");

    // Plaintext on the TLS port: the refusal in the clear, counted, reaped with its cause.
    let (_, out) = redis_cli(&["-h", "127.0.0.1", "-p", &port, "PING"]);
    assert!(out.contains("this port speaks TLS"), "{out}");
    let line =
        t.d.log
            .wait_for(TIMEOUT, |l| {
                l.contains(" reap ") && l.contains("tls_cause=plaintext")
            })
            .unwrap_or_else(|| panic!("no plaintext reap:\n{}", t.d.log.text()));
    assert_eq!(fields(&line)["reason"], "tls-handshake", "{line}");
    let i = t.tls_info();
    assert_eq!(i["tls_failures_plaintext"], "1", "{i:?}");
    assert_eq!(i["tls_handshakes_full"], "4", "{i:?}");
}

/// The `redis` crate with `rediss://`, RESP2 and RESP3, with `dev-1`'s certificate and without.
#[test]
fn the_redis_crate_over_tls() {
    let t = Tls::start("client_auth = \"optional\"", "");
    let dev = t.setup.ca.issue(&Leaf::client("dev-1"));
    for (query, cert) in [("", false), ("", true), ("?protocol=resp3", true)] {
        let url = format!("rediss://127.0.0.1:{}/{query}", t.addr.port());
        let client_tls = cert.then(|| redis::ClientTlsConfig {
            client_cert: dev.cert_pem().into_bytes(),
            client_key: dev.key_pem().into_bytes(),
        });
        let client = redis::Client::build_with_tls(
            url.as_str(),
            redis::TlsCertificates {
                client_tls,
                root_cert: Some(t.ca().into_bytes()),
            },
        )
        .unwrap();
        let mut con = client
            .get_connection_with_timeout(TIMEOUT)
            .unwrap_or_else(|e| panic!("{url} (cert {cert}): {e}"));
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
        assert_eq!(name.as_deref(), cert.then_some("dev-1"), "{url}");
        if cert {
            let r: redis::RedisResult<String> = redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg("dev-2")
                .query(&mut con);
            assert!(r.is_err(), "{url}: spoofed");
        }
        let echo: Vec<u8> = redis::cmd("ECHO")
            .arg(vec![7u8; 50_000])
            .query(&mut con)
            .unwrap_or_else(|e| panic!("{url}: ECHO 50 KB: {e}\n{}", t.d.log.text()));
        assert_eq!(
            echo,
            vec![7u8; 50_000],
            "{url}: a 50 KB request and reply, several records each"
        );
    }
}

fn python() -> Option<String> {
    util::installed("VIGILD_TEST_PYTHON", "redis-py")
}

const PY: &str = r#"
import ssl, sys
import redis

port, ca, crt, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
for proto in (2, 3):
    anon = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca,
                       protocol=proto, decode_responses=True, socket_timeout=5)
    assert anon.ping() is True
    assert anon.echo("hé") == "hé"
    assert anon.client_getname() is None
    info = anon.client_info()
    print("anon", proto, info["tls"], repr(info.get("identity")))
    dev = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca,
                      ssl_certfile=crt, ssl_keyfile=key, protocol=proto,
                      decode_responses=True, socket_timeout=5)
    assert dev.ping() is True
    assert dev.client_getname() == "dev-1", dev.client_getname()
    try:
        dev.client_setname("dev-2")
        print("spoofed", proto)
    except redis.ResponseError as e:
        print("refused", proto, "identity" in str(e))
    assert dev.client_getname() == "dev-1"
    print("ok", proto)
    anon.close()
    dev.close()
"#;

/// redis-py with `ssl=True`, RESP2 and RESP3, anonymous and with `dev-1`'s certificate.
#[test]
fn redis_py_over_tls_in_both_protocols() {
    let Some(python) = python() else { return };
    let t = Tls::start("client_auth = \"optional\"", "");
    let (crt, key) = t
        .setup
        .client(t.dir.path(), "dev-1", &Leaf::client("dev-1"));
    let out = Command::new(python)
        .args(["-c", PY, &t.addr.port().to_string()])
        .arg(&t.setup.ca_file)
        .args([&crt, &key])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    for proto in [2, 3] {
        assert!(stdout.contains(&format!("ok {proto}")), "{stdout}");
        assert!(
            stdout.contains(&format!("refused {proto} True")),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("anon {proto} 1.3")), "{stdout}");
    }
}

/// TLS 1.2 and 1.3 with `min_version = "1.2"`, resumption of both counted, and a 1.2-only
/// client refused (`incompatible`) with `min_version = "1.3"`.
#[test]
fn versions_and_resumption() {
    let t = Tls::start("", ADMIN);
    let mut admin = t.admin();
    for (versions, name) in [(Versions::Only12, "1.2"), (Versions::Only13, "1.3")] {
        let config = tls_client::config(&t.ca(), None, versions);
        let mut first = t.connect(&config);
        first.ping().unwrap();
        assert!(!first.resumed());
        assert!(list_line(&mut admin, first.local).contains(&format!(" tls={name} ")));
        drop(first);
        // The same config holds the session (1.2: its id; 1.3: the ticket read with the PONG).
        let mut again = t.connect(&config);
        again.ping().unwrap();
        assert!(again.resumed(), "TLS {name} did not resume");
        assert!(list_line(&mut admin, again.local).contains(&format!(" tls={name} ")));
    }
    let i = t.tls_info();
    assert_eq!(i["tls_handshakes_full"], "2", "{i:?}");
    assert_eq!(i["tls_handshakes_resumed"], "2", "{i:?}");
    assert_eq!(i["tls_handshake_failures"], "0", "{i:?}");

    let t = Tls::start("min_version = \"1.3\"", ADMIN);
    let old = tls_client::config(&t.ca(), None, Versions::Only12);
    let refused = TcpStream::connect(t.addr).unwrap();
    let peer = refused.local_addr().unwrap();
    assert!(
        TlsClient::over(refused, &old).is_err(),
        "a 1.2 client was served"
    );
    let line = t.reap_line(peer);
    assert!(line.contains(" reason=tls-handshake "), "{line}");
    assert!(line.contains(" tls_cause=incompatible "), "{line}");
    assert_eq!(t.tls_info()["tls_failures_incompatible"], "1");
    let mut ok = t.connect(&t.anonymous());
    ok.ping().unwrap();
}

/// Sends `req` over a TLS 1.3 client with `config` and expects the daemon to refuse it in the
/// handshake: no reply, and a `tls-handshake` reap with `cause`.
fn expect_refused(t: &Tls, config: &std::sync::Arc<rustls::ClientConfig>, cause: &str) -> String {
    let stream = TcpStream::connect(t.addr).unwrap();
    let peer = stream.local_addr().unwrap();
    // TLS 1.3: the client's side of the handshake ends before the server checks its
    // certificate; the refusal arrives as an alert on the first read.
    let told = match TlsClient::over(stream, config) {
        Ok(mut c) => match c.cmd(&["PING"]) {
            Ok(reply) => panic!("{cause}: answered {reply:?}"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    // The daemon tells the client why, with an alert (not just a closed connection).
    if cause != "no-identity" {
        assert!(told.contains("alert"), "{cause}: the client saw {told:?}");
    }
    let line = t.reap_line(peer);
    assert!(line.contains(" reason=tls-handshake "), "{cause}: {line}");
    assert!(
        line.contains(&format!(" tls_cause={cause} ")),
        "{cause}: {line}"
    );
    assert!(line.contains(" tls_error=\""), "{cause}: {line}");
    line
}

/// With `client_auth = "required"`: expired, not yet valid, another CA's, a certificate with
/// the wrong key, none at all, one without the identity field, plaintext, garbage in a TLS
/// record: each refused, reaped `tls-handshake` with its cause, and counted.
#[test]
fn refused_handshakes_are_counted_by_cause() {
    let t = Tls::start("client_auth = \"required\"\nidentity = \"cn\"", ADMIN);
    let ca = t.ca();
    let expired = t.config_for(
        &Leaf::client("dev-1").validity(Validity::Expired),
        Versions::Both,
    );
    expect_refused(&t, &expired, "bad-certificate");
    let early = t.config_for(
        &Leaf::client("dev-1").validity(Validity::NotYet),
        Versions::Both,
    );
    expect_refused(&t, &early, "bad-certificate");
    let other = Ca::new("another CA").issue(&Leaf::client("dev-1"));
    let wrong_ca = tls_client::config(
        &ca,
        Some((&other.cert_pem(), &other.key_pem())),
        Versions::Both,
    );
    expect_refused(&t, &wrong_ca, "bad-certificate");
    let good = t.setup.ca.issue(&Leaf::client("dev-1"));
    let stranger = t.setup.ca.issue(&Leaf::client("dev-1"));
    let wrong_key = tls_client::config(
        &ca,
        Some((&good.cert_pem(), &stranger.key_pem())),
        Versions::Both,
    );
    expect_refused(&t, &wrong_key, "bad-certificate");
    expect_refused(&t, &t.anonymous(), "no-certificate");
    let no_cn = Leaf {
        cn: None,
        ..Leaf::client_dns("dev-9")
    };
    expect_refused(&t, &t.config_for(&no_cn, Versions::Both), "no-identity");
    let spaced = t.config_for(&Leaf::client("dev 1"), Versions::Both);
    expect_refused(&t, &spaced, "no-identity");

    // Plaintext: told in the clear.
    let mut plain = TcpStream::connect(t.addr).unwrap();
    plain.set_read_timeout(Some(TIMEOUT)).unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut got = String::new();
    let _ = plain.read_to_string(&mut got);
    assert!(got.starts_with("-ERR this port speaks TLS"), "{got:?}");
    let line = t.reap_line(plain.local_addr().unwrap());
    assert!(line.contains(" tls_cause=plaintext "), "{line}");

    // A handshake record full of garbage.
    let mut junk = TcpStream::connect(t.addr).unwrap();
    junk.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut record = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    record.extend((0..0x40u8).map(|i| i.wrapping_mul(37)));
    junk.write_all(&record).unwrap();
    let line = t.reap_line(junk.local_addr().unwrap());
    assert!(line.contains(" reason=tls-handshake "), "{line}");
    assert!(line.contains(" tls_cause=protocol "), "{line}");

    let i = t.tls_info();
    assert_eq!(i["tls_failures_bad_certificate"], "4", "{i:?}");
    assert_eq!(i["tls_failures_no_certificate"], "1", "{i:?}");
    assert_eq!(i["tls_failures_no_identity"], "2", "{i:?}");
    assert_eq!(i["tls_failures_plaintext"], "1", "{i:?}");
    assert_eq!(i["tls_failures_protocol"], "1", "{i:?}");
    assert_eq!(i["tls_handshake_failures"], "9", "{i:?}");
    assert_eq!(i["tls_sessions"], "0", "{i:?}");

    // And a good one still works.
    let mut dev = t.connect(&t.config_for(&Leaf::client("dev-1"), Versions::Both));
    assert_eq!(dev.cmd(&["CLIENT", "GETNAME"]).unwrap().text(), "dev-1");
}

/// A client that connects and stalls (nothing, or a cut ClientHello) is reaped
/// `tls-handshake`, cause `timeout`, within `tls.handshake_timeout` + slack.
#[test]
fn a_stalled_handshake_is_reaped_within_its_bound() {
    let t = Tls::start("handshake_timeout = \"1s\"", ADMIN);
    let silent = TcpStream::connect(t.addr).unwrap();
    let start = Instant::now();
    let mut slow = TcpStream::connect(t.addr).unwrap();
    // The first 10 bytes of a ClientHello record that announces 512.
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
        .unwrap();
    for s in [&silent, &slow] {
        let line = t.reap_line(s.local_addr().unwrap());
        let waited = start.elapsed();
        assert!(line.contains(" reason=tls-handshake "), "{line}");
        assert!(line.contains(" tls_cause=timeout "), "{line}");
        assert!(
            waited >= Duration::from_millis(950) && waited <= Duration::from_millis(3_000),
            "reaped after {waited:?}, bound 1 s + 2 s: {line}"
        );
    }
    assert_eq!(t.tls_info()["tls_failures_timeout"], "2");
}

/// A client's `close_notify` ends its session `closed`; the daemon answers requests sent
/// before it.
#[test]
fn close_notify_ends_a_session_closed() {
    let t = Tls::start("", ADMIN);
    let mut c = t.connect(&t.anonymous());
    c.ping().unwrap();
    c.send(&["ECHO", "before"]).unwrap();
    c.close_notify().unwrap();
    let line = t.reap_line(c.local);
    assert!(line.contains(" reason=closed "), "{line}");
    assert!(!line.contains("tls_cause"), "{line}");
    let rest = c.read_to_end().unwrap();
    assert_eq!(rest, b"$6\r\nbefore\r\n", "the reply before close_notify");
    assert_eq!(t.tls_info()["tls_handshake_failures"], "0");
}

/// The daemon started on a config whose TLS files are bad: it exits non-zero and its error
/// names the file (also `--check-config`).
fn refuses_to_start(dir: &Path, tls: &str, file: &Path, why: &str) {
    let config = dir.join(format!("{why}.toml"));
    std::fs::write(
        &config,
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{tls}"),
    )
    .unwrap();
    for check in [true, false] {
        let mut cmd = Command::new(util::vigild_bin());
        cmd.arg(if check { "--check-config" } else { "--config" })
            .arg(&config);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = util::wait_child_exit(&mut child, Duration::from_secs(10), "vigild");
        let mut text = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(!status.success(), "{why} (check {check}): started\n{text}");
        assert!(
            text.contains(&file.display().to_string()),
            "{why} (check {check}): the error must name {}:\n{text}",
            file.display()
        );
    }
}

#[test]
fn startup_refuses_bad_files_naming_them() {
    let dir = TempDir::new("tls-bad");
    let d = dir.path();
    let ca = Ca::new("vigild test CA");
    let table = |crt: &Path, key: &Path, ca_file: &str| {
        format!(
            "[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = {:?}\nkey_file = {:?}\n{ca_file}",
            crt.display().to_string(),
            key.display().to_string()
        )
    };
    let (crt, key) = ca
        .issue(&Leaf::server().validity(Validity::Expired))
        .write(d, "expired");
    refuses_to_start(d, &table(&crt, &key, ""), &crt, "expired");
    let (crt, key) = ca
        .issue(&Leaf::server().validity(Validity::NotYet))
        .write(d, "early");
    refuses_to_start(d, &table(&crt, &key, ""), &crt, "not-yet-valid");
    let (crt, _) = ca.issue(&Leaf::server()).write(d, "good");
    let (_, other_key) = ca.issue(&Leaf::server()).write(d, "other");
    refuses_to_start(d, &table(&crt, &other_key, ""), &other_key, "wrong-key");
    // Chain out of order: the intermediate before the leaf it issued.
    let mid = ca.intermediate("vigild test intermediate");
    let leaf = mid.issue(&Leaf::server());
    let (_, leaf_key) = leaf.write(d, "leaf");
    let reversed = d.join("reversed.crt");
    std::fs::write(&reversed, format!("{}{}", mid.pem(), leaf.cert_pem())).unwrap();
    refuses_to_start(
        d,
        &table(&reversed, &leaf_key, ""),
        &reversed,
        "chain-order",
    );
    // In order it starts (checked with --check-config).
    let ordered = d.join("ordered.crt");
    std::fs::write(&ordered, format!("{}{}", leaf.cert_pem(), mid.pem())).unwrap();
    let ok_config = d.join("ok.toml");
    std::fs::write(
        &ok_config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n{}",
            table(&ordered, &leaf_key, "")
        ),
    )
    .unwrap();
    let out = Command::new(util::vigild_bin())
        .arg("--check-config")
        .arg(&ok_config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "an ordered chain is good: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (good, good_key) = (crt, d.join("good.key"));
    let missing = d.join("missing.key");
    refuses_to_start(d, &table(&good, &missing, ""), &missing, "missing-key");
    let missing_crt = d.join("missing.crt");
    refuses_to_start(
        d,
        &table(&missing_crt, &good_key, ""),
        &missing_crt,
        "missing-cert",
    );
    let fifo = d.join("fifo.crt");
    let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: mkfifo(3) with a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    refuses_to_start(d, &table(&fifo, &good_key, ""), &fifo, "fifo");
    let garbage_ca = d.join("garbage-ca.crt");
    std::fs::write(&garbage_ca, "not a certificate\n").unwrap();
    let with_ca = format!(
        "client_ca_file = {:?}\nclient_auth = \"required\"\n",
        garbage_ca.display().to_string()
    );
    refuses_to_start(
        d,
        &table(&good, &good_key, &with_ca),
        &garbage_ca,
        "garbage-ca",
    );
}

/// `dev-1`'s session is named `dev-1` and cannot take `dev-2` (nor drop its name); its
/// identity is in CLIENT LIST, INFO and the presence events. Identities from the SAN too.
#[test]
fn identity_names_the_session_and_cannot_be_changed() {
    let t = Tls::start(
        "client_auth = \"optional\"",
        "[admin]\nlisten = \"127.0.0.1:0\"\n[session]\nunique_names = true\n",
    );
    let mut watcher = t.admin();
    let mut ps = watcher.as_pubsub();
    ps.subscribe("presence").unwrap();
    ps.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut dev = t.connect(&t.config_for(&Leaf::client("dev-1"), Versions::Both));
    assert_eq!(dev.cmd(&["CLIENT", "GETNAME"]).unwrap().text(), "dev-1");
    let refused = dev.cmd(&["CLIENT", "SETNAME", "dev-2"]).unwrap();
    assert!(
        matches!(&refused, Reply::Error(e) if e.contains("identity")),
        "{refused:?}"
    );
    let refused = dev.cmd(&["CLIENT", "SETNAME", ""]).unwrap();
    assert!(matches!(refused, Reply::Error(_)), "{refused:?}");
    let refused = dev.cmd(&["HELLO", "2", "SETNAME", "dev-2"]).unwrap();
    assert!(matches!(refused, Reply::Error(_)), "{refused:?}");
    assert_eq!(
        dev.cmd(&["CLIENT", "SETNAME", "dev-1"]).unwrap().text(),
        "OK"
    );
    assert_eq!(dev.cmd(&["CLIENT", "GETNAME"]).unwrap().text(), "dev-1");

    let mut admin = t.admin();
    let line = list_line(&mut admin, dev.local);
    assert!(line.contains(" name=dev-1 "), "{line}");
    assert!(line.contains(" identity=dev-1"), "{line}");
    assert_eq!(t.tls_info()["tls_sessions"], "1");

    let mut events = Vec::new();
    dev.close_notify().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline
        && !events
            .iter()
            .any(|e: &serde_json::Value| e["event"] == "left")
    {
        let Ok(msg) = ps.get_message() else { break };
        let payload: String = msg.get_payload().unwrap();
        events.push(serde_json::from_str(&payload).unwrap());
    }
    let named = events
        .iter()
        .find(|e| e["event"] == "named")
        .unwrap_or_else(|| panic!("no named event: {events:?}"));
    assert_eq!(named["name"], "dev-1", "{named}");
    assert_eq!(named["identity"], "dev-1", "{named}");
    let left = events
        .iter()
        .find(|e| e["event"] == "left")
        .unwrap_or_else(|| panic!("no left event: {events:?}"));
    assert_eq!(left["identity"], "dev-1", "{left}");
    assert_eq!(left["reason"], "closed", "{left}");
    let joined = events.iter().find(|e| e["event"] == "joined").unwrap();
    assert!(
        joined.get("identity").is_none(),
        "joined is before the handshake: {joined}"
    );
    drop(ps);
}

#[test]
fn identity_from_san_dns_and_san_uri() {
    for (field, leaf, want) in [
        (
            "san-dns",
            Leaf::client_dns("dev-3.example.org"),
            "dev-3.example.org",
        ),
        (
            "san-uri",
            Leaf::client_uri("spiffe://example.org/dev-4"),
            "spiffe://example.org/dev-4",
        ),
    ] {
        let t = Tls::start(
            &format!("client_auth = \"required\"\nidentity = \"{field}\""),
            ADMIN,
        );
        let mut c = t.connect(&t.config_for(&leaf, Versions::Both));
        assert_eq!(
            c.cmd(&["CLIENT", "GETNAME"]).unwrap().text(),
            want,
            "{field}"
        );
        let line = list_line(&mut t.admin(), c.local);
        assert!(
            line.contains(&format!(" identity={want}")),
            "{field}: {line}"
        );
    }
}

/// With `unique_names`: a second `dev-1` does not replace a live first one (it stays unnamed),
/// replaces it once the first is stale (silent past `session.takeover_after`), and a plain
/// client on the plain port can claim no name at all, held or not.
#[test]
fn the_same_identity_replaces_a_stale_holder_and_no_one_else_can() {
    let t = Tls::start(
        "client_auth = \"optional\"",
        "[admin]\nlisten = \"127.0.0.1:0\"\n[session]\nunique_names = true\ntakeover_after = \"1s\"\n",
    );
    let dev1 = t.config_for(&Leaf::client("dev-1"), Versions::Both);
    let mut first = t.connect(&dev1);
    assert_eq!(first.cmd(&["CLIENT", "GETNAME"]).unwrap().text(), "dev-1");
    // A live holder keeps it.
    let mut early = t.connect(&t.config_for(&Leaf::client("dev-1"), Versions::Both));
    assert_eq!(
        early.cmd(&["CLIENT", "GETNAME"]).unwrap(),
        Reply::Bulk(None)
    );
    first.ping().unwrap();
    drop(early);

    // Plain clients: no name, held or free.
    let mut plain = t.d.redis();
    for name in ["dev-1", "free-name"] {
        let r: redis::RedisResult<String> = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(name)
            .query(&mut plain);
        let e = r.expect_err("a plain client took a name");
        assert!(e.to_string().contains("identit"), "{name}: {e}");
    }
    // An anonymous TLS client neither.
    let mut anon = t.connect(&t.anonymous());
    let r = anon.cmd(&["CLIENT", "SETNAME", "dev-1"]).unwrap();
    assert!(matches!(r, Reply::Error(_)), "{r:?}");
    // Nor another identity (its name is its own).
    let mut dev2 = t.connect(&t.config_for(&Leaf::client("dev-2"), Versions::Both));
    let r = dev2.cmd(&["CLIENT", "SETNAME", "dev-1"]).unwrap();
    assert!(matches!(r, Reply::Error(_)), "{r:?}");

    // The first goes silent; past takeover_after the same identity replaces it.
    std::thread::sleep(Duration::from_millis(1_500));
    let mut second = t.connect(&dev1);
    assert_eq!(second.cmd(&["CLIENT", "GETNAME"]).unwrap().text(), "dev-1");
    let line = t.reap_line(first.local);
    assert!(line.contains(" reason=replaced "), "{line}");
    assert!(first.ping().is_err(), "the replaced session is closed");
    let listing = client_list(&mut t.admin());
    assert_eq!(listing.matches(" name=dev-1 ").count(), 1, "{listing}");
    assert!(list_line(&mut t.admin(), second.local).contains(" name=dev-1 "));
}

/// Atomically replaces `path` with `text` (write a sibling, rename over).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Certificate rotation under 100 live TLS sessions: none dropped, new handshakes see the new
/// leaf; then a bad file is refused, the second certificate kept, `tls_reload_failures`
/// counted.
#[test]
fn certificates_rotate_under_100_live_sessions() {
    let t = Tls::start("", ADMIN);
    let anon = t.anonymous();
    let mut live: Vec<TlsClient> = (0..100).map(|_| t.connect(&anon)).collect();
    for c in &mut live {
        c.ping().unwrap();
    }
    let fresh = || tls_client::config(&t.ca(), None, Versions::Both);
    let served = TlsClient::connect(t.addr, &fresh()).unwrap().served_leaf();
    assert_eq!(served, Some(t.setup.server.der()), "the first certificate");

    let next = t.setup.ca.issue(&Leaf::server());
    replace(&t.setup.key_file, &next.key_pem());
    replace(&t.setup.cert_file, &next.cert_pem());
    let before = t.d.log.len();
    t.d.signal(libc::SIGHUP);
    t.d.log
        .wait_for_after(before, TIMEOUT, |l| l.contains(" reloaded "))
        .unwrap_or_else(|| panic!("no reload:\n{}", t.d.log.text()));
    assert!(
        t.d.log
            .lines_from(before)
            .iter()
            .any(|l| l.contains("reload: tls: ") && l.contains(" serves ")),
        "{}",
        t.d.log.text()
    );
    let served = TlsClient::connect(t.addr, &fresh()).unwrap().served_leaf();
    assert_eq!(
        served,
        Some(next.der()),
        "a new handshake sees the new certificate"
    );
    // A client that resumes across the rotation still gets in.
    let mut resumed = t.connect(&anon);
    resumed.ping().unwrap();
    assert!(resumed.resumed(), "the ticket key outlives the reload");
    for (i, c) in live.iter_mut().enumerate() {
        c.ping()
            .unwrap_or_else(|e| panic!("live session {i} after rotation: {e}"));
    }

    // A bad certificate file: warned, counted, the second certificate kept.
    replace(
        &t.setup.cert_file,
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    let before = t.d.log.len();
    t.d.signal(libc::SIGHUP);
    let warning =
        t.d.log
            .wait_for_after(before, TIMEOUT, |l| {
                l.contains("reload: tls: ") && l.contains("keep using the previous")
            })
            .unwrap_or_else(|| panic!("no refused reload:\n{}", t.d.log.text()));
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(
        warning.contains(&t.setup.cert_file.display().to_string()),
        "{warning}"
    );
    let served = TlsClient::connect(t.addr, &fresh()).unwrap().served_leaf();
    assert_eq!(served, Some(next.der()), "the bad file did not replace it");
    for c in &mut live {
        c.ping().unwrap();
    }
    let i = t.tls_info();
    assert_eq!(i["tls_reload_failures"], "1", "{i:?}");
    assert_eq!(i["tls_sessions"], "101", "{i:?}");
    for c in &live {
        let needle = format!(" peer={} ", c.local);
        assert_eq!(
            t.d.log
                .count(|l| l.contains(" reap ") && l.contains(&needle)),
            0,
            "live session {} was reaped",
            c.local
        );
    }
}

/// Records cut anywhere (the ciphertext of a request sent 3 bytes at a time), a pipelined
/// burst of 1,000 requests, and replies queued while the client does not read (10 × 40 KB):
/// all answered in order.
#[test]
fn cut_records_pipelines_and_queued_replies() {
    let t = Tls::start("", ADMIN);
    let mut c = t.connect(&t.anonymous());
    c.ping().unwrap();
    let mut wire = Vec::new();
    c.tls
        .conn
        .writer()
        .write_all(b"*2\r\n$4\r\nECHO\r\n$5\r\nslow!\r\n")
        .unwrap();
    while c.tls.conn.wants_write() {
        c.tls.conn.write_tls(&mut wire).unwrap();
    }
    for chunk in wire.chunks(3) {
        c.tls.sock.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.reply().unwrap().text(), "slow!");

    let burst = "PING\r\n".repeat(1_000);
    c.tls.write_all(burst.as_bytes()).unwrap();
    for i in 0..1_000 {
        assert_eq!(
            c.reply().unwrap(),
            Reply::Status("PONG".into()),
            "reply {i}"
        );
    }

    let payload = "x".repeat(40_000);
    for _ in 0..10 {
        c.send(&["ECHO", &payload]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..10 {
        assert_eq!(c.reply().unwrap().text().len(), 40_000, "reply {i}");
    }
    c.ping().unwrap();
    assert_eq!(t.tls_info()["tls_handshake_failures"], "0");
}

/// A TLS listener added by a reload serves with the files read then; removed again, it closes
/// and the plain port carries on.
#[test]
fn a_reload_opens_and_closes_the_tls_listener() {
    let dir = TempDir::new("tls-reload");
    let setup = Setup::new(dir.path());
    let without = setup
        .table("")
        .replace("listen = [\"127.0.0.1:0\"]", "listen = []");
    let d = Daemon::start(&without);
    assert!(d
        .log
        .wait_for(Duration::ZERO, |l| l.ends_with("(TLS)"))
        .is_none());
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    let with = text.replacen("listen = []", "listen = [\"127.0.0.1:0\"]", 1);
    assert_ne!(text, with);
    std::fs::write(&d.config_path, &with).unwrap();
    let before = d.log.len();
    d.signal(libc::SIGHUP);
    d.log
        .wait_for_after(before, TIMEOUT, |l| l.contains(" reloaded "))
        .unwrap_or_else(|| panic!("no reload:\n{}", d.log.text()));
    let addr = tls_addr(&d);
    let config = tls_client::config(&setup.ca.pem(), None, Versions::Both);
    let mut c = TlsClient::connect(addr, &config).unwrap();
    c.ping().unwrap();
    std::fs::write(&d.config_path, &text).unwrap();
    let before = d.log.len();
    d.signal(libc::SIGHUP);
    d.log
        .wait_for_after(before, TIMEOUT, |l| l.contains("closed listener"))
        .unwrap_or_else(|| panic!("TLS listener not closed:\n{}", d.log.text()));
    // The line is logged just before the socket is dropped: allow the daemon that moment.
    let closed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        TcpStream::connect(addr).is_err()
    });
    assert!(
        closed,
        "{addr} still listening after 1 s:\n{}",
        d.log.text()
    );
    c.ping().unwrap();
    let mut plain = d.redis();
    let pong: String = redis::cmd("PING").query(&mut plain).unwrap();
    assert_eq!(pong, "PONG");
}

/// A request in the same flight as the client's Finished (rustls sends data written before
/// the handshake ended right after it): it runs after the identity named the session.
#[test]
fn a_request_right_behind_the_handshake_sees_the_identity() {
    let t = Tls::start("client_auth = \"required\"", "");
    for _ in 0..5 {
        let config = t.config_for(&Leaf::client("dev-1"), Versions::Only13);
        let stream = TcpStream::connect(t.addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        conn.writer()
            .write_all(b"CLIENT GETNAME\r\nHELLO 3 SETNAME dev-1\r\nPING\r\n")
            .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, stream);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.ends_with(b"+PONG\r\n") {
            let n = tls.read(&mut chunk).expect("replies");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("$5\r\ndev-1\r\n%"), "{text}");
    }
}

/// A password over TLS: AUTH first, as on the plain port.
#[test]
fn auth_over_tls() {
    let t = Tls::start("", "[server]\npassword = \"s3cret\"\n");
    let mut c = t.connect(&t.anonymous());
    let r = c.cmd(&["PING"]).unwrap();
    assert!(
        matches!(&r, Reply::Error(e) if e.starts_with("NOAUTH")),
        "{r:?}"
    );
    assert_eq!(c.cmd(&["AUTH", "s3cret"]).unwrap().text(), "OK");
    c.ping().unwrap();
}

/// At shutdown (SIGTERM) and on CLIENT KILL a TLS client gets `close_notify`: it can tell the
/// end from a cut connection.
#[test]
fn the_daemon_ends_tls_sessions_with_close_notify() {
    let mut t = Tls::start("", ADMIN);
    let mut killed = t.connect(&t.anonymous());
    killed.ping().unwrap();
    let id: i64 = match killed.cmd(&["CLIENT", "ID"]).unwrap() {
        Reply::Int(i) => i,
        other => panic!("{other:?}"),
    };
    let n: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut t.admin())
        .unwrap();
    assert_eq!(n, 1);
    let mut rest = Vec::new();
    killed
        .tls
        .read_to_end(&mut rest)
        .expect("close_notify, not a bare FIN");
    let mut last = t.connect(&t.anonymous());
    last.ping().unwrap();
    t.d.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    last.tls
        .read_to_end(&mut rest)
        .expect("close_notify at shutdown, not a bare FIN");
    assert!(t.d.wait_exit(TIMEOUT).is_some_and(|s| s.success()));
}

/// Identities turned on by a reload: a name a plain client set before yields to the session
/// whose certificate proves it, and the plain client can no longer rename itself.
#[test]
fn a_holder_without_identity_yields_to_the_identity() {
    let t = Tls::start("client_auth = \"none\"", "[session]\nunique_names = true\n");
    let mut plain = t.d.redis();
    let ok: String = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("dev-1")
        .query(&mut plain)
        .unwrap();
    assert_eq!(ok, "OK");
    let plain_id = util::client_id(&mut plain);
    let text = std::fs::read_to_string(&t.d.config_path).unwrap();
    let with = text.replacen("client_auth = \"none\"", "client_auth = \"optional\"", 1);
    assert_ne!(text, with);
    std::fs::write(&t.d.config_path, with).unwrap();
    let before = t.d.log.len();
    t.d.signal(libc::SIGHUP);
    t.d.log
        .wait_for_after(before, TIMEOUT, |l| l.contains(" reloaded "))
        .unwrap_or_else(|| panic!("no reload:\n{}", t.d.log.text()));
    let mut dev = t.connect(&t.config_for(&Leaf::client("dev-1"), Versions::Both));
    assert_eq!(dev.cmd(&["CLIENT", "GETNAME"]).unwrap().text(), "dev-1");
    let line = t.d.wait_reap(plain_id, TIMEOUT);
    assert_eq!(line["reason"], "replaced", "{line:?}");
    let mut other = t.d.redis();
    let r: redis::RedisResult<String> = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("dev-9")
        .query(&mut other);
    assert!(
        r.is_err(),
        "a plain client named itself after identities were turned on"
    );
}
