//! Jabber identifiers, RFC 7622: `[localpart@]domainpart[/resourcepart]`.

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use precis_core::profile::PrecisFastInvocation;
use precis_profiles::{OpaqueString, UsernameCaseMapped};

/// RFC 7622 §3.1: every part is at most 1023 bytes once prepared.
const MAX_PART_BYTES: usize = 1023;
/// Preparation can shrink a part (full-width letters become ASCII), so raw input may exceed
/// the prepared limit; beyond this much it cannot fit and is refused before the costly PRECIS work.
const MAX_RAW_PART_BYTES: usize = 4 * MAX_PART_BYTES;

/// A normalised JID. Equality, hashing and ordering are those of the normalised string, so two
/// JIDs that RFC 7622 considers the same compare equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    /// The normalised form, the only thing compared.
    full: String,
    /// Offsets into `full`, derived from it, kept so that accessors do not rescan.
    domain_start: usize,
    domain_end: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JidError {
    #[error("empty localpart")]
    EmptyLocalpart,
    #[error("empty domainpart")]
    EmptyDomain,
    #[error("empty resourcepart")]
    EmptyResource,
    #[error("localpart longer than 1023 bytes")]
    LocalpartTooLong,
    #[error("domainpart longer than 1023 bytes")]
    DomainTooLong,
    #[error("resourcepart longer than 1023 bytes")]
    ResourceTooLong,
    #[error("localpart rejected by the UsernameCaseMapped profile")]
    InvalidLocalpart,
    #[error("character {0:?} is not allowed in a localpart")]
    ForbiddenLocalpartChar(char),
    #[error("invalid domainpart")]
    InvalidDomain,
    #[error("resourcepart rejected by the OpaqueString profile")]
    InvalidResource,
}

impl Jid {
    /// Parses and normalises a JID string (RFC 7622 §3.2: the resource starts at the first
    /// `/`, the localpart ends at the first `@` before it).
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let (rest, resource) = match s.split_once('/') {
            Some((rest, resource)) => (rest, Some(resource)),
            None => (s, None),
        };
        let (node, domain) = match rest.split_once('@') {
            Some((node, domain)) => (Some(node), domain),
            None => (None, rest),
        };
        Self::new(node, domain, resource)
    }

    /// Builds a JID from its parts, normalising each.
    pub fn new(node: Option<&str>, domain: &str, resource: Option<&str>) -> Result<Jid, JidError> {
        let node = node.map(prepare_localpart).transpose()?;
        let domain = prepare_domain(domain)?;
        let resource = resource.map(prepare_resource).transpose()?;
        Ok(Self::assemble(
            node.as_deref(),
            &domain,
            resource.as_deref(),
        ))
    }

    /// Joins already-normalised parts.
    fn assemble(node: Option<&str>, domain: &str, resource: Option<&str>) -> Jid {
        let mut full = String::with_capacity(
            node.map_or(0, |n| n.len() + 1) + domain.len() + resource.map_or(0, |r| r.len() + 1),
        );
        if let Some(node) = node {
            full.push_str(node);
            full.push('@');
        }
        let domain_start = full.len();
        full.push_str(domain);
        let domain_end = full.len();
        if let Some(resource) = resource {
            full.push('/');
            full.push_str(resource);
        }
        Jid {
            full,
            domain_start,
            domain_end,
        }
    }

    pub fn node(&self) -> Option<&str> {
        self.domain_start.checked_sub(1).map(|at| &self.full[..at])
    }

    pub fn domain(&self) -> &str {
        &self.full[self.domain_start..self.domain_end]
    }

    pub fn resource(&self) -> Option<&str> {
        self.full.get(self.domain_end + 1..)
    }

    /// The JID without its resource.
    pub fn bare(&self) -> Jid {
        Jid {
            full: self.full[..self.domain_end].to_owned(),
            domain_start: self.domain_start,
            domain_end: self.domain_end,
        }
    }

    pub fn is_bare(&self) -> bool {
        self.domain_end == self.full.len()
    }

    /// The full JID of this JID's bare JID and `resource`.
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        let resource = prepare_resource(resource)?;
        Ok(Self::assemble(self.node(), self.domain(), Some(&resource)))
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The normalised form, without a copy.
    pub fn into_string(self) -> String {
        self.full
    }

    /// This JID as the cluster's borrowed view.
    pub fn view(&self) -> JidRef<'_> {
        JidRef {
            full: &self.full,
            domain_start: self.domain_start,
            domain_end: self.domain_end,
        }
    }
}

