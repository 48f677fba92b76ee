//! The embedded default policy decides exactly as DESIGN.md's purpose table says.

use qupia_domain::{Field, Purpose};
use qupia_policy::{AccessRequest, Policy, Resource};

const ACCOUNTS: &str = "spiffe://qupia/ns/default/sa/accounts";
const MARKETING: &str = "spiffe://qupia/ns/default/sa/marketing";
const QUPIACTL: &str = "spiffe://qupia/ns/default/sa/qupiactl";
const OFFICER: &str = "spiffe://qupia/ns/default/sa/officer-a";
const UNKNOWN: &str = "spiffe://qupia/ns/default/sa/reporting";

/// Columns, in the order of [`Resource::ALL`].
const COLUMNS: &str = "surname given_name patronymic email phone document aggregates";

/// The purpose table of DESIGN.md, written out: `x` = may see, `.` = denied.
#[rustfmt::skip]
const TABLE: &[(&str, Purpose, &str)] = &[
    //                                           sur giv pat ema pho doc agg
    (ACCOUNTS,  Purpose::ServiceDelivery,    "x   x   x   x   x   .   ."),
    (ACCOUNTS,  Purpose::Identification,     "x   x   x   x   x   x   ."),
    (ACCOUNTS,  Purpose::Communication,      ".   .   .   x   x   .   ."),
    (ACCOUNTS,  Purpose::Advertising,        ".   .   .   .   .   .   ."),
    (ACCOUNTS,  Purpose::Statistics,         ".   .   .   .   .   .   ."),
    (ACCOUNTS,  Purpose::LegalDisclosure,    ".   .   .   .   .   .   ."),
    (ACCOUNTS,  Purpose::ThirdPartyTransfer, ".   .   .   x   x   .   ."),

    (MARKETING, Purpose::ServiceDelivery,    ".   .   .   .   .   .   ."),
    (MARKETING, Purpose::Identification,     ".   .   .   .   .   .   ."),
    (MARKETING, Purpose::Communication,      ".   .   .   .   .   .   ."),
    (MARKETING, Purpose::Advertising,        ".   .   .   x   x   .   ."),
    (MARKETING, Purpose::Statistics,         ".   .   .   .   .   .   x"),
    (MARKETING, Purpose::LegalDisclosure,    ".   .   .   .   .   .   ."),
    (MARKETING, Purpose::ThirdPartyTransfer, ".   .   .   .   .   .   ."),

    (QUPIACTL,  Purpose::ServiceDelivery,    ".   .   .   .   .   .   ."),
    (QUPIACTL,  Purpose::Identification,     ".   .   .   .   .   .   ."),
    (QUPIACTL,  Purpose::Communication,      ".   .   .   .   .   .   ."),
    (QUPIACTL,  Purpose::Advertising,        ".   .   .   .   .   .   ."),
    (QUPIACTL,  Purpose::Statistics,         ".   .   .   .   .   .   ."),
    (QUPIACTL,  Purpose::LegalDisclosure,    ".   .   .   .   .   .   ."),
    (QUPIACTL,  Purpose::ThirdPartyTransfer, ".   .   .   .   .   .   ."),

    // A disclosure officer: only legal disclosure, and the gateway narrows it further
    // to the approved request's people and fields.
    (OFFICER,   Purpose::ServiceDelivery,    ".   .   .   .   .   .   ."),
    (OFFICER,   Purpose::Identification,     ".   .   .   .   .   .   ."),
    (OFFICER,   Purpose::Communication,      ".   .   .   .   .   .   ."),
    (OFFICER,   Purpose::Advertising,        ".   .   .   .   .   .   ."),
    (OFFICER,   Purpose::Statistics,         ".   .   .   .   .   .   ."),
    (OFFICER,   Purpose::LegalDisclosure,    "x   x   x   x   x   x   ."),
    (OFFICER,   Purpose::ThirdPartyTransfer, ".   .   .   .   .   .   ."),

    (UNKNOWN,   Purpose::ServiceDelivery,    ".   .   .   .   .   .   ."),
    (UNKNOWN,   Purpose::Identification,     ".   .   .   .   .   .   ."),
    (UNKNOWN,   Purpose::Communication,      ".   .   .   .   .   .   ."),
    (UNKNOWN,   Purpose::Advertising,        ".   .   .   .   .   .   ."),
    (UNKNOWN,   Purpose::Statistics,         ".   .   .   .   .   .   ."),
    (UNKNOWN,   Purpose::LegalDisclosure,    ".   .   .   .   .   .   ."),
    (UNKNOWN,   Purpose::ThirdPartyTransfer, ".   .   .   .   .   .   ."),
];

