//! SMART on FHIR scopes (App Launch 2.x, v1 and v2 syntax): what a client may ask for, what it is
//! granted (requested ∩ registered ∩ what the user's role allows), and whether a grant permits
//! one interaction on one resource type, for every patient or only inside one patient's
//! compartment.

use std::fmt;

/// Who a resource scope speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Context {
    /// Only the patient in context (the launch's or the one picked at sign-in).
    Patient,
    /// Whatever the signed-in user may see.
    User,
    /// A back-end system with no user (SMART Backend Services).
    System,
}

impl Context {
    fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::User => "user",
            Self::System => "system",
        }
    }
}

/// The resource types CareVault serves under /fhir/R4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Patient,
    DocumentReference,
    Binary,
    AuditEvent,
    Practitioner,
    Group,
}

impl ResourceType {
    pub const ALL: [Self; 6] = [
        Self::Patient,
        Self::DocumentReference,
        Self::Binary,
        Self::AuditEvent,
        Self::Practitioner,
        Self::Group,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "Patient",
            Self::DocumentReference => "DocumentReference",
            Self::Binary => "Binary",
            Self::AuditEvent => "AuditEvent",
            Self::Practitioner => "Practitioner",
            Self::Group => "Group",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The interactions the server offers on this type: a scope beyond them grants nothing more.
    fn served(self) -> Perms {
        match self {
            Self::Patient => Perms::ALL,
            Self::DocumentReference => Perms(Perms::C | Perms::R | Perms::D | Perms::S),
            Self::Binary => Perms(Perms::R),
            Self::AuditEvent => Perms::READ,
            Self::Practitioner => Perms(Perms::R),
            Self::Group => Perms::ALL,
        }
    }
}

/// A set of the v2 permissions `c`, `r`, `u`, `d`, `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Perms(u8);

impl Perms {
    pub const C: u8 = 1;
    pub const R: u8 = 2;
    pub const U: u8 = 4;
    pub const D: u8 = 8;
    pub const S: u8 = 16;
    pub const NONE: Self = Self(0);
    /// v1's `read`: read and search.
    pub const READ: Self = Self(Self::R | Self::S);
    /// v1's `write`: create, update, delete.
    pub const WRITE: Self = Self(Self::C | Self::U | Self::D);
    pub const ALL: Self = Self(31);
    const LETTERS: [(u8, char); 5] = [
        (Self::C, 'c'),
        (Self::R, 'r'),
        (Self::U, 'u'),
        (Self::D, 'd'),
        (Self::S, 's'),
    ];

    pub const fn from_bits(bits: u8) -> Self {
        Self(bits & 31)
    }

    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn and(self, other: Perms) -> Perms {
        Perms(self.0 & other.0)
    }

    pub fn or(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }

    /// v2's letters, which must come in the order `cruds`, each at most once.
    fn parse_v2(text: &str) -> Option<Self> {
        let mut perms = 0u8;
        let mut next = 0;
        for c in text.chars() {
            let at = Self::LETTERS[next..].iter().position(|(_, l)| *l == c)?;
            perms |= Self::LETTERS[next + at].0;
            next += at + 1;
        }
        (perms != 0).then_some(Self(perms))
    }

    fn letters(self) -> String {
        Self::LETTERS
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, l)| *l)
            .collect()
    }
}

/// One interaction, as the permission it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    pub fn perm(self) -> Perms {
        Perms(match self {
            Self::Create => Perms::C,
            Self::Read => Perms::R,
            Self::Update => Perms::U,
            Self::Delete => Perms::D,
            Self::Search => Perms::S,
        })
    }
}

/// The syntax a resource scope was asked in; a grant answers in the same one where it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Syntax {
    V1,
    V2,
}

/// `patient/Patient.rs`, `user/*.read`: a context, a resource type (None for `*`), and
/// permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceScope {
    pub context: Context,
    pub resource: Option<ResourceType>,
    pub perms: Perms,
    pub syntax: Syntax,
}

