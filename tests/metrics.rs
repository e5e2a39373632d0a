//! The metrics endpoint, scraped with a real HTTP client (ureq) and raw sockets, and validated
//! with `promtool check metrics` (Debian package `prometheus`; required when
//! `VIGILD_TESTS_NO_SKIP=1`, as in CI, skipped with a message otherwise).

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use util::{client_id, promtool_check, Daemon};

const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// Scrapes `/metrics`: checks status and content type, returns the body.
fn scrape(d: &Daemon) -> String {
    let mut resp = util::http_agent()
        .get(&d.metrics_url("/metrics"))
        .call()
        .expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    resp.body_mut().read_to_string().expect("body")
}

/// Samples of an exposition: `name{labels}` -> value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a number")))
        .collect()
}

fn sample(s: &HashMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("{key} missing from {:?}", s.keys()))
}

/// One raw HTTP exchange: sends `request`, reads until the server closes (or 5 s).
fn raw(d: &Daemon, request: &[u8]) -> String {
    let mut s = TcpStream::connect(d.ops_listener("metrics")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer and close before it has read everything: that is fine.
    let _ = s.write_all(request);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_scrape_lists_every_metric_and_passes_promtool() {
    let d = Daemon::start(METRICS);
    let body = scrape(&d);
    promtool_check(&body);
    let s = samples(&body);
    assert_eq!(sample(&s, "vigild_sessions_live"), 0.0);
    assert_eq!(sample(&s, "vigild_sessions_peak"), 0.0);
    assert_eq!(sample(&s, "vigild_accepted_total"), 0.0);
    for cause in ["max-connections", "per-ip", "descriptors"] {
        assert_eq!(
            sample(&s, &format!("vigild_rejected_total{{cause=\"{cause}\"}}")),
            0.0
        );
    }
    for reason in [
        "closed",
        "quit",
        "reset",
        "keepalive-timeout",
        "retransmit-timeout",
        "stalled",
        "unreachable",
        "idle-timeout",
        "protocol-error",
        "slow-consumer",
        "killed",
        "replaced",
        "shutdown",
        "error",
    ] {
        assert_eq!(
            sample(&s, &format!("vigild_reaped_total{{reason=\"{reason}\"}}")),
            0.0
        );
        assert_eq!(
            sample(
                &s,
                &format!("vigild_session_lifetime_seconds_count{{reason=\"{reason}\"}}")
            ),
            0.0
        );
    }
    for reason in [
        "keepalive-timeout",
        "retransmit-timeout",
        "unreachable",
        "idle-timeout",
    ] {
        let key =
            format!("vigild_detection_latency_seconds_bucket{{reason=\"{reason}\",le=\"+Inf\"}}");
        assert_eq!(sample(&s, &key), 0.0);
    }
    assert_eq!(sample(&s, "vigild_reloads_total"), 0.0);
    assert_eq!(sample(&s, "vigild_last_reload_success"), 1.0);
    let build = format!(
        "vigild_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&s, &build), 1.0);
    assert!(body.contains("# TYPE vigild_detection_latency_seconds histogram\n"));
    assert!(body.contains("# TYPE vigild_reaped_total counter\n"));

    // A broken reload shows in the reload metrics.
    std::fs::write(&d.config_path, "[keepalive]\nidle = \"nonsense\"\n").unwrap();
    d.signal(libc::SIGHUP);
    d.log
        .wait_for(Duration::from_secs(5), |l| l.contains("reload failed"))
        .expect("reload refused");
    let s = samples(&scrape(&d));
    assert_eq!(sample(&s, "vigild_reloads_total"), 1.0);
    assert_eq!(sample(&s, "vigild_last_reload_success"), 0.0);
}

#[test]
fn counters_and_histograms_follow_reaps() {
    let d = Daemon::start(&format!(
        "[session]\nidle_timeout = \"1s\"\n{METRICS}[admin]\nlisten = \"127.0.0.1:0\"\n"
    ));
    // One quits, one is killed, one stays silent until the idle timeout reaps it.
    let mut quitter = d.redis();
    let quitter_id = client_id(&mut quitter);
    let _: String = redis::cmd("QUIT").query(&mut quitter).unwrap();
    let mut victim = d.redis();
    let victim_id = client_id(&mut victim);
    let mut admin = d.admin();
    let n: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(victim_id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1);
    let silent = TcpStream::connect(d.addr).unwrap();
    let idle = d
        .log
        .wait_for(Duration::from_secs(5), |l| {
            l.contains(" reap ") && l.contains("reason=idle-timeout")
        })
        .map(|l| util::fields(&l))
        .expect("idle reap");
    d.wait_reap(quitter_id, Duration::from_secs(5));
    d.wait_reap(victim_id, Duration::from_secs(5));
    drop(silent);

    let body = scrape(&d);
    promtool_check(&body);
    let s = samples(&body);
    assert_eq!(sample(&s, "vigild_accepted_total"), 3.0);
    assert_eq!(sample(&s, "vigild_sessions_live"), 0.0);
    assert!(sample(&s, "vigild_sessions_peak") >= 1.0);
    for (reason, n) in [
        ("quit", 1.0),
        ("killed", 1.0),
        ("idle-timeout", 1.0),
        ("closed", 0.0),
    ] {
        assert_eq!(
            sample(&s, &format!("vigild_reaped_total{{reason=\"{reason}\"}}")),
            n
        );
        assert_eq!(
            sample(
                &s,
                &format!("vigild_session_lifetime_seconds_count{{reason=\"{reason}\"}}")
            ),
            n
        );
    }
    // The idle reap came 1 s (plus timer slack) after the last byte: exact bucket counts, and
    // the sum is the reap line's silent_ms to the millisecond.
    let bucket = |le: &str| {
        sample(
            &s,
            &format!(
                "vigild_detection_latency_seconds_bucket{{reason=\"idle-timeout\",le=\"{le}\"}}"
            ),
        )
    };
    let silent_ms: f64 = idle["silent_ms"].parse().unwrap();
    assert!((1000.0..1600.0).contains(&silent_ms), "{idle:?}");
    assert_eq!(bucket("0.8"), 0.0);
    assert_eq!(bucket("1.6"), 1.0);
    assert_eq!(bucket("+Inf"), 1.0);
    let sum = sample(
        &s,
        "vigild_detection_latency_seconds_sum{reason=\"idle-timeout\"}",
    );
    assert!(
        (sum * 1000.0 - silent_ms).abs() < 1e-6,
        "{sum} vs {silent_ms}"
    );
    // Killed and quit are not detections: no latency series for them.
    assert!(!body.contains("vigild_detection_latency_seconds_count{reason=\"killed\"}"));
    // The statistics line agrees.
    let stats = d.stats();
    assert_eq!(stats["reap.idle-timeout"], "1");
    assert_eq!(stats["accepted"], "3");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let d = Daemon::start(METRICS);
    let mut s = TcpStream::connect(d.ops_listener("metrics")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Two pipelined requests in one write, then a third after the answers.
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    // Read until both heads and the first body are in.
    loop {
        let text = String::from_utf8_lossy(&got);
        if text.matches("HTTP/1.1 200 OK").count() == 2 && text.ends_with("\r\n\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "incomplete: {text}");
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {text}");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let (first, second) = text.split_at(text.rfind("HTTP/1.1 200 OK").unwrap());
    let length: usize = first
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let body = first.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body.len(), length, "the GET body is exactly Content-Length");
    assert!(
        second.contains(&format!("Content-Length: {length}\r\n")),
        "HEAD: same length"
    );
    assert!(second.ends_with("\r\n\r\n"), "HEAD: no body");
    assert!(first.contains("Connection: keep-alive\r\n"));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.contains("Connection: close\r\n"));
    assert!(rest.contains("vigild_sessions_live 0\n"));
}

#[test]
fn wrong_paths_methods_and_malformed_or_huge_requests_do_not_harm_the_loop() {
    let mut d = Daemon::start(METRICS);
    let mut con = d.redis();

    // `/` is the status page since issue 18 (tests/status_page.rs); other paths are 404.
    let resp = util::http_agent()
        .get(&d.metrics_url("/nope"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = util::http_agent()
        .get(&d.metrics_url("/metrics/extra"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = util::http_agent()
        .post(&d.metrics_url("/metrics"))
        .send("x=1")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD")
    );
    let resp = util::http_agent()
        .delete(&d.metrics_url("/metrics"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    // Junk, a TLS hello and a Redis command: 400, then the connection is closed.
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"\x16\x03\x01\x00\xa5\x01\x00\x00",
        b"PING\r\n",
    ] {
        let reply = raw(&d, junk);
        assert!(
            reply.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{junk:?}: {reply}"
        );
        assert!(reply.contains("Connection: close\r\n"), "{reply}");
    }
    // A 1 MiB header with no end: 431 once 8 KiB have arrived, then closed.
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Junk: ".to_vec();
    huge.resize(1 << 20, b'a');
    let reply = raw(&d, &huge);
    assert!(
        reply.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{reply}"
    );
    // A half request that never ends holds nothing up: other scrapes and sessions go on.
    let mut stalled = TcpStream::connect(d.ops_listener("metrics")).unwrap();
    stalled.write_all(b"GET /metr").unwrap();
    let started = Instant::now();
    let body = scrape(&d);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(body.contains("vigild_sessions_live 1\n"), "{body}");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "vigild is still running"
    );
    drop(stalled);
}
