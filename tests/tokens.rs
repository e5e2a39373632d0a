//! Signed-token identities (`[token]`, docs/tokens.md) with stock clients: the redis crate,
//! redis-cli and redis-py pass `AUTH <name> <token>` unchanged. Tokens are made by the test
//! (HS256 with a secret file, ES256 with a key pair from rcgen, a JWKS document); every bad
//! token is refused with its counted cause and never logged; a token that expires reaps its
//! session (`auth-expired`) unless refreshed; JWKS keys rotate on SIGHUP; one identity holds at
//! most `session.max_sessions_per_identity` sessions.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use util::load::{read_line, say};
use util::{info_map, Daemon, TempDir};

const SECRET: &[u8] = b"a shared secret of at least 32 bytes!!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn es256(key: &rcgen::KeyPair, kid: Option<&str>, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let pem = key.serialize_pem();
    encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims(sub: &str, exp_in: i64) -> serde_json::Value {
    serde_json::json!({"sub": sub, "exp": now() as i64 + exp_in})
}

/// A config directory with the HS256 secret, and the `[token]` table that uses it.
fn hs_setup(extra: &str) -> (TempDir, String) {
    let dir = TempDir::new("tokens");
    let secret = dir.path().join("token.secret");
    std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
    let config = format!("[token]\nsecret_file = \"{}\"\n{extra}", secret.display());
    (dir, config)
}

/// What arrives until the peer closes, as text (a close within 5 s is required).
fn read_to_close(s: &mut TcpStream) -> String {
    let (got, end) = util::load::read_to_close(s, Duration::from_secs(5));
    assert!(
        !matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "not closed: {end:?}"
    );
    String::from_utf8_lossy(&got).into_owned()
}

fn token_info(d: &Daemon) -> std::collections::HashMap<String, String> {
    let out = Command::new("redis-cli")
        .args([
            "-u",
            &format!("redis://{}/", d.ops_listener("admin")),
            "INFO",
            "tls",
        ])
        .output()
        .expect("redis-cli");
    info_map(&String::from_utf8_lossy(&out.stdout))
}

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn stock_clients_authenticate_with_a_token_and_are_named_after_it() {
    let (_dir, config) = hs_setup("");
    let d = Daemon::start(&format!("{config}{ADMIN}"));
    let token = hs256(claims("dev-1", 300));

    // The redis crate: user and password in the URL become `AUTH dev-1 <token>`.
    let url = format!("redis://dev-1:{token}@{}/", d.addr);
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("a good token authenticates");
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut con).unwrap();
    assert!(info.contains(" name=dev-1 "), "{info}");
    assert!(info.contains(" identity=dev-1 "), "{info}");
    let refused: redis::RedisResult<String> = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("dev-2")
        .query(&mut con);
    let e = refused.unwrap_err();
    assert!(e.to_string().contains("its identity"), "{e}");
    drop(con);

    // redis-cli --user/--pass sends the same AUTH.
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &d.addr.port().to_string()])
        .args(["--user", "dev-2", "--pass", &hs256(claims("dev-2", 300))])
        .args(["--no-auth-warning", "CLIENT", "INFO"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" name=dev-2 ") && text.contains(" identity=dev-2 "),
        "{text}"
    );

    // Without a token: nothing runs, and no name can be taken (names are identities here).
    let mut s = d.raw();
    assert_eq!(say(&mut s, "PING"), "-NOAUTH Authentication required.");
    assert_eq!(
        say(&mut s, "CLIENT SETNAME dev-1"),
        "-NOAUTH Authentication required."
    );
    let i = token_info(&d);
    assert_eq!(i["token_accepted"], "2", "{i:?}");
    // The token itself never reaches the log.
    assert_eq!(d.log.count(|l| l.contains(&token)), 0);
}

