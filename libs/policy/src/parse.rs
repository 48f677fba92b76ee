//! Turning policy text into a validated Cedar policy set, or into an error that points
//! at the line to fix.
//!
//! Cedar reports problems as diagnostics with byte offsets into the text; a security
//! reviewer editing a ConfigMap needs `policy.cedar:14:5:` instead, so every message is
//! rewritten here with the origin, line and column.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{Effect, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

use crate::PolicyError;

/// The schema every policy is validated against.
pub const SCHEMA_TEXT: &str = include_str!("../policies/qupia.cedarschema");

/// Built once: the schema is a constant of this crate, and a unit test proves it parses.
static VALIDATOR: LazyLock<Result<Validator, String>> = LazyLock::new(|| {
    Schema::from_cedarschema_str(SCHEMA_TEXT)
        .map(|(schema, _warnings)| Validator::new(schema))
        .map_err(|err| format!("the embedded policy schema is invalid: {err}"))
});

/// One policy of a loaded set, as its author annotated it.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: String,
    pub description: String,
    pub effect: Effect,
}

/// A parsed and validated policy set. Cedar's policy ids are replaced by the `@id`
/// annotations, so that decisions and audit records name rules as their authors did.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub set: PolicySet,
    /// In the order of the text.
    pub rules: Vec<Rule>,
}

pub(crate) fn parse(text: &str, origin: &str) -> Result<Parsed, PolicyError> {
    let located = Located { text, origin, statements: statement_starts(text) };
    let anonymous =
        PolicySet::from_str(text).map_err(|errors| located.invalid(errors.iter().map(|err| err as &dyn Diagnostic)))?;
    if let Some(template) = anonymous.templates().next() {
        let at = located.statement_offset(template.id());
        return Err(located.invalid_at(at, "templates are not supported; write static policies"));
    }
    let (set, rules) = rename_by_annotation(&anonymous, &located)?;

    let validator = VALIDATOR.as_ref().map_err(|err| PolicyError::Invalid(err.clone()))?;
    let result = validator.validate(&set, ValidationMode::Strict);
    // Warnings are refused too: they flag rules that can never apply and look-alike or
    // bidirectional characters, which have no place in a reviewed security policy.
    if !result.validation_passed_without_warnings() {
        let errors = result.validation_errors().map(|err| err as &dyn Diagnostic);
        let warnings = result.validation_warnings().map(|warn| warn as &dyn Diagnostic);
        return Err(located.invalid(errors.chain(warnings)));
    }
    Ok(Parsed { set, rules })
}

/// Rebuilds the set with each policy's `@id` as its id, refusing a policy without one
/// and two policies with the same one.
fn rename_by_annotation(anonymous: &PolicySet, located: &Located<'_>) -> Result<(PolicySet, Vec<Rule>), PolicyError> {
    let mut policies: Vec<(usize, &cedar_policy::Policy)> =
        anonymous.policies().map(|policy| (located.statement_offset(policy.id()), policy)).collect();
    policies.sort_by_key(|(offset, _)| *offset);

    let mut set = PolicySet::new();
    let mut rules = Vec::with_capacity(policies.len());
    let mut first_use: HashMap<String, usize> = HashMap::new();
    for (offset, policy) in policies {
        let id = match policy.annotation("id") {
            Some(id) if !id.trim().is_empty() => id.to_owned(),
            _ => return Err(located.invalid_at(offset, "policy has no @id annotation")),
        };
        if let Some(&earlier) = first_use.get(&id) {
            let (line, _) = line_and_column(located.text, earlier);
            let message = format!("duplicate @id \"{id}\" (first used on line {line})");
            return Err(located.invalid_at(offset, &message));
        }
        first_use.insert(id.clone(), offset);
        set.add(policy.new_id(PolicyId::new(&id))).map_err(|err| located.invalid_at(offset, &err.to_string()))?;
        rules.push(Rule {
            description: policy.annotation("description").unwrap_or_default().to_owned(),
            effect: policy.effect(),
            id,
        });
    }
    Ok((set, rules))
}

/// The text being loaded and where it came from, for error messages.
struct Located<'a> {
    text: &'a str,
    origin: &'a str,
    /// Byte offsets where the statements start, in order.
    statements: Vec<usize>,
}

impl Located<'_> {
    /// Where the statement Cedar named `policyN` starts. Cedar numbers the statements of
    /// a text `policy0`, `policy1`, … in order but keeps no public source position for a
    /// whole policy, hence [`statement_starts`].
    fn statement_offset(&self, id: &PolicyId) -> usize {
        let index = id.to_string().strip_prefix("policy").and_then(|n| n.parse::<usize>().ok());
        debug_assert!(index.is_some_and(|i| i < self.statements.len()), "cedar names statements policyN");
        index.and_then(|i| self.statements.get(i).copied()).unwrap_or(0)
    }

    fn invalid<'d>(&self, diagnostics: impl Iterator<Item = &'d dyn Diagnostic>) -> PolicyError {
        let mut lines: Vec<String> = Vec::new();
        for line in diagnostics.map(|diag| self.describe(diag)) {
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        PolicyError::Invalid(lines.join("\n"))
    }

    fn invalid_at(&self, offset: usize, message: &str) -> PolicyError {
        let (line, column) = line_and_column(self.text, offset);
        PolicyError::Invalid(format!("{}:{line}:{column}: {message}", self.origin))
    }

    /// `origin:line:column: message (help)`, positioned at the diagnostic's first label.
    fn describe(&self, diag: &dyn Diagnostic) -> String {
        let offset = diag.labels().and_then(|mut labels| labels.next()).map(|label| label.offset());
        let mut message = match offset {
            Some(offset) => {
                let (line, column) = line_and_column(self.text, offset);
                format!("{}:{line}:{column}: {diag}", self.origin)
            }
            None => format!("{}: {diag}", self.origin),
        };
        if let Some(help) = diag.help() {
            message.push_str(&format!(" ({help})"));
        }
        message
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Byte offsets where the statements of already-parsed text start: in valid Cedar a
/// `;` outside strings and comments ends a statement and appears nowhere else.
fn statement_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut in_statement = false;
    let mut chars = text.char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        match c {
            '/' if chars.peek().is_some_and(|&(_, next)| next == '/') => {
                // A comment runs to the end of the line.
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            c if c.is_whitespace() => {}
            _ => {
                if !in_statement {
                    starts.push(offset);
                    in_statement = true;
                }
                match c {
                    '"' => skip_string(&mut chars),
                    ';' => in_statement = false,
                    _ => {}
                }
            }
        }
    }
    starts
}

/// Skips to the closing quote of a string literal, honouring `\"` and `\\` escapes.
fn skip_string(chars: &mut impl Iterator<Item = (usize, char)>) {
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => return,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_schema_parses() {
        assert!(VALIDATOR.is_ok(), "{:?}", VALIDATOR.as_ref().err());
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "ab\nқұпия x";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 3), (2, 1));
        // "құпия" is five characters but ten bytes.
        assert_eq!(line_and_column(text, 3 + 10 + 1), (2, 7));
        assert_eq!(line_and_column(text, 999), (2, 8));
    }

    #[test]
    fn statements_are_found_past_comments_and_strings() {
        let text = concat!(
            "// a; comment\n",
            "@id(\"a;b\") permit(principal, action, resource);\n",
            "\n",
            "  forbid(principal, action, resource) when { \"\\\";\" == \"\" };",
        );
        let starts = statement_starts(text);
        assert_eq!(starts.len(), 2);
        assert!(text[starts[0]..].starts_with("@id"));
        assert!(text[starts[1]..].starts_with("forbid"));
    }
}
