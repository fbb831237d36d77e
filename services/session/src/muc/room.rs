//! A room as the service reads it from the store, and the XEP-0045 rules
//! that depend only on it: affiliations, roles, who may do what, the
//! configuration form.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xmppd_protocol::JidRef;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

/// XEP-0045 §5.2, by rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn parse(name: &str) -> Option<Affiliation> {
        Some(match name {
            "owner" => Affiliation::Owner,
            "admin" => Affiliation::Admin,
            "member" => Affiliation::Member,
            "none" => Affiliation::None,
            "outcast" => Affiliation::Outcast,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Admin => "admin",
            Affiliation::Member => "member",
            Affiliation::None => "none",
            Affiliation::Outcast => "outcast",
        }
    }
}

/// XEP-0045 §5.1, by rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "moderator" => Role::Moderator,
            "participant" => Role::Participant,
            "visitor" => Role::Visitor,
            "none" => Role::None,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Moderator => "moderator",
            Role::Participant => "participant",
            Role::Visitor => "visitor",
            Role::None => "none",
        }
    }
}

/// The `muc#roomconfig` settings of a room, stored as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    /// Kept when its last occupant leaves.
    pub persistent: bool,
    /// Listed in the service's disco#items (not hidden).
    pub public: bool,
    pub members_only: bool,
    /// Only occupants with voice may send groupchat messages.
    pub moderated: bool,
    /// Empty: no password.
    pub password: String,
    /// Real JIDs shown to every occupant (non-anonymous), not to
    /// moderators only (semi-anonymous).
    pub whois_anyone: bool,
    /// Occupants at most; 0: the service's limit.
    pub max_users: u32,
    pub change_subject: bool,
    /// Occupants may invite others (members-only rooms).
    pub allow_invites: bool,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: String::new(),
            whois_anyone: false,
            max_users: 0,
            change_subject: false,
            allow_invites: false,
        }
    }
}

/// An occupant: its nick, real full JID, role and its own presence's
/// children (show, status, priority...) as it sent them.
#[derive(Clone, Debug)]
pub struct Occupant {
    pub nick: String,
    pub jid: String,
    pub role: Role,
    pub presence: Bytes,
}

impl Occupant {
    pub fn bare(&self) -> &str {
        JidRef::new(&self.jid).bare().as_str()
    }
}

#[derive(Clone, Debug)]
pub struct Room {
    /// The room's bare JID.
    pub jid: String,
    pub config: RoomConfig,
    /// Created as a reserved room and not configured yet (§10.1.3): only
    /// its owner may enter.
    pub locked: bool,
    pub subject: String,
    /// The occupant JID of whoever set the subject, or the room's.
    pub subject_from: String,
    /// What the room's occupant ids are derived with.
    pub secret: String,
    pub affiliations: Vec<(String, Affiliation)>,
    pub occupants: Vec<Occupant>,
}

impl Room {
    /// A new room, locked until configured unless `instant`.
    pub fn new(jid: &str, instant: bool) -> Room {
        Room {
            jid: jid.to_string(),
            config: RoomConfig::default(),
            locked: !instant,
            subject: String::new(),
            subject_from: String::new(),
            secret: format!("{:032x}", rand::random::<u128>()),
            affiliations: Vec::new(),
            occupants: Vec::new(),
        }
    }

    /// The affiliation of the bare JID `jid`.
    pub fn affiliation(&self, jid: &str) -> Affiliation {
        self.affiliations
            .iter()
            .find(|(affiliated, _)| affiliated == jid)
            .map_or(Affiliation::None, |(_, affiliation)| *affiliation)
    }

    pub fn set_affiliation(&mut self, jid: &str, affiliation: Affiliation) {
        self.affiliations
            .retain(|(affiliated, _)| affiliated != jid);
        if affiliation != Affiliation::None {
            self.affiliations.push((jid.to_string(), affiliation));
        }
    }

    pub fn owners(&self) -> usize {
        self.affiliations
            .iter()
            .filter(|(_, affiliation)| *affiliation == Affiliation::Owner)
            .count()
    }

