//! Fuzzes the config loader: any text, valid TOML or not, gives a `Config` or a `ConfigError`,
//! never a panic; an error is one line naming the file; a config that loads renders with
//! `to_toml` to text that loads back to the same `Config` (an inline password is rendered
//! redacted, so it is only checked to stay an inline password).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vigild::config::PasswordSource;
use vigild::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    match Config::parse(text, path) {
        Ok(loaded) => {
            let mut want = loaded.config;
            let text = want.to_toml();
            let mut again = Config::parse(&text, path)
                .unwrap_or_else(|e| panic!("to_toml output does not load: {e}\n{text}"))
                .config;
            if want.server.password.as_ref().map(|p| &p.source) == Some(&PasswordSource::Inline) {
                assert!(!text.contains("password = \"\""), "{text}");
                assert_eq!(
                    again.server.password.take().map(|p| p.source),
                    Some(PasswordSource::Inline)
                );
                want.server.password = None;
            }
            assert_eq!(again, want);
        }
        Err(e) => {
            let line = e.to_string();
            assert!(line.starts_with("fuzz.toml: "), "{line}");
            assert!(!line.contains('\n'), "{line:?}");
        }
    }
});