fn recipient_for(purpose: Purpose) -> Option<&'static str> {
    (purpose == Purpose::ThirdPartyTransfer).then_some("Kaspi Bank JSC")
}

#[test]
fn decisions_equal_the_design_table_for_every_caller_purpose_and_resource() {
    let policy = Policy::default_policy();
    let columns: Vec<&str> = COLUMNS.split_whitespace().collect();
    assert_eq!(columns.len(), Resource::ALL.len());
    assert_eq!(TABLE.len(), 5 * Purpose::ALL.len(), "every caller × purpose is listed");

    let mut mismatches = Vec::new();
    for &(caller, purpose, row) in TABLE {
        let expected: Vec<bool> = row.split_whitespace().map(|cell| cell == "x").collect();
        assert_eq!(expected.len(), Resource::ALL.len(), "row for {caller} {purpose}");
        for (column, (resource, expected)) in Resource::ALL.into_iter().zip(expected).enumerate() {
            let decision =
                policy.decide(&AccessRequest { caller, purpose, resource, recipient: recipient_for(purpose) });
            if decision.allowed != expected {
                mismatches
                    .push(format!("{caller} {purpose} {}: expected {expected}, got {decision:?}", columns[column]));
            }
            assert_eq!(decision.allowed, !decision.policies.is_empty());
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn permits_purpose_matches_the_table_rows() {
    let policy = Policy::default_policy();
    for &(caller, purpose, row) in TABLE {
        let any_allowed = row.contains('x');
        assert_eq!(policy.permits_purpose(caller, purpose), any_allowed, "{caller} {purpose}");
    }
}

#[test]
fn advertising_never_allows_a_name_part_to_anyone() {
    let policy = Policy::default_policy();
    for caller in [ACCOUNTS, MARKETING, QUPIACTL, OFFICER, UNKNOWN] {
        for field in Field::ALL.into_iter().filter(|field| field.is_name_part()) {
            let decision = policy.decide(&AccessRequest {
                caller,
                purpose: Purpose::Advertising,
                resource: Resource::Field(field),
                recipient: None,
            });
            assert!(!decision.allowed, "{caller} may see {field} for advertising");
        }
    }
}

#[test]
fn statistics_never_allows_a_field_only_aggregates() {
    let policy = Policy::default_policy();
    for caller in [ACCOUNTS, MARKETING, QUPIACTL, OFFICER, UNKNOWN] {
        let fields = Field::ALL.into_iter().map(Resource::Field);
        for resource in fields.chain([Resource::Document]) {
            let decision =
                policy.decide(&AccessRequest { caller, purpose: Purpose::Statistics, resource, recipient: None });
            assert!(!decision.allowed, "{caller} may see {resource:?} for statistics");
        }
    }
    let aggregates = policy.decide(&AccessRequest {
        caller: MARKETING,
        purpose: Purpose::Statistics,
        resource: Resource::Aggregate,
        recipient: None,
    });
    assert!(aggregates.allowed);
    assert_eq!(aggregates.policies, ["statistics-aggregates"]);
}

#[test]
fn allowed_fields_splits_a_request_into_granted_and_refused_with_reasons() {
    let policy = Policy::default_policy();
    let (allowed, denied) = policy.allowed_fields(MARKETING, Purpose::Advertising, &[], None);
    assert_eq!(allowed, [Field::Email, Field::Phone]);
    let refused: Vec<Field> = denied.iter().map(|(field, _)| *field).collect();
    assert_eq!(refused, [Field::Surname, Field::GivenName, Field::Patronymic]);
    assert_eq!(
        denied[0].1.reason,
        "no policy permits spiffe://qupia/ns/default/sa/marketing to see surname for advertising"
    );

    let wanted = [Field::Phone, Field::Surname, Field::Phone];
    let (allowed, denied) = policy.allowed_fields(ACCOUNTS, Purpose::Communication, &wanted, None);
    assert_eq!(allowed, [Field::Phone], "each field is judged once");
    assert_eq!(denied.len(), 1);
}

#[test]
fn a_permit_names_its_rule_and_a_default_deny_names_none() {
    let policy = Policy::default_policy();
    let allowed = policy.decide(&AccessRequest {
        caller: MARKETING,
        purpose: Purpose::Advertising,
        resource: Resource::Field(Field::Email),
        recipient: None,
    });
    assert!(allowed.allowed);
    assert_eq!(allowed.policies, ["advertising-contacts"]);
    assert_eq!(allowed.reason, "permitted by \"advertising-contacts\"");

    let denied = policy.decide(&AccessRequest {
        caller: ACCOUNTS,
        purpose: Purpose::ThirdPartyTransfer,
        resource: Resource::Document,
        recipient: Some("Kaspi Bank JSC"),
    });
    assert!(!denied.allowed);
    assert!(denied.policies.is_empty());
    assert_eq!(
        denied.reason,
        "no policy permits spiffe://qupia/ns/default/sa/accounts to see document \
         for third_party_transfer to \"Kaspi Bank JSC\""
    );
}

#[test]
fn explain_names_the_determining_rule_and_the_clause_it_implements() {
    let policy = Policy::default_policy();
    let explanation = policy.explain(&AccessRequest {
        caller: OFFICER,
        purpose: Purpose::LegalDisclosure,
        resource: Resource::Document,
        recipient: None,
    });
    assert!(explanation.decision.allowed);
    assert_eq!(explanation.rules.len(), 1);
    let rule = &explanation.rules[0];
    assert_eq!(rule.id, "legal-disclosure");
    assert_eq!(rule.effect, "permit");
    assert!(rule.description.contains("clause 3.4"), "{}", rule.description);
    assert!(explanation.errors.is_empty());
}

#[test]
fn explain_of_a_default_deny_says_no_policy_permits_it() {
    let policy = Policy::default_policy();
    let explanation = policy.explain(&AccessRequest {
        caller: UNKNOWN,
        purpose: Purpose::ServiceDelivery,
        resource: Resource::Field(Field::GivenName),
        recipient: None,
    });
    assert!(!explanation.decision.allowed);
    assert!(explanation.rules.is_empty());
    assert_eq!(
        explanation.decision.reason,
        "no policy permits spiffe://qupia/ns/default/sa/reporting to see given_name \
         for service_delivery"
    );
}

#[test]
fn every_default_rule_cites_a_clause_of_the_privacy_policy() {
    let policy = Policy::default_policy();
    let ids: Vec<&str> = policy.rule_ids().collect();
    assert_eq!(
        ids,
        [
            "service-delivery",
            "identification",
            "communication-contacts",
            "advertising-contacts",
            "statistics-aggregates",
            "legal-disclosure",
            "third-party-transfer-contacts",
        ]
    );
    for (purpose, id) in Purpose::ALL.into_iter().zip(&ids) {
        let caller = match purpose {
            Purpose::Advertising | Purpose::Statistics => MARKETING,
            Purpose::LegalDisclosure => OFFICER,
            _ => ACCOUNTS,
        };
        let resource = match purpose {
            Purpose::Statistics => Resource::Aggregate,
            _ => Resource::Field(Field::Email),
        };
        let explanation =
            policy.explain(&AccessRequest { caller, purpose, resource, recipient: recipient_for(purpose) });
        assert_eq!(explanation.rules.len(), 1, "{purpose}");
        assert_eq!(explanation.rules[0].id, *id);
        assert!(explanation.rules[0].description.starts_with("clause "), "{id}: {}", explanation.rules[0].description);
    }
}

#[test]
fn the_hash_is_the_sha256_of_the_text_and_debug_shows_only_hash_and_ids() {
    let policy = Policy::default_policy();
    assert_eq!(policy.text(), Policy::DEFAULT_TEXT);
    let hash = policy.hash_hex();
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(Policy::parse(Policy::DEFAULT_TEXT, "copy").map(|p| p.hash_hex()).ok(), Some(hash.clone()));

    let shown = format!("{policy:?}");
    assert!(shown.contains(&hash));
    assert!(shown.contains("advertising-contacts"));
    assert!(!shown.contains("permit"), "{shown}");
}