    /// The occupant of the real full JID `jid`.
    pub fn occupant_by_jid(&self, jid: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|occupant| occupant.jid == jid)
    }

    pub fn occupant(&self, nick: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|occupant| occupant.nick == nick)
    }

    pub fn occupant_mut(&mut self, nick: &str) -> Option<&mut Occupant> {
        self.occupants
            .iter_mut()
            .find(|occupant| occupant.nick == nick)
    }

    /// The role a newcomer of `affiliation` gets (§5.1.2).
    pub fn default_role(&self, affiliation: Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// Whether `viewer` sees occupants' real JIDs.
    pub fn shows_jids_to(&self, viewer: &Occupant) -> bool {
        self.config.whois_anyone || viewer.role == Role::Moderator
    }

    /// The occupant JID of `nick`.
    pub fn occupant_jid(&self, nick: &str) -> String {
        format!("{}/{nick}", self.jid)
    }

    /// XEP-0421: the same for every session of one account in this room,
    /// and telling nothing of the account to whoever does not know the
    /// room's secret.
    pub fn occupant_id(&self, real_jid: &str) -> String {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let bare = JidRef::new(real_jid).bare().as_str();
        let digest = Sha256::new()
            .chain_update(self.secret.as_bytes())
            .chain_update([0])
            .chain_update(bare.as_bytes())
            .finalize();
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..18])
    }

    /// The `muc#roominfo` and `muc_*` features of the room's disco#info.
    pub fn features(&self) -> Vec<&'static str> {
        let config = &self.config;
        let pick = |on: bool, yes: &'static str, no: &'static str| if on { yes } else { no };
        vec![
            ns::MUC,
            ns::STANZA_ID,
            ns::OCCUPANT_ID,
            pick(config.public, "muc_public", "muc_hidden"),
            pick(config.persistent, "muc_persistent", "muc_temporary"),
            pick(config.members_only, "muc_membersonly", "muc_open"),
            pick(config.moderated, "muc_moderated", "muc_unmoderated"),
            pick(
                config.password.is_empty(),
                "muc_unsecured",
                "muc_passwordprotected",
            ),
            pick(config.whois_anyone, "muc_nonanonymous", "muc_semianonymous"),
        ]
    }

    /// The `muc#roominfo` form of the room's disco#info (XEP-0045 §6.4).
    pub fn info_form(&self) -> Element {
        let subject = self.subject.clone();
        form("result", "http://jabber.org/protocol/muc#roominfo")
            .child(field("muc#roominfo_description", &self.config.description))
            .child(field(
                "muc#roominfo_occupants",
                &self.occupants.len().to_string(),
            ))
            .child(field("muc#roominfo_subject", &subject))
            .child(field(
                "muc#roominfo_changesubject",
                bool_value(self.config.change_subject),
            ))
    }

    /// The `muc#roomconfig` form an owner fills in (§10.2).
    pub fn config_form(&self) -> Element {
        let config = &self.config;
        let whois = if config.whois_anyone {
            "anyone"
        } else {
            "moderators"
        };
        let max_users = config.max_users.to_string();
        form("form", "http://jabber.org/protocol/muc#roomconfig")
            .child(typed_field(
                "muc#roomconfig_roomname",
                "text-single",
                &config.name,
            ))
            .child(typed_field(
                "muc#roomconfig_roomdesc",
                "text-single",
                &config.description,
            ))
            .child(typed_field(
                "muc#roomconfig_persistentroom",
                "boolean",
                bool_value(config.persistent),
            ))
            .child(typed_field(
                "muc#roomconfig_publicroom",
                "boolean",
                bool_value(config.public),
            ))
            .child(typed_field(
                "muc#roomconfig_membersonly",
                "boolean",
                bool_value(config.members_only),
            ))
            .child(typed_field(
                "muc#roomconfig_moderatedroom",
                "boolean",
                bool_value(config.moderated),
            ))
            .child(typed_field(
                "muc#roomconfig_passwordprotectedroom",
                "boolean",
                bool_value(!config.password.is_empty()),
            ))
            .child(typed_field(
                "muc#roomconfig_roomsecret",
                "text-private",
                &config.password,
            ))
            .child(
                typed_field("muc#roomconfig_whois", "list-single", whois)
                    .child(option("moderators"))
                    .child(option("anyone")),
            )
            .child(typed_field(
                "muc#roomconfig_maxusers",
                "text-single",
                &max_users,
            ))
            .child(typed_field(
                "muc#roomconfig_changesubject",
                "boolean",
                bool_value(config.change_subject),
            ))
            .child(typed_field(
                "muc#roomconfig_allowinvites",
                "boolean",
                bool_value(config.allow_invites),
            ))
    }
}

/// Why a submitted configuration form was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidForm(pub String);

