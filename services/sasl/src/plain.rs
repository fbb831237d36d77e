//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`.

use precis_core::profile::PrecisFastInvocation;
use precis_profiles::UsernameCaseMapped;

use crate::SaslError;

/// The parts of a PLAIN message. The password is left unprepared: [`crate::verify_password`]
/// prepares it the same way the stored keys were derived.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// `None` when the client sent an empty authzid.
    pub authzid: Option<String>,
    /// The authentication identity, prepared with UsernameCaseMapped (RFC 8265) as SCRAM does.
    pub username: String,
    pub password: String,
}

// A hand-written Debug so that a stray `?credentials` in a log line cannot leak the password.
impl std::fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Splits a PLAIN message into its three parts.
///
/// Exactly two NULs are required, so a NUL can never be smuggled into a part; the username and
/// password must be non-empty and everything must be UTF-8.
pub fn parse_plain(message: &[u8]) -> Result<PlainCredentials, SaslError> {
    let text = std::str::from_utf8(message).map_err(|_| SaslError::MalformedRequest)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::MalformedRequest);
    };
    if password.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    Ok(PlainCredentials {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        username: prepare_username(authcid)?,
        password: password.to_owned(),
    })
}

/// Prepares a username with UsernameCaseMapped (RFC 8265 §3.3), as XMPP localparts are.
pub(crate) fn prepare_username(username: &str) -> Result<String, SaslError> {
    UsernameCaseMapped::enforce(username)
        .map(|prepared| prepared.into_owned())
        .map_err(|_| SaslError::MalformedRequest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_without_authzid() {
        let credentials = parse_plain(b"\0Juliet\0pencil").unwrap();
        assert_eq!(credentials.authzid, None);
        assert_eq!(credentials.username, "juliet");
        assert_eq!(credentials.password, "pencil");
    }

    #[test]
    fn parses_with_authzid() {
        let credentials = parse_plain(b"juliet@example.com\0juliet\0pen cil").unwrap();
        assert_eq!(credentials.authzid.as_deref(), Some("juliet@example.com"));
        assert_eq!(credentials.password, "pen cil");
    }

    #[test]
    fn rejects_missing_or_extra_parts() {
        let cases: &[&[u8]] = &[
            b"",
            b"juliet",
            b"\0juliet",
            b"\0juliet\0",
            b"\0\0pencil",
            b"\0juliet\0pen\0cil",
            b"\0juliet\0pencil\0",
            b"\0jul\xffiet\0pencil",
            b"\0jul\x07iet\0pencil",
        ];
        for case in cases {
            assert_eq!(
                parse_plain(case),
                Err(SaslError::MalformedRequest),
                "{case:?}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let credentials = parse_plain(b"\0juliet\0secret-pencil").unwrap();
        assert!(!format!("{credentials:?}").contains("secret-pencil"));
    }
}
