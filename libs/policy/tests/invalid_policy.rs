//! A policy that is wrong is refused, with a message that points at the line to fix.

use qupia_policy::{Policy, PolicyError};

/// The message of the error `text` is refused with.
fn refusal(text: &str) -> String {
    match Policy::parse(text, "policy.cedar") {
        Ok(policy) => panic!("expected a refusal, got {policy:?}"),
        Err(PolicyError::Invalid(message)) => message,
        Err(other) => panic!("expected an invalid-policy error, got {other}"),
    }
}

#[test]
fn a_syntax_error_names_the_origin_line_and_column() {
    let text = r#"@id("contacts")
permit (
    principal == Service::"spiffe://qupia/ns/default/sa/marketing",
    action == Action::"advertising",
    resource
)
when { [Field::"email", Field::"phone"].contains(resource) ]
;"#;
    let message = refusal(text);
    assert!(message.starts_with("policy.cedar:7:"), "{message}");
    assert!(message.contains("unexpected token"), "{message}");
}

#[test]
fn line_numbers_count_from_the_top_of_a_long_file() {
    let default_lines = Policy::DEFAULT_TEXT.lines().count();
    // After the default: a blank line, the @id line, then the broken one.
    let text =
        format!("{}\n@id(\"broken\")\npermit (principal, action, resource) when {{ oops }};\n", Policy::DEFAULT_TEXT);
    let message = refusal(&text);
    let expected = format!("policy.cedar:{}:45:", default_lines + 3);
    assert!(message.starts_with(&expected), "expected {expected}, got {message}");
}

#[test]
fn an_unknown_entity_type_is_caught_by_schema_validation() {
    let text = r#"@id("users")
permit (
    principal == User::"alice",
    action == Action::"service_delivery",
    resource
);"#;
    let message = refusal(text);
    assert!(message.starts_with("policy.cedar:3:18:"), "{message}");
    assert!(message.contains("unrecognized entity type `User`"), "{message}");
}

#[test]
fn an_unknown_action_is_caught_by_schema_validation() {
    let text = r#"@id("marketing")
permit (
    principal == Service::"spiffe://qupia/ns/default/sa/marketing",
    action == Action::"marketing",
    resource
);"#;
    let message = refusal(text);
    assert!(message.starts_with("policy.cedar:4:"), "{message}");
    assert!(message.contains("unrecognized action `Action::\"marketing\"`"), "{message}");
}

#[test]
fn a_misspelt_field_is_refused_instead_of_never_matching() {
    let text = r#"@id("typo")
permit (
    principal == Service::"spiffe://qupia/ns/default/sa/accounts",
    action == Action::"communication",
    resource == Field::"emial"
);"#;
    let message = refusal(text);
    assert!(message.starts_with("policy.cedar:5:"), "{message}");
    assert!(message.contains("emial"), "{message}");
}

#[test]
fn no_policy_can_grant_a_field_for_statistics() {
    let text = r#"
@id("statistics-emails")
permit (
    principal == Service::"spiffe://qupia/ns/default/sa/marketing",
    action == Action::"statistics",
    resource == Field::"email"
);"#;
    let message = refusal(text);
    assert!(message.starts_with("policy.cedar:2:1:"), "{message}");
}

#[test]
fn a_policy_without_an_id_is_refused_naming_its_line() {
    let text = r#"@id("all")
permit (principal == Service::"spiffe://a", action == Action::"communication", resource);

@description("clause 2.2.3: no id here")
permit (principal == Service::"spiffe://b", action == Action::"communication", resource);"#;
    assert_eq!(refusal(text), "policy.cedar:4:1: policy has no @id annotation");
}

#[test]
fn a_duplicate_id_is_refused_naming_both_lines() {
    let text = r#"@id("same")
permit (principal == Service::"spiffe://a", action == Action::"communication", resource);
// the same id again, on line 4
@id("same")
permit (principal == Service::"spiffe://b", action == Action::"communication", resource);"#;
    assert_eq!(refusal(text), "policy.cedar:4:1: duplicate @id \"same\" (first used on line 1)");
}

#[test]
fn templates_are_refused() {
    let text = r#"@id("template")
permit (principal == ?principal, action == Action::"communication", resource);"#;
    let message = refusal(text);
    assert!(message.starts_with("policy.cedar:1:1: templates are not supported"), "{message}");
}

#[test]
fn look_alike_characters_are_refused() {
    // "Kаspi" with a Cyrillic "а": reads as one recipient, matches another.
    let text = concat!(
        "@id(\"kaspi\")\n",
        "permit (principal, action == Action::\"third_party_transfer\", resource)\n",
        "when { context.recipient == \"K\u{0430}spi\" };",
    );
    let message = refusal(text);
    assert!(message.starts_with("policy.cedar:3:"), "{message}");
    assert!(message.contains("mixed scripts"), "{message}");
}

#[test]
fn every_problem_is_reported_each_on_its_own_line() {
    let text = r#"@id("one")
permit (principal == User::"a", action == Action::"communication", resource);
@id("two")
permit (principal, action == Action::"marketing", resource);"#;
    let message = refusal(text);
    let lines: Vec<&str> = message.lines().collect();
    assert!(lines.iter().any(|line| line.starts_with("policy.cedar:2:")), "{message}");
    assert!(lines.iter().any(|line| line.starts_with("policy.cedar:4:")), "{message}");
    assert!(lines.iter().all(|line| line.starts_with("policy.cedar:")), "{message}");
}