/// `config` changed by a submitted `muc#roomconfig` form: fields not in the
/// form keep their value; an unknown field is ignored (XEP-0004 §3.2), a
/// known one with a value it cannot take refuses the whole form.
pub fn apply_form(config: &RoomConfig, form: &Element) -> Result<RoomConfig, InvalidForm> {
    let mut config = config.clone();
    let mut password_protected = None;
    for field in form.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
        let var = field.get_attr("var").unwrap_or_default();
        let values: Vec<String> = field
            .children()
            .filter(|c| c.is("value", ns::DATA_FORMS))
            .map(Element::text_content)
            .collect();
        let value = values.first().map(String::as_str).unwrap_or_default();
        let boolean = || parse_bool(value).ok_or_else(|| invalid(var, value));
        match var {
            "FORM_TYPE" if value != "http://jabber.org/protocol/muc#roomconfig" => {
                return Err(invalid(var, value));
            }
            "muc#roomconfig_roomname" => config.name = value.to_string(),
            "muc#roomconfig_roomdesc" => config.description = value.to_string(),
            "muc#roomconfig_persistentroom" => config.persistent = boolean()?,
            "muc#roomconfig_publicroom" => config.public = boolean()?,
            "muc#roomconfig_membersonly" => config.members_only = boolean()?,
            "muc#roomconfig_moderatedroom" => config.moderated = boolean()?,
            "muc#roomconfig_passwordprotectedroom" => password_protected = Some(boolean()?),
            "muc#roomconfig_roomsecret" => config.password = value.to_string(),
            "muc#roomconfig_whois" => {
                config.whois_anyone = match value {
                    "anyone" => true,
                    "moderators" => false,
                    _ => return Err(invalid(var, value)),
                }
            }
            "muc#roomconfig_maxusers" => {
                config.max_users = match value {
                    "" | "none" => 0,
                    number => number.parse().map_err(|_| invalid(var, value))?,
                }
            }
            "muc#roomconfig_changesubject" => config.change_subject = boolean()?,
            "muc#roomconfig_allowinvites" => config.allow_invites = boolean()?,
            _ => {}
        }
    }
    if password_protected == Some(false) {
        config.password.clear();
    } else if password_protected == Some(true) && config.password.is_empty() {
        return Err(InvalidForm(
            "a password-protected room needs a password".into(),
        ));
    }
    Ok(config)
}

fn invalid(var: &str, value: &str) -> InvalidForm {
    InvalidForm(format!("{var} cannot be {value:?}"))
}

/// XEP-0004 §3.3 booleans.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn bool_value(value: bool) -> &'static str {
    if value { "1" } else { "0" }
}

fn form(form_type: &str, namespace: &str) -> Element {
    Element::new("x", ns::DATA_FORMS)
        .attr("type", form_type)
        .child(
            Element::new("field", ns::DATA_FORMS)
                .attr("var", "FORM_TYPE")
                .attr("type", "hidden")
                .child(Element::new("value", ns::DATA_FORMS).text(namespace)),
        )
}

fn field(var: &str, value: &str) -> Element {
    Element::new("field", ns::DATA_FORMS)
        .attr("var", var)
        .child(Element::new("value", ns::DATA_FORMS).text(value))
}

fn typed_field(var: &str, field_type: &str, value: &str) -> Element {
    field(var, value).attr("type", field_type)
}

fn option(value: &str) -> Element {
    Element::new("option", ns::DATA_FORMS).child(Element::new("value", ns::DATA_FORMS).text(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted(fields: &[(&str, &str)]) -> Element {
        let mut form = Element::new("x", ns::DATA_FORMS).attr("type", "submit");
        for (var, value) in fields {
            form.push_child(field(var, value));
        }
        form
    }

    #[test]
    fn a_form_changes_only_the_fields_it_names() {
        let config = apply_form(
            &RoomConfig::default(),
            &submitted(&[
                ("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
                ("muc#roomconfig_membersonly", "1"),
                ("muc#roomconfig_whois", "anyone"),
                ("muc#roomconfig_unknown", "whatever"),
            ]),
        )
        .unwrap();
        assert!(config.members_only && config.whois_anyone);
        assert!(config.public, "untouched fields keep their value");
    }

    #[test]
    fn a_form_with_a_value_a_field_cannot_take_is_refused() {
        for (var, value) in [
            ("muc#roomconfig_membersonly", "yes"),
            ("muc#roomconfig_whois", "everyone"),
            ("muc#roomconfig_maxusers", "-3"),
            ("FORM_TYPE", "urn:other"),
        ] {
            assert!(
                apply_form(&RoomConfig::default(), &submitted(&[(var, value)])).is_err(),
                "{var}={value}"
            );
        }
    }

    #[test]
    fn a_password_protected_room_needs_a_password() {
        let form = submitted(&[("muc#roomconfig_passwordprotectedroom", "1")]);
        assert!(apply_form(&RoomConfig::default(), &form).is_err());
        let form = submitted(&[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "cauldron"),
        ]);
        assert_eq!(
            apply_form(&RoomConfig::default(), &form).unwrap().password,
            "cauldron"
        );
    }

    #[test]
    fn occupant_ids_are_per_account_and_per_room() {
        let (a, b) = (
            Room::new("a@conference.example.org", true),
            Room::new("b@conference.example.org", true),
        );
        let id = a.occupant_id("juliet@example.org/balcony");
        assert_eq!(id, a.occupant_id("juliet@example.org/garden"));
        assert_ne!(id, a.occupant_id("romeo@example.org/orchard"));
        assert_ne!(id, b.occupant_id("juliet@example.org/balcony"));
    }
}
