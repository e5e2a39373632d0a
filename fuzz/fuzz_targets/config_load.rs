//! Fuzzes the config loader: any text, valid TOML or not, gives a `Config` or a `ConfigError`,
//! never a panic; an error is one line naming the file; a config that loads renders with
//! `to_toml` to text that loads back to the same `Config`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vigild::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    match Config::parse(text, path) {
        Ok(loaded) => {
            let again = Config::parse(&loaded.config.to_toml(), path)
                .unwrap_or_else(|e| panic!("to_toml output does not load: {e}"));
            assert_eq!(again.config, loaded.config);
        }
        Err(e) => {
            let line = e.to_string();
            assert!(line.starts_with("fuzz.toml: "), "{line}");
            assert!(!line.contains('\n'), "{line:?}");
        }
    }
});
