//! Checking a signed token (`AUTH <name> <token>`, `HELLO 3 AUTH <name> <token>`): a JWT whose
//! signature verifies with a key of `[token]`, whose `sub` is the name the client gave, and
//! whose `exp` (required) and `nbf` (honoured) hold at this moment, within `token.leeway`;
//! `aud` and `iss` must match when configured.
//!
//! The key decides the algorithm, never the token (`config/token.rs`): a token is checked only
//! against keys whose algorithms include the one its header names (and, with a `kid`, only the
//! key with that id). Refusals are [`Refusal`]s, one counter each; their text is what the client
//! is told, and it never contains the token.

use jsonwebtoken::{decode, decode_header, Validation};
use serde::Deserialize;

use crate::config::token::TokenConfig;

/// Longest token accepted. It also has to fit, with `AUTH` and the name, in the 4 KiB a
/// session may send before it authenticates (`auth_gate::MAX_UNAUTHENTICATED_REQUEST`).
pub const MAX_TOKEN_BYTES: usize = 4000;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooLarge,
    /// Not three base64url parts of JSON.
    Malformed,
    /// Its algorithm (or `kid`) matches no configured key.
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    /// `sub` is not the name given with `AUTH`.
    SubjectMismatch,
    /// `exp` or `sub` (or a configured `aud`/`iss`) is missing.
    MissingClaim,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::TooLarge,
        Refusal::Malformed,
        Refusal::UnknownKey,
        Refusal::BadSignature,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::WrongAudience,
        Refusal::WrongIssuer,
        Refusal::SubjectMismatch,
        Refusal::MissingClaim,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Refusal::TooLarge => "too-large",
            Refusal::Malformed => "malformed",
            Refusal::UnknownKey => "unknown-key",
            Refusal::BadSignature => "bad-signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not-yet-valid",
            Refusal::WrongAudience => "wrong-audience",
            Refusal::WrongIssuer => "wrong-issuer",
            Refusal::SubjectMismatch => "subject-mismatch",
            Refusal::MissingClaim => "missing-claim",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    /// The error line the client gets.
    pub fn reply(self) -> String {
        let why = match self {
            Refusal::TooLarge => "longer than 4000 bytes",
            Refusal::Malformed => "not a well-formed JWT",
            Refusal::UnknownKey => "its algorithm or key id matches no configured key",
            Refusal::BadSignature => "bad signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not valid yet (nbf)",
            Refusal::WrongAudience => "wrong audience (aud)",
            Refusal::WrongIssuer => "wrong issuer (iss)",
            Refusal::SubjectMismatch => "its sub is not the name given with AUTH",
            Refusal::MissingClaim => "a required claim (exp, sub, aud or iss) is missing",
        };
        format!("WRONGPASS invalid token: {why}")
    }
}

/// Tokens checked, refreshed and refused by cause; kept in the loop's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Tokens that authenticated a session (a first `AUTH` or `HELLO ... AUTH`).
    pub accepted: u64,
    /// Fresh tokens for the identity a session already had (before its `exp`).
    pub refreshed: u64,
    pub refused: [u64; Refusal::ALL.len()],
}

impl TokenCounts {
    pub fn refused(&mut self, why: Refusal) {
        self.refused[why.index()] += 1;
    }

    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refusal::ALL
            .iter()
            .map(|r| (r.name(), self.refused[r.index()]))
    }
}

/// A token that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub sub: Box<str>,
    /// `exp`, Unix seconds.
    pub exp: u64,
}

/// Optional here so that a missing one is `MissingClaim` (the validation's check), not a
/// parse failure.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
}