impl ResourceScope {
    /// `*` covers every type but AuditEvent: the trail is granted only by name
    /// (`user/AuditEvent.rs`, `system/AuditEvent.rs`).
    fn covers(&self, resource: ResourceType) -> bool {
        match self.resource {
            None => resource != ResourceType::AuditEvent,
            Some(r) => r == resource,
        }
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = self.resource.map_or("*", ResourceType::as_str);
        let perms = match (self.syntax, self.perms) {
            (Syntax::V1, Perms::READ) => "read".to_owned(),
            (Syntax::V1, Perms::WRITE) => "write".to_owned(),
            (Syntax::V1, Perms::ALL) => "*".to_owned(),
            (_, perms) => perms.letters(),
        };
        write!(f, "{}/{resource}.{perms}", self.context.as_str())
    }
}

/// One scope of a SMART request or grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Resource(ResourceScope),
    /// EHR launch: the `launch` parameter's context.
    Launch,
    /// Standalone launch: the user picks a patient at sign-in.
    LaunchPatient,
    OpenId,
    FhirUser,
    OfflineAccess,
    OnlineAccess,
}

impl Scope {
    /// One scope in SMART's syntax; None for anything this server does not offer (another
    /// resource type, v2's granular `?query` scopes, an unknown word).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "launch" => return Some(Self::Launch),
            "launch/patient" => return Some(Self::LaunchPatient),
            "openid" => return Some(Self::OpenId),
            "fhirUser" => return Some(Self::FhirUser),
            "offline_access" => return Some(Self::OfflineAccess),
            "online_access" => return Some(Self::OnlineAccess),
            _ => {}
        }
        let (context, rest) = text.split_once('/')?;
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return None,
        };
        let (resource, perms) = rest.split_once('.')?;
        let resource = match resource {
            "*" => None,
            name => Some(ResourceType::parse(name)?),
        };
        let (perms, syntax) = match perms {
            "read" => (Perms::READ, Syntax::V1),
            "write" => (Perms::WRITE, Syntax::V1),
            "*" => (Perms::ALL, Syntax::V1),
            letters => (Perms::parse_v2(letters)?, Syntax::V2),
        };
        Some(Self::Resource(ResourceScope {
            context,
            resource,
            perms,
            syntax,
        }))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resource(scope) => scope.fmt(f),
            Self::Launch => f.write_str("launch"),
            Self::LaunchPatient => f.write_str("launch/patient"),
            Self::OpenId => f.write_str("openid"),
            Self::FhirUser => f.write_str("fhirUser"),
            Self::OfflineAccess => f.write_str("offline_access"),
            Self::OnlineAccess => f.write_str("online_access"),
        }
    }
}

/// The scopes the discovery document lists. A registration may name any scope these cover (the
/// same context, a resource they include, a subset of their permissions), in either syntax.
pub const SCOPES_SUPPORTED: &[&str] = &[
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/Patient.rs",
    "patient/DocumentReference.cruds",
    "patient/Binary.r",
    "user/*.cruds",
    "user/Patient.cruds",
    "user/DocumentReference.cruds",
    "user/Binary.r",
    "user/AuditEvent.rs",
    "user/Practitioner.r",
    "system/*.rs",
    "system/Patient.rs",
    "system/DocumentReference.rs",
    "system/Binary.r",
    "system/AuditEvent.rs",
];

/// A space-separated list of scopes, each once, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

/// What a registration's `scope` cannot hold: the words outside `scopes_supported`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not among scopes_supported: {}", .0.join(" "))]
pub struct UnsupportedScopes(pub Vec<String>);

impl Scopes {
    /// A request's `scope`: what this server does not offer is left out (a server may grant
    /// less than asked; the answer's `scope` says what was granted).
    pub fn requested(text: &str) -> Self {
        Self::from_iter(text.split_ascii_whitespace().filter_map(Scope::parse))
    }

