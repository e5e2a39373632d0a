//! A session's identity: who the peer proved to be (a verified client certificate; a signed
//! token with issue 16), as opposed to the name it asks for. One concept for every source, so
//! the naming rule below holds for all of them.
//!
//! The rule (`check_name`): a session with an identity is named after it, and may not take
//! another name; when identities are in use at all (client certificates asked for, or tokens
//! configured), a session without one may not take any name. Any weaker rule lets a client
//! without an identity claim the name of a device that is not connected right now, and hold it
//! against the device when it comes back (with `session.unique_names`). Without identity
//! sources, names are free as before.

use crate::config::tls::IdentityField;

/// Where an identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// A verified client certificate (`[tls]`).
    Certificate,
    /// A signed token (`[token]`, `AUTH <name> <token>`).
    Token,
}

impl IdentitySource {
    pub const fn name(self) -> &'static str {
        match self {
            IdentitySource::Certificate => "certificate",
            IdentitySource::Token => "token",
        }
    }
}

/// A proven identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: Box<str>,
    pub source: IdentitySource,
    /// When a token identity ends (its `exp`, Unix seconds); refreshed by a new `AUTH`.
    pub expires: Option<u64>,
}

/// An identity verified (a token by `AUTH`, a certificate by the handshake) that the loop has
/// yet to bind (count, name, a token's expiry timer): `AUTH` waits for it before it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub identity: Identity,
    /// Whether the loop answers `+OK` once bound (`AUTH`; `HELLO` has answered itself).
    pub reply_ok: bool,
}

/// Whether a session may take a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameCheck {
    Allowed,
    /// Its identity is another name.
    NotItsIdentity,
    /// Identities are in use and it has none.
    NoIdentity,
}

impl NameCheck {
    /// The error line for a refused `CLIENT SETNAME` / `HELLO ... SETNAME`.
    pub const fn error(self) -> &'static str {
        match self {
            NameCheck::Allowed => "",
            NameCheck::NotItsIdentity => {
                "ERR this session's name is its identity (from its certificate or token); it cannot take another name"
            }
            NameCheck::NoIdentity => {
                "ERR names are bound to identities on this server; authenticate with a client certificate or a token to have one"
            }
        }
    }
}

/// The naming rule (see the module docs). `name` is the name asked for (`None` clears it).
pub fn check_name(
    identity: Option<&Identity>,
    identities_in_use: bool,
    name: Option<&str>,
) -> NameCheck {
    match (identity, name) {
        (Some(id), Some(n)) if *id.name == *n => NameCheck::Allowed,
        (Some(_), _) => NameCheck::NotItsIdentity,
        (None, None) => NameCheck::Allowed,
        (None, Some(_)) if identities_in_use => NameCheck::NoIdentity,
        (None, Some(_)) => NameCheck::Allowed,
    }
}

/// The identity in a client certificate (DER), from `field`; a short reason when it has none
/// usable. An identity must be a valid session name: 1..=`max_bytes` bytes of printable ASCII
/// without spaces (what `CLIENT SETNAME` accepts).
pub fn from_certificate(
    der: &[u8],
    field: IdentityField,
    max_bytes: usize,
) -> Result<Box<str>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the client certificate cannot be parsed: {e}"))?;
    let found: Option<String> = match field {
        IdentityField::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        IdentityField::SanDns | IdentityField::SanUri => cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value
                    .general_names
                    .iter()
                    .find_map(|n| match (field, n) {
                        (IdentityField::SanDns, GeneralName::DNSName(d)) => Some((*d).to_owned()),
                        (IdentityField::SanUri, GeneralName::URI(u)) => Some((*u).to_owned()),
                        _ => None,
                    })
            }),
    };
    let Some(found) = found else {
        return Err(format!(
            "the client certificate has no {} (tls.identity)",
            field.name()
        ));
    };
    if found.is_empty() || found.len() > max_bytes {
        return Err(format!(
            "the client certificate's {} is {} bytes; an identity is 1..={max_bytes} bytes (session.max_name_bytes)",
            field.name(),
            found.len()
        ));
    }
    if !found.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the client certificate's {} has spaces or non-printable bytes; it cannot be a session name",
            field.name()
        ));
    }
    Ok(found.into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: &str) -> Identity {
        Identity {
            name: n.into(),
            source: IdentitySource::Certificate,
            expires: None,
        }
    }

    #[test]
    fn names_follow_identities() {
        let dev1 = id("dev-1");
        assert_eq!(
            check_name(Some(&dev1), true, Some("dev-1")),
            NameCheck::Allowed
        );
        assert_eq!(
            check_name(Some(&dev1), true, Some("dev-2")),
            NameCheck::NotItsIdentity
        );
        assert_eq!(
            check_name(Some(&dev1), true, None),
            NameCheck::NotItsIdentity
        );
        assert_eq!(check_name(None, true, Some("dev-1")), NameCheck::NoIdentity);
        assert_eq!(check_name(None, true, None), NameCheck::Allowed);
        assert_eq!(
            check_name(None, false, Some("anything")),
            NameCheck::Allowed
        );
    }
}