#[test]
fn redis_py_passes_a_token_on_resp2_and_resp3() {
    let Some(python) = util::installed("VIGILD_TEST_PYTHON", "redis-py") else {
        return;
    };
    let (_dir, config) = hs_setup("");
    let d = Daemon::start(&config);
    let script = r#"
import sys, redis
port, token = int(sys.argv[1]), sys.argv[2]
for proto in (2, 3):
    r = redis.Redis(host="127.0.0.1", port=port, username="dev-py", password=token,
                    protocol=proto, decode_responses=True)
    assert r.ping() is True
    info = r.client_info()
    assert info["name"] == "dev-py", info
    assert info["identity"] == "dev-py", info
    r.close()
# redis-py 8 retries a failed handshake (AuthenticationError is a ConnectionError): with its
# default retries one ping() sends 11 bad tokens, past the address's 10 before a lockout, and
# the last reply is then the lockout's. One attempt shows the token's own refusal.
from redis.backoff import NoBackoff
from redis.retry import Retry
bad = redis.Redis(host="127.0.0.1", port=port, username="dev-py", password=token + "x",
                  retry=Retry(NoBackoff(), 0))
try:
    bad.ping()
    raise SystemExit("a bad signature was accepted")
except redis.exceptions.AuthenticationError as e:
    assert "invalid token" in str(e), e
print("ok")
"#;
    let out = Command::new(python)
        .args(["-c", script, &d.addr.port().to_string()])
        .arg(hs256(claims("dev-py", 300)))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_bad_token_is_refused_with_its_counted_cause() {
    let dir = TempDir::new("tokens-es");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let public = dir.path().join("token.pub");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let d = Daemon::start(&format!(
        "[token]\npublic_key_file = \"{}\"\naudience = \"vigild\"\n{ADMIN}",
        public.display()
    ));
    let aud = |sub: &str, exp_in: i64, aud: &str| serde_json::json!({"sub": sub, "exp": now() as i64 + exp_in, "aud": aud});
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let n = now() as i64;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "valid",
            es256(&key, None, aud("dev-1", 300, "vigild")),
            "+OK",
        ),
        (
            "expired",
            es256(&key, None, aud("dev-1", -60, "vigild")),
            "expired",
        ),
        (
            "not yet valid",
            es256(
                &key,
                None,
                serde_json::json!({"sub": "dev-1", "exp": n + 300, "nbf": n + 120, "aud": "vigild"}),
            ),
            "not valid yet",
        ),
        (
            "wrong key",
            es256(&other, None, aud("dev-1", 300, "vigild")),
            "bad signature",
        ),
        (
            "wrong audience",
            es256(&key, None, aud("dev-1", 300, "else")),
            "wrong audience",
        ),
        (
            "sub mismatch",
            es256(&key, None, aud("dev-2", 300, "vigild")),
            "its sub is not",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
                b64.encode(aud("dev-1", 300, "vigild").to_string())
            ),
            "not a well-formed JWT",
        ),
        (
            // HS256 "signed" with the public key as the secret (algorithm confusion).
            "algorithm confusion",
            encode(
                &Header::new(Algorithm::HS256),
                &aud("dev-1", 300, "vigild"),
                &EncodingKey::from_secret(key.public_key_pem().as_bytes()),
            )
            .unwrap(),
            "matches no configured key",
        ),
        (
            "malformed base64",
            "eyJ!!.e30.x".to_string(),
            "not a well-formed JWT",
        ),
        (
            "malformed json",
            format!("{}.{}.sig", b64.encode(b"{not json"), b64.encode(b"{}")),
            "not a well-formed JWT",
        ),
    ];
    for (what, token, want) in &cases {
        let mut s = d.raw();
        let reply = say(&mut s, &format!("AUTH dev-1 {token}"));
        assert!(reply.contains(want), "{what}: {reply}");
        if *want != "+OK" {
            assert!(
                reply.starts_with("-WRONGPASS invalid token: "),
                "{what}: {reply}"
            );
            assert_eq!(
                say(&mut s, "PING"),
                "-NOAUTH Authentication required.",
                "{what}"
            );
        }
    }
    // A huge token is over what an unauthenticated session may send: refused and closed.
    let mut s = d.raw();
    s.write_all(format!("AUTH dev-1 {}\r\n", "e".repeat(64 * 1024)).as_bytes())
        .unwrap();
    let rest = read_to_close(&mut s);
    assert!(rest.contains("unauthenticated request exceeds"), "{rest}");
    let i = token_info(&d);
    for (cause, n) in [
        ("expired", "1"),
        ("not_yet_valid", "1"),
        ("bad_signature", "1"),
        ("wrong_audience", "1"),
        ("subject_mismatch", "1"),
        ("malformed", "3"),
        ("unknown_key", "1"),
    ] {
        assert_eq!(i[&format!("token_refused_{cause}")], n, "{cause}: {i:?}");
    }
    assert_eq!(i["token_accepted"], "1");
    for (_, token, _) in &cases {
        assert_eq!(
            d.log.count(|l| l.contains(token.as_str())),
            0,
            "a token was logged"
        );
    }
}

