//! The `[token]` table: signed-token identities (JWTs, verified with the `jsonwebtoken` crate).
//! Tokens are on when any key source is set: an HS256 shared secret (`secret_file`), a PEM
//! public key (`public_key_file`: RS256/RS384/RS512, ES256/ES384 or EdDSA by its type), or a
//! JWKS document (`jwks_file`, keys picked by `kid`). The files are read when the config is
//! (at start and at every SIGHUP, so a JWKS rotation is a file replace and a reload), bounded
//! like every file vigild reads (`os/small_file.rs`).
//!
//! What the keys are allowed to verify is fixed here, from the key, never from the token: a
//! token whose header names another algorithm is refused. So an HS256 token "signed" with the
//! RS256 public key as its secret (algorithm confusion) finds no HS key to check against, and
//! `alg: none` is not an algorithm at all. Verifying is `protocol/token_check.rs`.

use std::fmt;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};

use crate::config::duration::DurationValue;
use crate::config::secret;
use crate::config::validate::Check;
use crate::config::ConfigError;
use crate::os::small_file;

pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
pub const DEFAULT_EXPIRY_GRACE: Duration = Duration::ZERO;
/// The longest leeway or grace: past a few minutes it is no longer a clock-skew allowance.
pub const MAX_SLACK: Duration = Duration::from_secs(600);
/// Largest public key file; largest JWKS document.
const MAX_KEY_BYTES: u64 = 64 * 1024;
const MAX_JWKS_BYTES: u64 = 1024 * 1024;
/// An HS256 key shorter than the hash (32 bytes) is refused (RFC 7518, 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// A verification key and the algorithms it may check.
#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
    /// The JWKS `kid`, for keys from `jwks_file`.
    pub kid: Option<String>,
}

/// The keys tokens are checked against. `Debug` never shows them.
#[derive(Clone, Default)]
pub struct TokenKeys {
    pub keys: Vec<Key>,
    /// A digest of the files' bytes: two loads are equal when the files were.
    digest: u64,
}

impl TokenKeys {
    /// Keys made in a unit test, not read from files.
    #[cfg(test)]
    pub fn for_tests(keys: Vec<Key>) -> TokenKeys {
        TokenKeys { keys, digest: 1 }
    }
}

impl PartialEq for TokenKeys {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.keys.len() == other.keys.len()
    }
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKeys(<{} keys>)", self.keys.len())
    }
}

/// The checked `[token]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenConfig {
    pub secret_file: Option<PathBuf>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    /// Required `aud` when set.
    pub audience: Option<String>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// A session whose token expired is reaped (`auth-expired`) this long after `exp`.
    pub expiry_grace: Duration,
    pub keys: TokenKeys,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            secret_file: None,
            public_key_file: None,
            jwks_file: None,
            audience: None,
            issuer: None,
            leeway: DEFAULT_LEEWAY,
            expiry_grace: DEFAULT_EXPIRY_GRACE,
            keys: TokenKeys::default(),
        }
    }
}

impl TokenConfig {
    /// Whether tokens are on (a key source is set).
    pub fn enabled(&self) -> bool {
        !self.keys.keys.is_empty()
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [token] table")]
pub(super) struct RawToken {
    pub(super) secret_file: Option<String>,
    pub(super) public_key_file: Option<String>,
    pub(super) jwks_file: Option<String>,
    pub(super) audience: Option<String>,
    pub(super) issuer: Option<String>,
    pub(super) leeway: Option<DurationValue>,
    pub(super) expiry_grace: Option<DurationValue>,
}

fn read(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    small_file::read_regular(path, cap).map_err(|e| match e {
        small_file::ReadError::TooLarge => {
            format!("{} is larger than {} KiB", path.display(), cap / 1024)
        }
        e => format!("{}: {e}", path.display()),
    })
}

/// The key in a PEM public key file, and the algorithms its type allows.
fn public_key(pem: &[u8]) -> Result<Key, String> {
    let (key, algorithms) = if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        (k, vec![Algorithm::ES256, Algorithm::ES384])
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (k, vec![Algorithm::EdDSA])
    } else if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (
            k,
            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        )
    } else {
        return Err(
            "holds no RSA, EC (P-256/P-384) or Ed25519 public key in PEM (\"-----BEGIN PUBLIC \
             KEY-----\")"
                .into(),
        );
    };
    Ok(Key {
        key,
        algorithms,
        kid: None,
    })
}

/// The keys of a JWKS document: every key with a `kid` and a usable algorithm.
fn jwks(text: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet =
        serde_json::from_slice(text).map_err(|e| format!("is not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let Some(kid) = jwk.common.key_id.clone() else {
            return Err(format!(
                "key {i} has no \"kid\"; tokens pick their key by it"
            ));
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        let algorithm = match &jwk.common.key_algorithm {
            Some(a) => a
                .to_string()
                .parse::<Algorithm>()
                .map_err(|_| format!("key {kid:?}: algorithm {a:?} cannot verify a token"))?,
            None => match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => {
                    return Err(format!(
                        "key {kid:?}: symmetric keys do not belong in a JWKS file; use \
                         token.secret_file"
                    ))
                }
            },
        };
        if matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(format!(
                "key {kid:?}: symmetric keys do not belong in a JWKS file; use token.secret_file"
            ));
        }
        keys.push(Key {
            key,
            algorithms: vec![algorithm],
            kid: Some(kid),
        });
    }
    if keys.is_empty() {
        return Err("holds no keys".into());
    }
    Ok(keys)
}

