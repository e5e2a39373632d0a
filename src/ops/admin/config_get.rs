//! `CONFIG GET pattern ...` on the admin listener: the effective config as dotted keys, matched
//! with a case-insensitive glob, secrets hidden.

use crate::config::Config;
use crate::protocol::args::Args;
use crate::protocol::resp::Proto;

use super::View;

pub(super) fn config_command(args: Args<'_>, view: &View<'_>, proto: Proto, out: &mut Vec<u8>) {
    crate::protocol::probe::config_command(
        args,
        proto,
        out,
        || config_pairs(view.config),
        |sub| {
            format!(
                "ERR CONFIG {sub} is not supported: edit {} and send SIGHUP to reload it",
                view.config_path.display()
            )
        },
    );
}

/// The effective config as `(dotted key, value)` pairs ([`Config::dotted`]), values as text,
/// secrets not shown.
fn config_pairs(config: &Config) -> Vec<(String, String)> {
    config
        .dotted()
        .into_iter()
        .map(|(k, v)| {
            let text = shown(&k, &v);
            (k, text)
        })
        .collect()
}

/// A value as `CONFIG GET` shows it: arrays space-separated (as Redis shows `bind`), secrets
/// as `(hidden)`.
pub(super) fn shown(key: &str, v: &toml::Value) -> String {
    let name = key.rsplit('.').next().unwrap_or(key);
    if name.contains("password") || name.contains("secret") {
        "(hidden)".to_string()
    } else {
        value_text(v)
    }
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}