#[test]
fn an_expired_token_reaps_its_session_unless_refreshed() {
    let (_dir, config) = hs_setup("expiry_grace = \"0s\"\nleeway = \"0s\"\n");
    let d = Daemon::start(&config);
    let mut stays = d.raw();
    let mut goes = d.raw();
    let started = Instant::now();
    assert_eq!(
        say(&mut stays, &format!("AUTH a {}", hs256(claims("a", 2)))),
        "+OK"
    );
    assert_eq!(
        say(&mut goes, &format!("AUTH b {}", hs256(claims("b", 2)))),
        "+OK"
    );
    // A fresh token for the same identity before exp; one for another identity is refused.
    assert_eq!(
        say(&mut stays, &format!("AUTH a {}", hs256(claims("a", 60)))),
        "+OK"
    );
    let other = say(&mut stays, &format!("AUTH b {}", hs256(claims("b", 60))));
    assert!(other.contains("another identity"), "{other}");
    let reap = d
        .log
        .wait_for(Duration::from_secs(6), |l| {
            l.contains("reason=auth-expired")
        })
        .expect("the unrefreshed session is reaped");
    let after = started.elapsed();
    assert!(reap.contains("name=b"), "{reap}");
    // exp has one-second resolution: it comes 1-2 s after the token was made.
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "reaped {after:?} after AUTH"
    );
    assert_eq!(read_to_close(&mut goes), "");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        say(&mut stays, "PING"),
        "+PONG",
        "the refreshed session lives on"
    );
    assert_eq!(
        d.log.count(|l| l.contains("reason=auth-expired")),
        1,
        "only the unrefreshed one"
    );
}

/// A JWKS document with the P-256 public key of `key` under `kid`.
fn jwks(key: &rcgen::KeyPair, kid: &str) -> String {
    let raw = key.public_key_raw();
    assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": kid, "use": "sig",
        "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..]),
    }]})
    .to_string()
}