impl TokenConfig {
    pub(super) fn from_raw(raw: RawToken, check: &Check<'_>) -> Result<Self, ConfigError> {
        let secret_file = check.optional_file(raw.secret_file);
        let public_key_file = check.optional_file(raw.public_key_file);
        let jwks_file = check.optional_file(raw.jwks_file);
        let slack = |key: &str, v: Option<DurationValue>, default: Duration| {
            let d = check.duration(key, v)?.unwrap_or(default);
            if d > MAX_SLACK {
                return Err(check.invalid(
                    key,
                    "is longer than 10m; it allows for clock skew, not a policy",
                ));
            }
            Ok(d)
        };
        let leeway = slack("token.leeway", raw.leeway, DEFAULT_LEEWAY)?;
        let expiry_grace = slack("token.expiry_grace", raw.expiry_grace, DEFAULT_EXPIRY_GRACE)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let mut keys = Vec::new();
        if let Some(path) = &secret_file {
            let secret = secret::read_password_file(path)
                .map_err(|m| check.invalid("token.secret_file", m))?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(check.invalid(
                    "token.secret_file",
                    format!(
                        "{} holds {} bytes; an HS256 secret must be at least {MIN_SECRET_BYTES} \
                         (RFC 7518, 3.2)",
                        path.display(),
                        secret.len()
                    ),
                ));
            }
            secret.hash(&mut hasher);
            keys.push(Key {
                key: DecodingKey::from_secret(&secret),
                algorithms: vec![Algorithm::HS256],
                kid: None,
            });
        }
        if let Some(path) = &public_key_file {
            let pem =
                read(path, MAX_KEY_BYTES).map_err(|m| check.invalid("token.public_key_file", m))?;
            pem.hash(&mut hasher);
            keys.push(public_key(&pem).map_err(|m| {
                check.invalid("token.public_key_file", format!("{} {m}", path.display()))
            })?);
        }
        if let Some(path) = &jwks_file {
            let text =
                read(path, MAX_JWKS_BYTES).map_err(|m| check.invalid("token.jwks_file", m))?;
            text.hash(&mut hasher);
            keys.extend(jwks(&text).map_err(|m| {
                check.invalid("token.jwks_file", format!("{} {m}", path.display()))
            })?);
        }
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(TokenConfig {
            secret_file,
            public_key_file,
            jwks_file,
            audience: nonempty(raw.audience),
            issuer: nonempty(raw.issuer),
            leeway,
            expiry_grace,
            keys: TokenKeys {
                digest: if keys.is_empty() { 0 } else { hasher.finish() },
                keys,
            },
        })
    }

    pub(super) fn to_raw(&self) -> RawToken {
        let path = |p: &Option<PathBuf>| {
            Some(
                p.as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
            )
        };
        RawToken {
            secret_file: path(&self.secret_file),
            public_key_file: path(&self.public_key_file),
            jwks_file: path(&self.jwks_file),
            audience: Some(self.audience.clone().unwrap_or_default()),
            issuer: Some(self.issuer.clone().unwrap_or_default()),
            leeway: Some(self.leeway.into()),
            expiry_grace: Some(self.expiry_grace.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// Parses `[token]` with `file` (name, bytes) written beside the config.
    fn load(key: &str, file: (&str, &[u8])) -> Result<Config, String> {
        let dir =
            std::env::temp_dir().join(format!("vigild-token-{}-{}", std::process::id(), file.0));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file.0), file.1).unwrap();
        let text = format!("[token]\n{key} = \"{}\"\n", file.0);
        let r = Config::parse(&text, &dir.join("vigild.toml"))
            .map(|l| l.config)
            .map_err(|e| e.to_string());
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    #[test]
    fn unusable_key_files_are_refused_naming_the_key_and_why() {
        let short = load("secret_file", ("s", b"too short\n")).unwrap_err();
        assert!(
            short.contains("token.secret_file") && short.contains("at least 32"),
            "{short}"
        );
        let ok = load("secret_file", ("s2", &[b'k'; 32])).unwrap();
        assert!(ok.token.enabled());
        let pem = load(
            "public_key_file",
            (
                "p",
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            ),
        )
        .unwrap_err();
        assert!(
            pem.contains("token.public_key_file") && pem.contains("holds no RSA"),
            "{pem}"
        );
        let json = load("jwks_file", ("j", b"{\"keys\": 7}")).unwrap_err();
        assert!(
            json.contains("token.jwks_file") && json.contains("not a JWKS"),
            "{json}"
        );
        let oct = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"a","alg":"HS256"}]}"#;
        let sym = load("jwks_file", ("o", oct)).unwrap_err();
        assert!(sym.contains("symmetric keys do not belong"), "{sym}");
        let nokid = br#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        let kid = load("jwks_file", ("k", nokid)).unwrap_err();
        assert!(kid.contains("has no \"kid\""), "{kid}");
    }
}