    /// A registration's `scope`: every word must be covered by `scopes_supported`.
    pub fn registered(text: &str) -> Result<Self, UnsupportedScopes> {
        let supported: Vec<Scope> = SCOPES_SUPPORTED
            .iter()
            .filter_map(|s| Scope::parse(s))
            .collect();
        let mut outside = Vec::new();
        let mut scopes = Vec::new();
        for word in text.split_ascii_whitespace() {
            let covered = Scope::parse(word).filter(|scope| {
                supported.iter().any(|s| match (s, scope) {
                    (Scope::Resource(s), Scope::Resource(r)) => {
                        s.context == r.context
                            && r.resource.map_or(s.resource.is_none(), |t| s.covers(t))
                            && s.perms.contains(r.perms)
                    }
                    (s, r) => s == r,
                })
            });
            match covered {
                Some(scope) => scopes.push(scope),
                None => outside.push(word.to_owned()),
            }
        }
        if outside.is_empty() {
            Ok(Self::from_iter(scopes))
        } else {
            Err(UnsupportedScopes(outside))
        }
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn resource_scopes(&self) -> impl Iterator<Item = &ResourceScope> {
        self.0.iter().filter_map(|s| match s {
            Scope::Resource(r) => Some(r),
            _ => None,
        })
    }

    /// Only the scopes `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&Scope) -> bool) -> Self {
        Self(self.0.iter().copied().filter(|s| keep(s)).collect())
    }

    /// What a client asking for `self` is granted: each requested scope cut down to what the
    /// client's registration covers and what `allowed` (the user's role, or a system's limits)
    /// permits on each resource type; the words that grant nothing are dropped.
    pub fn grant(
        &self,
        registered: &Scopes,
        allowed: impl Fn(Option<ResourceType>) -> Perms,
    ) -> Self {
        let mut granted = Vec::new();
        for scope in &self.0 {
            match scope {
                Scope::Resource(asked) => {
                    for reg in registered.resource_scopes() {
                        if reg.context != asked.context {
                            continue;
                        }
                        let resource = match (asked.resource, reg.resource) {
                            (None, None) => None,
                            (None, Some(r)) if asked.covers(r) => Some(r),
                            (Some(a), None) if reg.covers(a) => Some(a),
                            (Some(a), Some(r)) if a == r => Some(a),
                            _ => continue,
                        };
                        let mut perms = asked.perms.and(reg.perms).and(allowed(resource));
                        if let Some(resource) = resource {
                            perms = perms.and(resource.served());
                        }
                        if !perms.is_empty() {
                            granted.push(Scope::Resource(ResourceScope {
                                context: asked.context,
                                resource,
                                perms,
                                syntax: asked.syntax,
                            }));
                        }
                    }
                }
                other => {
                    if registered.contains(*other) {
                        granted.push(*other);
                    }
                }
            }
        }
        Self::from_iter(granted)
    }

    /// The permissions the resource scopes of `context` give on `resource`.
    pub fn perms(&self, context: Context, resource: ResourceType) -> Perms {
        self.resource_scopes()
            .filter(|s| s.context == context && s.covers(resource))
            .fold(Perms::NONE, |all, s| all.or(s.perms))
    }

    /// Whether any resource scope of `context` is held.
    pub fn has_context(&self, context: Context) -> bool {
        self.resource_scopes().any(|s| s.context == context)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut scopes: Vec<Scope> = iter.into_iter().collect();
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.0.iter().map(Scope::to_string).collect();
        f.write_str(&words.join(" "))
    }
}

/// Where a permitted interaction may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every resource the caller's role may see.
    All,
    /// Only this patient's compartment: the Patient, DocumentReferences whose subject it is, and
    /// their Binary content.
    Compartment(uuid::Uuid),
}

/// A token's scopes and the patient in its context: whether it permits an interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeGrant {
    pub scopes: Scopes,
    pub patient: Option<uuid::Uuid>,
}

