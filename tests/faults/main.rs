//! The fault-injection suite: every way a peer can end, made real on the kernel, against the
//! real `vigild` binary. Each case runs on its own thread, in its own private network
//! namespace (`unshare(CLONE_NEWNET)` moves just that thread; the daemon, `nft` and the
//! client sockets it starts inherit it), so rules and links never touch the host and vanish
//! with the case. Cases run in parallel; the mass partition runs alone afterwards, so its
//! round-trip measurement is not disturbed by the others.
//!
//! A test binary of its own with `harness = false` (libtest would share threads between
//! tests and cannot print the matrix). `cargo test --test faults [FILTER...]` runs it; names
//! containing a FILTER run, all when none is given; `--list`, `--exact` and `--skip` work as
//! in libtest.
//!
//! Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and `nft`. Without them every case is
//! skipped with a loud message, unless `VIGILD_TESTS_NO_SKIP=1`, which makes the skip a
//! failure (CI sets it).

#[path = "../util/mod.rs"]
mod util;

mod check;
mod client;
mod dead;
mod ends;
mod mass;
mod presence;
mod suspect;
mod tls;
mod window;

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use check::Row;
use util::netns;

/// One fault case.
struct Case {
    name: &'static str,
    fault: &'static str,
    run: fn() -> Row,
    /// Runs after the parallel group, on its own.
    alone: bool,
}

const fn case(name: &'static str, fault: &'static str, run: fn() -> Row) -> Case {
    Case {
        name,
        fault,
        run,
        alone: false,
    }
}

const CASES: &[Case] = &[
    case(
        "partition_idle",
        "partition, idle session",
        dead::partition_idle,
    ),
    case(
        "crash_and_reboot",
        "crash and reboot (TCP_REPAIR close)",
        dead::crash_and_reboot,
    ),
    case(
        "reply_in_flight",
        "partition, reply unacknowledged, user_timeout auto",
        dead::reply_in_flight,
    ),
    case(
        "reply_in_flight_without_user_timeout",
        "the same, user_timeout \"0s\"",
        dead::reply_in_flight_without_user_timeout,
    ),
    case(
        "icmp_reply_in_flight",
        "ICMP host-unreachable, reply in flight",
        dead::icmp_reply_in_flight,
    ),
    case(
        "icmp_idle",
        "ICMP host-unreachable, idle session",
        dead::icmp_idle,
    ),
    case(
        "slow_consumer",
        "zero window, replies above max_output_bytes",
        window::slow_consumer,
    ),
    case(
        "stalled_in_user_space",
        "zero window, 16 MiB of replies below max_output_bytes",
        window::stalled_in_user_space,
    ),
    case(
        "stalled_in_kernel",
        "zero window, 512 KiB of replies all in the kernel",
        window::stalled_in_kernel,
    ),
    case(
        "presence_partition",
        "partition, idle session, seen by a presence watcher",
        presence::partition_presence,
    ),
    case(
        "suspect_then_reaped",
        "partition, idle session, watched in CLIENT LIST",
        suspect::suspect_then_reaped,
    ),
    case(
        "suspect_then_heals",
        "partition healed after the first probe",
        suspect::suspect_then_heals,
    ),
    case(
        "graceful_close",
        "graceful close (FIN)",
        ends::graceful_close,
    ),
    case(
        "abortive_close",
        "abortive close (SO_LINGER 0)",
        ends::abortive_close,
    ),
    case(
        "half_close",
        "half-close: PING, then shutdown(WR)",
        ends::half_close,
    ),
    case(
        "idle_timeout",
        "idle timeout (application, 3 s)",
        ends::idle_timeout,
    ),
    case(
        "tls_partition_idle",
        "TLS: partition, idle session",
        tls::tls_partition_idle,
    ),
    case(
        "tls_reply_in_flight",
        "TLS: partition, reply unacknowledged",
        tls::tls_reply_in_flight,
    ),
    case(
        "tls_reset",
        "TLS: abortive close (SO_LINGER 0)",
        tls::tls_reset,
    ),
    case(
        "tls_close_notify",
        "TLS: close_notify",
        tls::tls_close_notify,
    ),
    case(
        "tls_handshake_stall",
        "TLS: handshake cut by a partition (timeout 2 s)",
        tls::tls_handshake_stall,
    ),
    Case {
        name: "mass_partition",
        fault: "mass partition: 2,000 sessions from 127.0.0.2",
        run: mass::mass_partition,
        alone: true,
    },
];

/// No case may take longer than this; a case past it fails the suite (its daemon dies with
/// the process: it was started with PR_SET_PDEATHSIG).
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

type Outcome = Result<Row, String>;