/// A normalised JID as the cluster carries it: a view over a string that [`Jid`] produced
/// (the edge parses every address a client sends; replicas build theirs from parsed JIDs), so
/// it is split again without validation and without copying. Every crate reads an address's
/// parts through this type rather than splitting strings itself.
///
/// The split follows RFC 7622 §3.2 on a normalised string: the resource starts at the first
/// `/` (a resource may contain `/`, a bare JID may not), and the localpart ends at the `@`
/// before it (neither a localpart nor a domainpart may contain `@`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JidRef<'a> {
    full: &'a str,
    /// As in [`Jid`]: split once, so that each part is a slice away. Functions of `full`,
    /// so the derived comparisons still compare the string.
    domain_start: usize,
    domain_end: usize,
}

impl<'a> JidRef<'a> {
    /// A view over `normalised`, which must come from [`Jid`] (the cluster's addresses do):
    /// it is split, not checked, so that the router's hot path does not parse.
    pub fn new(normalised: &'a str) -> Self {
        let bytes = normalised.as_bytes();
        let domain_end = bytes.iter().position(|&b| b == b'/').unwrap_or(bytes.len());
        let domain_start = bytes[..domain_end]
            .iter()
            .position(|&b| b == b'@')
            .map_or(0, |at| at + 1);
        JidRef {
            full: normalised,
            domain_start,
            domain_end,
        }
    }

    pub fn as_str(self) -> &'a str {
        self.full
    }

    /// The JID without its resource.
    pub fn bare(self) -> JidRef<'a> {
        JidRef {
            full: &self.full[..self.domain_end],
            ..self
        }
    }

    pub fn node(self) -> Option<&'a str> {
        self.domain_start.checked_sub(1).map(|at| &self.full[..at])
    }

    pub fn domain(self) -> &'a str {
        &self.full[self.domain_start..self.domain_end]
    }

    pub fn resource(self) -> Option<&'a str> {
        self.full.get(self.domain_end + 1..)
    }

    /// Whether this names an account (or one of its resources) rather than a server.
    pub fn is_account(self) -> bool {
        self.domain_start > 0
    }

    pub fn is_bare(self) -> bool {
        self.domain_end == self.full.len()
    }
}

impl fmt::Display for JidRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.full)
    }
}

impl<'a> From<&'a Jid> for JidRef<'a> {
    fn from(jid: &'a Jid) -> Self {
        jid.view()
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl FromStr for Jid {
    type Err = JidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Jid::parse(s)
    }
}

impl AsRef<str> for Jid {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

fn prepare_localpart(raw: &str) -> Result<Cow<'_, str>, JidError> {
    check_raw_len(raw, JidError::EmptyLocalpart, JidError::LocalpartTooLong)?;
    let prepared = match username_case_mapped_ascii(raw) {
        Some(prepared) => prepared,
        None => UsernameCaseMapped::enforce(raw).map_err(|_| JidError::InvalidLocalpart)?,
    };
    // RFC 7622 §3.3.1 forbids these on top of the PRECIS profile.
    if let Some(c) = prepared
        .chars()
        .find(|c| matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@'))
    {
        return Err(JidError::ForbiddenLocalpartChar(c));
    }
    check_len(
        &prepared,
        JidError::EmptyLocalpart,
        JidError::LocalpartTooLong,
    )?;
    Ok(prepared)
}

fn prepare_resource(raw: &str) -> Result<Cow<'_, str>, JidError> {
    check_raw_len(raw, JidError::EmptyResource, JidError::ResourceTooLong)?;
    let prepared = match opaque_string_ascii(raw) {
        Some(prepared) => prepared,
        None => OpaqueString::enforce(raw).map_err(|_| JidError::InvalidResource)?,
    };
    check_len(
        &prepared,
        JidError::EmptyResource,
        JidError::ResourceTooLong,
    )?;
    Ok(prepared)
}

// Fast paths for the common all-ASCII parts, which every JID on a busy
// server is parsed through: for printable ASCII the PRECIS profiles reduce to
// these rules (every such character is valid, NFC and width mapping change
// nothing, the bidi rule holds), and the full profiles cost a table look-up
// per character. Anything else takes the full profile. A test checks both
// agree on every printable ASCII character.

/// RFC 8265 UsernameCaseMapped for printable ASCII without space (IdentifierClass):
/// lowercased. `None` if `raw` is anything else.
fn username_case_mapped_ascii(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(raw.to_ascii_lowercase())
    } else {
        Cow::Borrowed(raw)
    })
}

/// RFC 8265 OpaqueString for printable ASCII and space (FreeformClass): unchanged.
/// `None` if `raw` is anything else.
fn opaque_string_ascii(raw: &str) -> Option<Cow<'_, str>> {
    raw.bytes()
        .all(|b| b == b' ' || b.is_ascii_graphic())
        .then_some(Cow::Borrowed(raw))
}

