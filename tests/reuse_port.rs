//! `server.reuse_port`: two daemons share one port with `SO_REUSEPORT` and the kernel spreads
//! connections across both; without the option the second daemon cannot bind and says why.

mod util;

use std::process::{Command, Stdio};

use util::{complete_config, vigild_bin, Daemon, TempDir};

/// Connections opened against the shared port. With a fair two-way hash the chance that all of
/// them land on one daemon is 2^-(N-1): never, for practical purposes.
const CLIENTS: usize = 64;

#[test]
fn two_daemons_share_a_port_and_both_get_sessions() {
    let a = Daemon::start("[server]\nreuse_port = true\n");
    let shared = format!("[server]\nlisten = [\"{}\"]\nreuse_port = true\n", a.addr);
    let b = Daemon::start(&shared);
    assert_eq!(a.addr, b.addr, "both listen on the same address");

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut con = a.redis();
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        clients.push(con);
    }
    let live_a: usize = a.stats()["live"].parse().unwrap();
    let live_b: usize = b.stats()["live"].parse().unwrap();
    assert_eq!(
        live_a + live_b,
        CLIENTS,
        "every session is held by one of them"
    );
    assert!(
        live_a > 0 && live_b > 0,
        "the kernel spread sessions over both: a={live_a} b={live_b}"
    );
}

#[test]
fn without_reuse_port_the_second_daemon_cannot_bind() {
    let a = Daemon::start("[server]\nreuse_port = true\n");
    let dir = TempDir::new("no-reuse");
    let path = dir.path().join("vigild.toml");
    // The second daemon does not ask to share the port: the kernel refuses the bind even
    // though the first one set SO_REUSEPORT.
    std::fs::write(
        &path,
        complete_config(&format!("[server]\nlisten = [\"{}\"]\n", a.addr)),
    )
    .unwrap();
    let out = Command::new(vigild_bin())
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run vigild");
    assert!(!out.status.success(), "the second daemon must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {}", a.addr)) && stderr.contains("in use"),
        "{stderr}"
    );
}
