//! The command line: argument parsing, start-up, and the exit status.
//!
//! `main` is thin: every start-up failure comes back here as an error with context, is printed
//! as one line on stderr, and becomes a non-zero exit status.
//!
//! Every line printed here goes through `journal::say` (`telemetry/journal.rs`) with its
//! priority, so under journald the fatal start-up error is stored at err (3), config warnings
//! at warning (4) and the rest at info (6); the logger does the same for its own lines
//! (`telemetry/logging.rs`).

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use log::{info, warn};

use crate::config::{credentials, timers, Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::os::activation::{self, ActivationError};
use crate::os::sys;
use crate::server::{Server, StartError};
use crate::telemetry::journal::{self, Priority, Stream};
use crate::telemetry::logging;

const USAGE: &str = "\
vigild: keeps long-lived TCP sessions and reaps dead peers within seconds, with a reason.

Usage:
  vigild [--config PATH]        run (default config: /etc/vigild/vigild.toml)
  vigild --check-config [PATH]  validate a config and say what its timers mean, exit 0 or 1
         [--quiet]              ... only warnings and the one line saying it is valid
         [--verbose]            ... the effective config instead, as --print-config
  vigild --print-config [PATH]  validate a config and print the effective config
  vigild --help | --version

Signals: SIGTERM/SIGINT stop, SIGHUP reloads the config, SIGUSR1 logs statistics.
Logging: log.level in the config, or RUST_LOG (which wins).
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run(PathBuf),
    Check(PathBuf, Detail),
    Help,
    Version,
}

/// How much a config check prints besides warnings and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// `--check-config --quiet`: the one line saying the file is valid (for `ExecStartPre`,
    /// where the daemon logs the timer summary itself a moment later).
    Quiet,
    /// `--check-config`: that line and what the timers mean.
    Timers,
    /// `--print-config`, `--check-config --verbose`: the effective config as TOML.
    Config,
}

/// A command line vigild does not understand.
#[derive(Debug, PartialEq, Eq)]
struct UsageError(String);

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut args = args.into_iter().peekable();
    let mut command = None;
    // (--quiet or --verbose as given, its Detail)
    let mut detail: Option<(String, Detail)> = None;
    let mut print_config = false;
    // --check-config came without a PATH: a later bare argument is it.
    let mut path_pending = false;
    let set = |command: &mut Option<Command>, c: Command| match command {
        Some(_) => Err(UsageError(
            "give only one of --config, --check-config, --print-config, --help, --version".into(),
        )),
        None => {
            *command = Some(c);
            Ok(())
        }
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => set(&mut command, Command::Help)?,
            "-V" | "--version" => set(&mut command, Command::Version)?,
            "-c" | "--config" => {
                let path = inline
                    .or_else(|| args.next())
                    .ok_or_else(|| UsageError(format!("{flag} needs a PATH")))?;
                set(&mut command, Command::Run(path.into()))?;
            }
            "--check-config" | "--print-config" => {
                // The PATH is optional, so a following flag is not taken for it.
                let path = inline.or_else(|| args.next_if(|a| !a.starts_with('-')));
                path_pending = path.is_none();
                let path = path.unwrap_or_else(|| DEFAULT_CONFIG_PATH.to_string());
                print_config = flag == "--print-config";
                set(&mut command, Command::Check(path.into(), Detail::Timers))?;
            }
            "-q" | "--quiet" | "-v" | "--verbose" => {
                let d = if flag.contains('q') {
                    Detail::Quiet
                } else {
                    Detail::Config
                };
                if detail.replace((flag.clone(), d)).is_some() {
                    return Err(UsageError("give only one of --quiet, --verbose".into()));
                }
            }
            path if path_pending && !path.starts_with('-') => {
                path_pending = false;
                command = Some(Command::Check(path.into(), Detail::Timers));
            }
            other => return Err(UsageError(format!("unknown argument '{other}'"))),
        }
    }
    match (command, detail) {
        (Some(Command::Check(path, _)), None) if print_config => {
            Ok(Command::Check(path, Detail::Config))
        }
        (Some(Command::Check(path, _)), Some((_, d))) if !print_config => {
            Ok(Command::Check(path, d))
        }
        (Some(Command::Check(path, _)), Some((_, Detail::Config))) => {
            Ok(Command::Check(path, Detail::Config))
        }
        (command, None) => Ok(command.unwrap_or_else(|| Command::Run(DEFAULT_CONFIG_PATH.into()))),
        (_, Some((flag, _))) => Err(UsageError(format!("{flag} goes with --check-config"))),
    }
}