fn replace(path: &Path, text: &str) {
    let tmp: PathBuf = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn jwks_keys_rotate_on_sighup_and_live_sessions_carry_on() {
    let dir = TempDir::new("tokens-jwks");
    let k1 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let k2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let path = dir.path().join("keys.jwks");
    replace(&path, &jwks(&k1, "k1"));
    let d = Daemon::start(&format!("[token]\njwks_file = \"{}\"\n", path.display()));
    let mut live = d.raw();
    assert_eq!(
        say(
            &mut live,
            &format!(
                "AUTH dev-1 {}",
                es256(&k1, Some("k1"), claims("dev-1", 300))
            )
        ),
        "+OK"
    );
    // Without a kid a JWKS key is not chosen.
    let mut s = d.raw();
    let r = say(
        &mut s,
        &format!("AUTH dev-2 {}", es256(&k1, None, claims("dev-2", 300))),
    );
    assert!(r.contains("matches no configured key"), "{r}");

    replace(&path, &jwks(&k2, "k2"));
    d.signal(libc::SIGHUP);
    d.log
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("reload: token keys read again")
        })
        .expect("the reload read the new JWKS");
    let mut s = d.raw();
    let r = say(
        &mut s,
        &format!(
            "AUTH dev-3 {}",
            es256(&k1, Some("k1"), claims("dev-3", 300))
        ),
    );
    assert!(
        r.contains("matches no configured key"),
        "the rotated-out key: {r}"
    );
    assert_eq!(
        say(
            &mut s,
            &format!(
                "AUTH dev-3 {}",
                es256(&k2, Some("k2"), claims("dev-3", 300))
            )
        ),
        "+OK"
    );
    assert_eq!(
        say(&mut live, "PING"),
        "+PONG",
        "a session of the old key carries on"
    );

    // A broken JWKS keeps the running config (and its keys).
    replace(&path, "{\"keys\": 7}");
    d.signal(libc::SIGHUP);
    d.log
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("reload failed") && l.contains("jwks")
        })
        .expect("the broken JWKS is refused");
    let mut s = d.raw();
    assert_eq!(
        say(
            &mut s,
            &format!(
                "AUTH dev-4 {}",
                es256(&k2, Some("k2"), claims("dev-4", 300))
            )
        ),
        "+OK"
    );
}

#[test]
fn one_identity_holds_at_most_its_sessions_and_the_newest_is_refused() {
    let (_dir, config) = hs_setup("[session]\nmax_sessions_per_identity = 2\n");
    let d = Daemon::start(&format!("{config}{ADMIN}"));
    let token = hs256(claims("dev-1", 300));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = d.raw();
        assert_eq!(say(&mut s, &format!("AUTH dev-1 {token}")), "+OK");
        held.push(s);
    }
    let mut third = d.raw();
    let r = say(&mut third, &format!("AUTH dev-1 {token}"));
    assert!(
        r.starts_with("-ERR max sessions per identity reached (2)"),
        "{r}"
    );
    assert_eq!(read_to_close(&mut third), "");
    d.log
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("reason=identity-limit")
        })
        .expect("the newest is reaped identity-limit");
    // Another identity is not affected, and the first two still work.
    let mut other = d.raw();
    assert_eq!(
        say(
            &mut other,
            &format!("AUTH dev-2 {}", hs256(claims("dev-2", 300)))
        ),
        "+OK"
    );
    for s in &mut held {
        assert_eq!(say(s, "PING"), "+PONG");
    }
    // A slot frees when one of them ends.
    drop(held.pop());
    let mut again = d.raw();
    let ok = util::wait_until(Duration::from_secs(5), "a freed slot", || {
        let mut s = d.raw();
        (say(&mut s, &format!("AUTH dev-1 {token}")) == "+OK").then_some(s)
    });
    drop(ok);
    let _ = say(&mut again, "PING");
    assert_eq!(token_info(&d)["identities"], "2");
}

#[test]
fn the_password_works_beside_tokens_but_gives_no_identity() {
    let (_dir, config) = hs_setup("[server]\npassword = \"pw\"\n");
    let d = Daemon::start(&config);
    let mut s = d.raw();
    assert_eq!(say(&mut s, "AUTH pw"), "+OK");
    let r = say(&mut s, "CLIENT SETNAME dev-1");
    assert!(r.starts_with("-ERR names are bound to identities"), "{r}");
    let mut t = d.raw();
    assert_eq!(
        say(
            &mut t,
            &format!("AUTH default {}", hs256(claims("default", 60)))
        ),
        "+OK"
    );
    // A secret with a JWT's shape is a token even for the user "default".
    assert_eq!(say(&mut t, "CLIENT GETNAME"), "$7");
    assert_eq!(read_line(&mut t).unwrap(), "default");
}
