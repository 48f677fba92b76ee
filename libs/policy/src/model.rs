//! How a gateway question is spelled in Cedar: the principal, action, resource and
//! context of qupia.cedarschema.

use std::str::FromStr;

use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression};
use qupia_domain::Purpose;

use crate::{AccessRequest, Resource};

/// The concrete Cedar request for one question.
pub(crate) fn request(access: &AccessRequest<'_>) -> Result<Request, String> {
    let context = Context::from_pairs([(
        "recipient".to_owned(),
        RestrictedExpression::new_string(access.recipient.unwrap_or_default().to_owned()),
    )])
    .map_err(|err| format!("could not build the request context: {err}"))?;
    // No schema here: a question the schema rules out (a field for statistics, an
    // unknown caller) is simply not permitted, rather than an error.
    Request::new(principal(access.caller)?, action(access.purpose)?, resource(access.resource)?, context, None)
        .map_err(|err| format!("could not build the request: {err}"))
}

/// The same question with the context (the recipient) left unknown, for asking whether
/// any recipient could be permitted.
pub(crate) fn request_any_recipient(caller: &str, purpose: Purpose, resource: Resource) -> Result<Request, String> {
    Ok(Request::builder()
        .principal(principal(caller)?)
        .action(action(purpose)?)
        .resource(self::resource(resource)?)
        .build())
}

fn principal(caller: &str) -> Result<EntityUid, String> {
    entity("Service", caller)
}

fn action(purpose: Purpose) -> Result<EntityUid, String> {
    entity("Action", purpose.as_str())
}

fn resource(resource: Resource) -> Result<EntityUid, String> {
    let (type_name, id) = resource.entity();
    entity(type_name, id)
}

fn entity(type_name: &str, id: &str) -> Result<EntityUid, String> {
    let type_name =
        EntityTypeName::from_str(type_name).map_err(|err| format!("invalid entity type {type_name}: {err}"))?;
    Ok(EntityUid::from_type_name_and_id(type_name, EntityId::new(id)))
}