/// Normalises a domainpart: an IP literal, or a host name lowercased with any final dot removed.
///
/// Internationalised labels are lowercased but not converted by IDNA2008 (no IDNA crate is a
/// dependency); ASCII host names, the overwhelming majority, are fully normalised.
fn prepare_domain(raw: &str) -> Result<Cow<'_, str>, JidError> {
    check_raw_len(raw, JidError::EmptyDomain, JidError::DomainTooLong)?;
    if let Some(literal) = raw.strip_prefix('[') {
        let address = literal
            .strip_suffix(']')
            .and_then(|a| a.parse::<Ipv6Addr>().ok())
            .ok_or(JidError::InvalidDomain)?;
        return Ok(Cow::Owned(format!("[{address}]")));
    }
    let name = raw.strip_suffix('.').unwrap_or(raw);
    check_len(name, JidError::EmptyDomain, JidError::DomainTooLong)?;
    if !name.split('.').all(is_valid_label) {
        return Err(JidError::InvalidDomain);
    }
    let lowered = if name.bytes().any(|b| b.is_ascii_uppercase()) || !name.is_ascii() {
        Cow::Owned(name.to_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    check_len(&lowered, JidError::EmptyDomain, JidError::DomainTooLong)?;
    Ok(lowered)
}

/// A DNS label: not empty, at most 63 bytes, letters, digits, `-` and `_` (seen in the wild),
/// or non-ASCII letters and digits of an internationalised name.
fn is_valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label.chars().all(|c| {
            if c.is_ascii() {
                c.is_ascii_alphanumeric() || c == '-' || c == '_'
            } else {
                c.is_alphanumeric() || is_combining_mark(c)
            }
        })
}

/// Combining marks appear in internationalised labels (e.g. Devanagari vowel signs).
fn is_combining_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x0900..=0x0DFF | 0x1AB0..=0x1AFF | 0x20D0..=0x20FF)
}

fn check_raw_len(raw: &str, empty: JidError, too_long: JidError) -> Result<(), JidError> {
    match raw.len() {
        0 => Err(empty),
        n if n > MAX_RAW_PART_BYTES => Err(too_long),
        _ => Ok(()),
    }
}

