//! The command line: argument parsing, start-up, and the exit status.
//!
//! `main` is thin: every start-up failure comes back here as an error with context, is printed
//! as one line on stderr, and becomes a non-zero exit status.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use log::{info, warn};

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::os::activation::{self, ActivationError};
use crate::os::sys;
use crate::server::{Server, StartError};
use crate::telemetry::logging;

const USAGE: &str = "\
vigild: keeps long-lived TCP sessions and reaps dead peers within seconds, with a reason.

Usage:
  vigild [--config PATH]        run (default config: /etc/vigild/vigild.toml)
  vigild --check-config [PATH]  validate a config, print the effective config, exit 0 or 1
  vigild --help | --version

Signals: SIGTERM/SIGINT stop, SIGHUP reloads the config, SIGUSR1 logs statistics.
Logging: log.level in the config, or RUST_LOG (which wins).
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run(PathBuf),
    Check(PathBuf),
    Help,
    Version,
}

/// A command line vigild does not understand.
#[derive(Debug, PartialEq, Eq)]
struct UsageError(String);

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let mut command = None;
    let set = |command: &mut Option<Command>, c: Command| match command {
        Some(_) => Err(UsageError(
            "give only one of --config, --check-config, --help, --version".into(),
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
            "--check-config" => {
                let path = inline
                    .or_else(|| args.next())
                    .unwrap_or_else(|| DEFAULT_CONFIG_PATH.to_string());
                set(&mut command, Command::Check(path.into()))?;
            }
            other => return Err(UsageError(format!("unknown argument '{other}'"))),
        }
    }
    Ok(command.unwrap_or_else(|| Command::Run(DEFAULT_CONFIG_PATH.into())))
}

/// Why vigild did not start (or stopped with an error).
#[derive(Debug)]
enum Failure {
    Usage(UsageError),
    Config(ConfigError),
    Activation(ActivationError),
    Start(StartError),
    Loop(std::io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(UsageError(m)) => write!(f, "{m} (see vigild --help)"),
            Failure::Config(e) => write!(f, "{e}"),
            Failure::Activation(e) => write!(f, "{e}"),
            Failure::Start(e) => write!(f, "{e}"),
            Failure::Loop(e) => write!(f, "event loop failed: {e}"),
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
            eprintln!("vigild: {e}");
            e.exit_code()
        }
    }
}

fn run(args: impl IntoIterator<Item = String>) -> Result<(), Failure> {
    match parse_args(args).map_err(Failure::Usage)? {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("vigild {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Check(path) => {
            let loaded = Config::load(&path).map_err(Failure::Config)?;
            for w in &loaded.warnings {
                eprintln!("vigild: warning: {w}");
            }
            print!("{}", loaded.config.to_toml());
            eprintln!("vigild: {} is valid", path.display());
            Ok(())
        }
        Command::Run(path) => serve(path),
    }
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
        assert_eq!(
            parse(&["--check-config", "b"]).unwrap(),
            Command::Check("b".into())
        );
        assert_eq!(
            parse(&["--check-config"]).unwrap(),
            Command::Check(DEFAULT_CONFIG_PATH.into())
        );
        assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
        assert_eq!(parse(&["-V"]).unwrap(), Command::Version);
        assert!(parse(&["--config"]).unwrap_err().0.contains("needs a PATH"));
        assert!(parse(&["--bogus"]).unwrap_err().0.contains("--bogus"));
        assert!(parse(&["--help", "--version"]).is_err());
    }
}