/// Whether `secret` has the shape of a JWT (three base64url parts): how `AUTH <user> <secret>`
/// tells a token from a password when both are configured.
pub fn looks_like_jwt(secret: &[u8]) -> bool {
    secret.iter().filter(|&&b| b == b'.').count() == 2
        && secret
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// Checks `token` for the session that says it is `name` (see the module docs).
pub fn verify(config: &TokenConfig, name: &[u8], token: &[u8]) -> Result<Verified, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::TooLarge);
    }
    let token = std::str::from_utf8(token).map_err(|_| Refusal::Malformed)?;
    let header = decode_header(token).map_err(|_| Refusal::Malformed)?;
    let key = config
        .keys
        .keys
        .iter()
        .find(|k| {
            k.algorithms.contains(&header.alg)
                && match (&k.kid, &header.kid) {
                    (Some(kid), Some(want)) => kid == want,
                    // A JWKS key needs the token to name it; other keys take any kid.
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        })
        .ok_or(Refusal::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = config.leeway.as_secs();
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    match &config.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &config.issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    let data = decode::<Claims>(token, &key.key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature | K::Crypto(_) => Refusal::BadSignature,
            K::ExpiredSignature => Refusal::Expired,
            K::ImmatureSignature => Refusal::NotYetValid,
            K::InvalidAudience => Refusal::WrongAudience,
            K::InvalidIssuer => Refusal::WrongIssuer,
            K::MissingRequiredClaim(_) => Refusal::MissingClaim,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
                Refusal::UnknownKey
            }
            _ => Refusal::Malformed,
        }
    })?;
    let (Some(sub), Some(exp)) = (data.claims.sub, data.claims.exp) else {
        return Err(Refusal::MissingClaim);
    };
    if sub.as_bytes() != name {
        return Err(Refusal::SubjectMismatch);
    }
    Ok(Verified {
        sub: sub.into_boxed_str(),
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::token::{Key, TokenKeys};
    use jsonwebtoken::{encode, Algorithm, DecodingKey, EncodingKey, Header};
    use std::time::{SystemTime, UNIX_EPOCH};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn hs_config() -> TokenConfig {
        TokenConfig {
            keys: TokenKeys::for_tests(vec![Key {
                key: DecodingKey::from_secret(SECRET),
                algorithms: vec![Algorithm::HS256],
                kid: None,
            }]),
            ..TokenConfig::default()
        }
    }

    fn hs(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn a_valid_token_gives_its_subject_and_expiry() {
        let exp = now() + 60;
        let t = hs(serde_json::json!({"sub": "dev-1", "exp": exp}));
        let v = verify(&hs_config(), b"dev-1", t.as_bytes()).unwrap();
        assert_eq!((&*v.sub, v.exp), ("dev-1", exp as u64));
        assert!(looks_like_jwt(t.as_bytes()));
        assert!(!looks_like_jwt(b"hunter2"));
    }

    #[test]
    fn every_bad_token_has_its_refusal() {
        let c = hs_config();
        let n = now();
        let cases: Vec<(String, Refusal)> = vec![
            (
                hs(serde_json::json!({"sub": "dev-1", "exp": n - 60})),
                Refusal::Expired,
            ),
            (
                hs(serde_json::json!({"sub": "dev-1", "exp": n + 60, "nbf": n + 60})),
                Refusal::NotYetValid,
            ),
            (
                hs(serde_json::json!({"sub": "dev-2", "exp": n + 60})),
                Refusal::SubjectMismatch,
            ),
            (
                hs(serde_json::json!({"sub": "dev-1"})),
                Refusal::MissingClaim,
            ),
            (
                encode(
                    &Header::new(Algorithm::HS256),
                    &serde_json::json!({"sub": "dev-1", "exp": n + 60}),
                    &EncodingKey::from_secret(b"another secret, also 32 bytes long!"),
                )
                .unwrap(),
                Refusal::BadSignature,
            ),
            (
                encode(
                    &Header::new(Algorithm::HS384),
                    &serde_json::json!({"sub": "dev-1", "exp": n + 60}),
                    &EncodingKey::from_secret(SECRET),
                )
                .unwrap(),
                Refusal::UnknownKey,
            ),
            ("not.a.jwt".to_string(), Refusal::Malformed),
            ("garbage".to_string(), Refusal::Malformed),
            ("x".repeat(MAX_TOKEN_BYTES + 1), Refusal::TooLarge),
        ];
        for (token, want) in cases {
            assert_eq!(
                verify(&c, b"dev-1", token.as_bytes()),
                Err(want),
                "{token:.60}"
            );
        }
        // alg "none" (unsigned): {"alg":"none","typ":"JWT"}.{"sub":"dev-1","exp":99999999999}.
        let none =
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJkZXYtMSIsImV4cCI6OTk5OTk5OTk5OTl9.";
        assert_eq!(
            verify(&c, b"dev-1", none.as_bytes()),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            verify(&c, b"dev-1", b"\xff\xfe.\x00.x"),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn audience_and_issuer_are_required_when_configured() {
        let mut c = hs_config();
        c.audience = Some("vigild".into());
        c.issuer = Some("backend".into());
        let n = now();
        let ok =
            hs(serde_json::json!({"sub": "d", "exp": n + 60, "aud": "vigild", "iss": "backend"}));
        assert!(verify(&c, b"d", ok.as_bytes()).is_ok());
        let aud =
            hs(serde_json::json!({"sub": "d", "exp": n + 60, "aud": "other", "iss": "backend"}));
        assert_eq!(
            verify(&c, b"d", aud.as_bytes()),
            Err(Refusal::WrongAudience)
        );
        let iss = hs(serde_json::json!({"sub": "d", "exp": n + 60, "aud": "vigild", "iss": "x"}));
        assert_eq!(verify(&c, b"d", iss.as_bytes()), Err(Refusal::WrongIssuer));
        let none = hs(serde_json::json!({"sub": "d", "exp": n + 60}));
        assert_eq!(
            verify(&c, b"d", none.as_bytes()),
            Err(Refusal::MissingClaim)
        );
    }

    #[test]
    fn es256_verifies_and_the_public_key_is_no_hmac_secret() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let public_pem = pair.public_key_pem();
        let c = TokenConfig {
            keys: TokenKeys::for_tests(vec![Key {
                key: DecodingKey::from_ec_pem(public_pem.as_bytes()).unwrap(),
                algorithms: vec![Algorithm::ES256, Algorithm::ES384],
                kid: None,
            }]),
            ..TokenConfig::default()
        };
        let claims = serde_json::json!({"sub": "dev-1", "exp": now() + 60});
        let es = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(verify(&c, b"dev-1", es.as_bytes()).is_ok());
        // Algorithm confusion: HS256 "signed" with the public key's PEM as the secret.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verify(&c, b"dev-1", confused.as_bytes()),
            Err(Refusal::UnknownKey)
        );
    }
}