/// Why vigild did not start (or stopped with an error).
#[derive(Debug)]
enum Failure {
    Usage(UsageError),
    Config(ConfigError),
    Activation(ActivationError),
    Start(StartError),
    Loop(std::io::Error),
    /// `--check-config`: a TLS file cannot be used.
    Tls(crate::config::credentials::CredentialError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(UsageError(m)) => write!(f, "{m} (see vigild --help)"),
            Failure::Config(e) => write!(f, "{e}"),
            Failure::Activation(e) => write!(f, "{e}"),
            Failure::Start(e) => write!(f, "{e}"),
            Failure::Loop(e) => write!(f, "event loop failed: {e}"),
            Failure::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }
}

/// The program: parses arguments, runs, and maps the outcome to an exit status.
pub fn main() -> ExitCode {
    match run(std::env::args().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            journal::say(Stream::Stderr, Priority::Error, &format!("vigild: {e}"));
            e.exit_code()
        }
    }
}

fn run(args: impl IntoIterator<Item = String>) -> Result<(), Failure> {
    match parse_args(args).map_err(Failure::Usage)? {
        Command::Help => {
            journal::say(Stream::Stdout, Priority::Info, USAGE);
            Ok(())
        }
        Command::Version => {
            let version = format!("vigild {}", env!("CARGO_PKG_VERSION"));
            journal::say(Stream::Stdout, Priority::Info, &version);
            Ok(())
        }
        Command::Check(path, detail) => check(&path, detail),
        Command::Run(path) => serve(path),
    }
}

/// `--check-config` and `--print-config`: warnings on stderr, then what `detail` asks for.
fn check(path: &std::path::Path, detail: Detail) -> Result<(), Failure> {
    let loaded = Config::load(path).map_err(Failure::Config)?;
    for w in &loaded.warnings {
        journal::say(
            Stream::Stderr,
            Priority::Warning,
            &format!("vigild: warning: {w}"),
        );
    }
    // The TLS files, as the daemon would read them at start.
    let tls = &loaded.config.tls;
    let credentials = if tls.enabled() {
        let tickets = credentials::new_ticketer().map_err(|message| {
            Failure::Tls(credentials::CredentialError {
                key: "tls",
                path: path.to_owned(),
                message,
            })
        })?;
        let c = credentials::load(tls, tickets, SystemTime::now()).map_err(Failure::Tls)?;
        if let Some(w) = credentials::expiry_warning(&c, SystemTime::now()) {
            journal::say(
                Stream::Stderr,
                Priority::Warning,
                &format!("vigild: warning: {w}"),
            );
        }
        Some(c)
    } else {
        None
    };
    let valid = format!("vigild: {} is valid", path.display());
    match detail {
        // As before issue 14: stdout is the config alone, so it can be saved and reused.
        Detail::Config => {
            journal::say(Stream::Stdout, Priority::Info, &loaded.config.to_toml());
            journal::say(Stream::Stderr, Priority::Info, &valid);
        }
        Detail::Quiet | Detail::Timers => {
            let mut text = format!("{valid}: {}\n", timers::headline(&loaded.config));
            if detail == Detail::Timers {
                for line in timers::summary(&loaded.config) {
                    text.push_str(&format!("  {line}\n"));
                }
                if let Some(c) = &credentials {
                    text.push_str(&format!(
                        "  {}\n",
                        credentials::describe(c, tls, SystemTime::now())
                    ));
                }
            }
            journal::say(Stream::Stdout, Priority::Info, &text);
        }
    }
    Ok(())
}