/// Runs `cases` in parallel, each on a thread in its own namespace.
fn run_parallel(cases: &[&'static Case]) -> Vec<(&'static Case, Outcome)> {
    let (tx, rx) = mpsc::channel();
    for (i, case) in cases.iter().enumerate() {
        let done = tx.clone();
        let run = case.run;
        let spawned = thread::Builder::new()
            .name(case.name.into())
            .spawn(move || {
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                    netns::enter_private().expect("private network namespace");
                    run()
                }))
                .map_err(|payload| {
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into())
                });
                let _ = done.send((i, outcome));
            });
        if let Err(e) = spawned {
            let _ = tx.send((i, Err(format!("cannot start its thread: {e}"))));
        }
    }
    drop(tx);
    let deadline = Instant::now() + CASE_TIMEOUT;
    let mut outcomes: Vec<Option<Outcome>> = cases.iter().map(|_| None).collect();
    while outcomes.iter().any(Option::is_none) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, outcome)) => outcomes[i] = Some(outcome),
            Err(_) => break,
        }
    }
    cases
        .iter()
        .zip(outcomes)
        .map(|(case, o)| {
            let o = o.unwrap_or_else(|| Err(format!("did not finish within {CASE_TIMEOUT:?}")));
            (*case, o)
        })
        .collect()
}

fn print_matrix(results: &[(&'static Case, Outcome)]) {
    println!();
    println!("| fault | expected | got | test clock | daemon silent_ms | bound | evidence |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (case, outcome) in results {
        match outcome {
            Ok(r) => println!(
                "| {} | {} | {} | {} ms | {} | {} | {} |",
                case.fault,
                r.expected,
                r.got,
                r.test_ms,
                r.daemon_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
                r.bound,
                r.note
            ),
            Err(e) => println!(
                "| {} | FAILED | {} | | | | |",
                case.fault,
                e.lines().next().unwrap_or("")
            ),
        }
    }
    println!();
}

/// What to run, from libtest-style arguments: names containing any FILTER (all when none),
/// `--exact`, `--skip NAME`, `--list`; `--ignored` selects nothing (no case is ignored);
/// other flags (`--nocapture`, `--test-threads N`, ...) are accepted and ignored.
struct Selection {
    list: bool,
    cases: Vec<&'static Case>,
}

fn select(args: &[String]) -> Selection {
    const TAKES_VALUE: &[&str] = &[
        "--test-threads",
        "--skip",
        "--format",
        "--color",
        "--logfile",
        "--shuffle-seed",
        "-Z",
    ];
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let (mut exact, mut only_ignored, mut list) = (false, false, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--skip" => skips.extend(it.next().cloned()),
            "--exact" => exact = true,
            "--ignored" => only_ignored = true,
            "--list" => list = true,
            flag if TAKES_VALUE.contains(&flag) => {
                it.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_string()),
        }
    }
    let matches = |name: &str, pattern: &str| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let cases = CASES
        .iter()
        .filter(|_| !only_ignored)
        .filter(|c| filters.is_empty() || filters.iter().any(|f| matches(c.name, f)))
        .filter(|c| !skips.iter().any(|s| matches(c.name, s)))
        .collect();
    Selection { list, cases }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Selection {
        list,
        cases: selected,
    } = select(&args);
    if list {
        for case in &selected {
            println!("{}: test", case.name);
        }
        return ExitCode::SUCCESS;
    }
    if selected.is_empty() {
        println!("faults: no case matches {args:?}");
        return ExitCode::SUCCESS;
    }
    if let Err(why) = netns::probe() {
        let required = util::no_skip();
        eprintln!(
            "\n{bar}\n!!! SKIPPED: {} fault-injection cases need root, private network \
             namespaces and nft:\n!!! {why}\n!!! Dead-peer detection is NOT verified by this \
             run.{}\n{bar}\n",
            selected.len(),
            if required {
                "\n!!! VIGILD_TESTS_NO_SKIP=1: a skip is a failure."
            } else {
                ""
            },
            bar = "!".repeat(78)
        );
        return if required {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }

    let started = Instant::now();
    let (alone, parallel): (Vec<_>, Vec<_>) = selected.into_iter().partition(|c| c.alone);
    println!(
        "faults: {} cases in parallel, then {} alone",
        parallel.len(),
        alone.len()
    );
    let mut results = run_parallel(&parallel);
    for case in alone {
        results.extend(run_parallel(&[case]));
    }
    print_matrix(&results);
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, o)| o.is_err())
        .map(|(c, _)| c.name)
        .collect();
    println!(
        "faults: {} passed, {} failed {:?} in {:.1} s",
        results.len() - failed.len(),
        failed.len(),
        failed,
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