fn check_len(prepared: &str, empty: JidError, too_long: JidError) -> Result<(), JidError> {
    match prepared.len() {
        0 => Err(empty),
        n if n > MAX_PART_BYTES => Err(too_long),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_splits_a_normalised_jid_as_parsing_does() {
        for s in ["a@b/c/d", "a@b", "b", "b/r", "b/r@s", "a@b/r@s"] {
            let jid = Jid::parse(s).unwrap();
            let view = JidRef::new(jid.as_str());
            assert_eq!(view.node(), jid.node(), "{s}");
            assert_eq!(view.domain(), jid.domain(), "{s}");
            assert_eq!(view.resource(), jid.resource(), "{s}");
            assert_eq!(view.bare().as_str(), jid.bare().as_str(), "{s}");
            assert_eq!(view.is_account(), jid.node().is_some(), "{s}");
            assert_eq!(view, jid.view());
        }
        assert_eq!(
            JidRef::new("dave@example.org/phone/2").bare().as_str(),
            "dave@example.org"
        );
    }

    fn parts(s: &str) -> (Option<String>, String, Option<String>) {
        let jid = Jid::parse(s).unwrap();
        (
            jid.node().map(str::to_owned),
            jid.domain().to_owned(),
            jid.resource().map(str::to_owned),
        )
    }

    #[test]
    fn rfc7622_valid_examples() {
        let cases = [
            ("juliet@example.com", "juliet@example.com"),
            ("juliet@example.com/foo", "juliet@example.com/foo"),
            ("juliet@example.com/foo bar", "juliet@example.com/foo bar"),
            ("juliet@example.com/foo@bar", "juliet@example.com/foo@bar"),
            ("foo\\20bar@example.com", "foo\\20bar@example.com"),
            ("fussball@example.com", "fussball@example.com"),
            ("fußball@example.com", "fußball@example.com"),
            ("π@example.com", "π@example.com"),
            ("Σ@example.com/foo", "σ@example.com/foo"),
            ("example.com", "example.com"),
            ("example.com/foobar", "example.com/foobar"),
            ("a.example.com/b@example.net", "a.example.com/b@example.net"),
        ];
        for (input, normalised) in cases {
            assert_eq!(Jid::parse(input).unwrap().as_str(), normalised, "{input}");
        }
    }

    #[test]
    fn rfc7622_invalid_examples() {
        let cases = [
            (
                "\"juliet\"@example.com",
                JidError::ForbiddenLocalpartChar('"'),
            ),
            ("foo bar@example.com", JidError::InvalidLocalpart),
            ("juliet@example.com/\u{7}", JidError::InvalidResource),
            ("@example.com/", JidError::EmptyLocalpart),
            ("henry\u{2163}@example.com", JidError::InvalidLocalpart),
            ("\u{2648}@example.com", JidError::InvalidLocalpart),
            ("juliet@", JidError::EmptyDomain),
            ("/foobar", JidError::EmptyDomain),
            ("", JidError::EmptyDomain),
            ("example.com/", JidError::EmptyResource),
            ("a@b@c", JidError::InvalidDomain),
            ("a@exa mple.com", JidError::InvalidDomain),
            ("a@example..com", JidError::InvalidDomain),
            ("a@.", JidError::EmptyDomain),
            ("a@[::1", JidError::InvalidDomain),
            ("a@<b>", JidError::InvalidDomain),
        ];
        for (input, error) in cases {
            assert_eq!(Jid::parse(input), Err(error), "{input:?}");
        }
    }

    #[test]
    fn ascii_fast_paths_agree_with_the_precis_profiles() {
        let samples = (0x20u8..=0x7e)
            .map(|b| format!("a{}Z", b as char))
            .chain(["Juliet", "x", " lead", "trail ", "a b", "MiXeD.Case-1_2"].map(String::from));
        for sample in samples {
            let full = |raw: &str| UsernameCaseMapped::enforce(raw).ok().map(Cow::into_owned);
            let fast = username_case_mapped_ascii(&sample).map(Cow::into_owned);
            if let Some(fast) = fast {
                assert_eq!(Some(fast), full(&sample), "localpart {sample:?}");
            }
            let full = |raw: &str| OpaqueString::enforce(raw).ok().map(Cow::into_owned);
            let fast = opaque_string_ascii(&sample).map(Cow::into_owned);
            assert_eq!(fast, full(&sample), "resource {sample:?}");
        }
        // Space is not part of a username: the fast path leaves it to the profile.
        assert!(username_case_mapped_ascii("a b").is_none());
        assert!(UsernameCaseMapped::enforce("a b").is_err());
    }

    #[test]
    fn localpart_is_case_mapped_and_resource_case_preserved() {
        let jid = Jid::parse("JuLiEt@Example.COM/BalCony").unwrap();
        assert_eq!(jid.as_str(), "juliet@example.com/BalCony");
        assert_eq!(jid, Jid::parse("juliet@example.com/BalCony").unwrap());
        assert_ne!(jid, Jid::parse("juliet@example.com/balcony").unwrap());
    }

    #[test]
    fn resource_takes_everything_after_first_slash() {
        assert_eq!(
            parts("a@b/c/d"),
            (Some("a".into()), "b".into(), Some("c/d".into()))
        );
        assert_eq!(parts("b/c@d"), (None, "b".into(), Some("c@d".into())));
    }

    #[test]
    fn domain_normalisation() {
        assert_eq!(
            Jid::parse("a@Example.com.").unwrap().domain(),
            "example.com"
        );
        assert_eq!(Jid::parse("192.168.0.1").unwrap().domain(), "192.168.0.1");
        assert_eq!(
            Jid::parse("u@[2001:DB8::0:1]/r").unwrap().domain(),
            "[2001:db8::1]"
        );
        assert_eq!(Jid::parse("ÉCOLE.fr").unwrap().domain(), "école.fr");
    }

    #[test]
    fn length_limits() {
        let part = "a".repeat(1023);
        assert!(Jid::parse(&format!("{part}@example.com/{part}")).is_ok());
        let long = "a".repeat(1024);
        assert_eq!(
            Jid::parse(&format!("{long}@example.com")),
            Err(JidError::LocalpartTooLong)
        );
        assert_eq!(
            Jid::parse(&format!("example.com/{long}")),
            Err(JidError::ResourceTooLong)
        );
        let domain = format!("{}.com", vec!["a".repeat(60); 17].join("."));
        assert_eq!(Jid::parse(&domain), Err(JidError::DomainTooLong));
        assert_eq!(
            Jid::parse(&"a".repeat(100_000)),
            Err(JidError::DomainTooLong)
        );
    }

    #[test]
    fn bare_and_with_resource() {
        let full = Jid::parse("Romeo@Example.net/orchard").unwrap();
        let bare = full.bare();
        assert_eq!(bare.as_str(), "romeo@example.net");
        assert!(bare.is_bare() && !full.is_bare());
        assert_eq!(bare.resource(), None);
        assert_eq!(bare.node(), Some("romeo"));
        let other = full.with_resource("Garden").unwrap();
        assert_eq!(other.to_string(), "romeo@example.net/Garden");
        assert_eq!(other.bare(), bare);
        assert_eq!(full.with_resource(""), Err(JidError::EmptyResource));
        let domain: Jid = "example.net".parse().unwrap();
        assert_eq!((domain.node(), domain.resource()), (None, None));
    }
}