fn serve(path: PathBuf) -> Result<(), Failure> {
    let loaded = Config::load(&path).map_err(Failure::Config)?;
    let level_source = logging::init(loaded.config.log.level);
    info!(
        "vigild {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
    for w in &loaded.warnings {
        warn!("config: {w}");
    }
    // What the timers mean, once (not on reload): the lines `--check-config` prints.
    for line in timers::summary(&loaded.config) {
        info!("{line}");
    }
    // Before any thread exists (it edits the environment) and before the listeners would be
    // bound: passed listeners replace them.
    let activated = activation::from_env().map_err(Failure::Activation)?;
    let max_connections = loaded.config.server.max_connections;
    match sys::raise_nofile_limit() {
        Ok(lim) => {
            // Listeners, the poller, the signal pipe, stdio and the reserve take a few.
            let capacity = lim.soft.saturating_sub(16);
            info!(
                "file descriptors: soft limit {} (was {}), hard {}: room for about {capacity} sessions",
                lim.soft, lim.before, lim.hard
            );
            if (max_connections as u64) > capacity {
                warn!(
                    "server.max_connections = {max_connections} exceeds what the descriptor limit allows (about {capacity}); connections past it are refused as out of descriptors. Raise LimitNOFILE= or lower max_connections"
                );
            }
        }
        Err(e) => warn!("cannot raise RLIMIT_NOFILE: {e}"),
    }
    let mut server =
        Server::new(loaded.config, path, level_source, activated).map_err(Failure::Start)?;
    let ka = server.keepalive_summary();
    info!("ready: {ka}");
    server.run().map_err(Failure::Loop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Command, UsageError> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse(&[]).unwrap(),
            Command::Run(DEFAULT_CONFIG_PATH.into())
        );
        assert_eq!(
            parse(&["--config", "a.toml"]).unwrap(),
            Command::Run("a.toml".into())
        );
        assert_eq!(
            parse(&["--config=a.toml"]).unwrap(),
            Command::Run("a.toml".into())
        );
        assert_eq!(
            parse(&["-c", "a.toml"]).unwrap(),
            Command::Run("a.toml".into())
        );
        let check = |p: &str, d| Command::Check(p.into(), d);
        assert_eq!(
            parse(&["--check-config", "b"]).unwrap(),
            check("b", Detail::Timers)
        );
        assert_eq!(
            parse(&["--check-config"]).unwrap(),
            check(DEFAULT_CONFIG_PATH, Detail::Timers)
        );
        assert_eq!(
            parse(&["--check-config", "--quiet", "b"]).unwrap(),
            check("b", Detail::Quiet)
        );
        assert_eq!(
            parse(&["--check-config", "--quiet"]).unwrap(),
            check(DEFAULT_CONFIG_PATH, Detail::Quiet)
        );
        assert!(parse(&["--check-config", "a", "b"]).is_err());
        assert_eq!(
            parse(&["--check-config=b", "-q"]).unwrap(),
            check("b", Detail::Quiet)
        );
        assert_eq!(
            parse(&["--quiet", "--check-config", "b"]).unwrap(),
            check("b", Detail::Quiet)
        );
        assert_eq!(
            parse(&["--check-config", "b", "--verbose"]).unwrap(),
            check("b", Detail::Config)
        );
        assert_eq!(
            parse(&["--print-config", "b"]).unwrap(),
            check("b", Detail::Config)
        );
        assert_eq!(
            parse(&["--print-config", "-v"]).unwrap(),
            check(DEFAULT_CONFIG_PATH, Detail::Config)
        );
        assert!(parse(&["--print-config", "b", "--quiet"]).is_err());
        assert!(parse(&["--check-config", "b", "-q", "-v"]).is_err());
        assert!(parse(&["--config", "a", "--quiet"]).is_err());
        assert!(parse(&["--quiet"]).is_err());
        assert!(parse(&["--check-config", "a", "--print-config", "b"]).is_err());
        assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
        assert_eq!(parse(&["-V"]).unwrap(), Command::Version);
        assert!(parse(&["--config"]).unwrap_err().0.contains("needs a PATH"));
        assert!(parse(&["--bogus"]).unwrap_err().0.contains("--bogus"));
        assert!(parse(&["--help", "--version"]).is_err());
    }
}