impl ScopeGrant {
    /// How far `interaction` on `resource` reaches, or None when the grant does not permit it.
    /// `user/` and `system/` scopes reach every resource; `patient/` scopes only the patient in
    /// context. Binary content is reached through its DocumentReference's scopes as well.
    pub fn reach(&self, resource: ResourceType, interaction: Interaction) -> Option<Reach> {
        let needed = interaction.perm();
        let holds = |context: Context| {
            self.scopes.perms(context, resource).contains(needed)
                || (resource == ResourceType::Binary
                    && interaction == Interaction::Read
                    && self
                        .scopes
                        .perms(context, ResourceType::DocumentReference)
                        .contains(needed))
        };
        if holds(Context::User) || holds(Context::System) {
            return Some(Reach::All);
        }
        match self.patient {
            Some(patient) if holds(Context::Patient) => Some(Reach::Compartment(patient)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(perms: Perms) -> impl Fn(Option<ResourceType>) -> Perms {
        move |_| perms
    }

    #[test]
    fn v1_and_v2_parse_and_print_back() {
        for text in [
            "patient/Patient.read",
            "user/*.write",
            "system/*.*",
            "patient/*.rs",
            "user/DocumentReference.cruds",
            "launch/patient",
            "fhirUser",
        ] {
            assert_eq!(Scope::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn v2_letters_must_keep_their_order_and_appear_once() {
        for text in ["patient/*.sr", "patient/*.rr", "patient/*.x", "patient/*."] {
            assert_eq!(Scope::parse(text), None, "{text}");
        }
        assert_eq!(Scope::parse("patient/Observation.rs"), None);
        assert_eq!(Scope::parse("patient/Patient.rs?name=x"), None);
        assert_eq!(Scope::parse("clinic/Patient.rs"), None);
    }

    #[test]
    fn a_registration_outside_the_supported_scopes_names_the_words() {
        assert_eq!(
            Scopes::registered("patient/*.read system/Patient.cruds foo"),
            Err(UnsupportedScopes(vec![
                "system/Patient.cruds".into(),
                "foo".into()
            ]))
        );
        assert!(Scopes::registered("user/Patient.rs system/*.read openid").is_ok());
    }

    #[test]
    fn a_viewer_asking_for_everything_is_granted_read_and_search() {
        let registered = Scopes::registered("user/*.cruds").unwrap();
        let granted = Scopes::requested("user/*.cruds").grant(&registered, role(Perms::READ));
        assert_eq!(granted.to_string(), "user/*.rs");
        let v1 = Scopes::requested("user/*.*").grant(&registered, role(Perms::READ));
        assert_eq!(v1.to_string(), "user/*.read");
    }

    #[test]
    fn a_wildcard_request_narrows_to_the_registered_types() {
        let registered = Scopes::registered("patient/Patient.rs launch/patient").unwrap();
        let granted = Scopes::requested("patient/*.cruds launch/patient openid")
            .grant(&registered, role(Perms::ALL));
        assert_eq!(granted.to_string(), "patient/Patient.rs launch/patient");
    }

    #[test]
    fn the_grant_reaches_only_the_patient_in_context() {
        let patient = uuid::Uuid::new_v4();
        let grant = ScopeGrant {
            scopes: Scopes::requested("patient/*.rs"),
            patient: Some(patient),
        };
        assert_eq!(
            grant.reach(ResourceType::DocumentReference, Interaction::Search),
            Some(Reach::Compartment(patient))
        );
        assert_eq!(
            grant.reach(ResourceType::Patient, Interaction::Create),
            None
        );
        let user = ScopeGrant {
            scopes: Scopes::requested("patient/*.rs user/Patient.r"),
            patient: Some(patient),
        };
        assert_eq!(
            user.reach(ResourceType::Patient, Interaction::Read),
            Some(Reach::All)
        );
        let no_patient = ScopeGrant {
            scopes: Scopes::requested("patient/*.rs"),
            patient: None,
        };
        assert_eq!(
            no_patient.reach(ResourceType::Patient, Interaction::Read),
            None
        );
    }

    #[test]
    fn a_wildcard_never_reaches_the_audit_trail() {
        let grant = ScopeGrant {
            scopes: Scopes::requested("system/*.rs user/*.rs"),
            patient: None,
        };
        assert_eq!(
            grant.reach(ResourceType::AuditEvent, Interaction::Search),
            None
        );
        let named = ScopeGrant {
            scopes: Scopes::requested("system/AuditEvent.rs"),
            patient: None,
        };
        assert_eq!(
            named.reach(ResourceType::AuditEvent, Interaction::Search),
            Some(Reach::All)
        );
        let registered = Scopes::registered("user/AuditEvent.rs user/Patient.rs").unwrap();
        let granted = Scopes::requested("user/*.rs").grant(&registered, |_| Perms::READ);
        assert_eq!(granted.to_string(), "user/Patient.rs");
        assert!(Scopes::registered("patient/AuditEvent.rs").is_err());
    }

    #[test]
    fn binary_content_follows_its_document_reference_scope() {
        let grant = ScopeGrant {
            scopes: Scopes::requested("user/DocumentReference.r"),
            patient: None,
        };
        assert_eq!(
            grant.reach(ResourceType::Binary, Interaction::Read),
            Some(Reach::All)
        );
    }
}
