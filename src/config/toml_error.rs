//! The toml crate's parse errors as one line that names the key, for the operator fixing the
//! file (the crate's own `Display` is a multi-line caret picture without the key).

/// The toml crate's error as one line: `line L, column C: table.key: message`. The crate's
/// own `Display` draws a multi-line caret picture and does not expose the key, so the key is
/// recovered from the text around the error's position.
pub(super) fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let Some(span) = err.span() else {
        return message;
    };
    let offset = span.start.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    match key_at(text, line - 1) {
        Some(key) => format!("line {line}, column {column}: {key}: {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// The dotted key of the statement on line `index` (0-based): the nearest `key =` at or above
/// it, prefixed with the `[table]` it sits in; for a header line, the header itself.
fn key_at(text: &str, index: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(index + 1).collect();
    let mut key = None;
    for line in lines.iter().rev() {
        let line = line.trim_start();
        if let Some(header) = header_name(line) {
            return Some(match key {
                Some(key) => format!("{header}.{key}"),
                None => header,
            });
        }
        if key.is_none() {
            key = line.split_once('=').and_then(|(k, _)| bare_key(k));
        }
    }
    key
}

fn header_name(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    bare_key(inner.split(']').next()?)
}

/// `a.b` from ` a . b `, or None if this is not a plain dotted key (so not a key at all here).
fn bare_key(text: &str) -> Option<String> {
    let key: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    (!key.is_empty() && key.chars().all(plain)).then_some(key)
}
