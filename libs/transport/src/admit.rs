//! The interceptor every Qupia service puts in front of its APIs.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::{CallerIdentity, ServiceIdentity};

/// Who may call a service.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Any identity our CA vouches for (the service then authorises per call).
    AnyIdentity,
    /// Only these identities.
    Only(Arc<[ServiceIdentity]>),
}

/// Builds an interceptor that establishes the caller's identity from its certificate
/// (or, in `insecure-dev`, from configuration — never from request metadata), refuses
/// callers that `admission` does not admit with PERMISSION_DENIED, and puts the
/// [`ServiceIdentity`] into the request's extensions for the handlers.
pub fn admit(
    admission: Admission,
    insecure_dev: Option<ServiceIdentity>,
    service: &'static str,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let caller = CallerIdentity::of(&request, insecure_dev.as_ref());
        let admitted = match (&admission, caller.service()) {
            (_, None) => None,
            (Admission::AnyIdentity, Some(identity)) => Some(identity.clone()),
            (Admission::Only(trusted), Some(identity)) => trusted.contains(identity).then(|| identity.clone()),
        };
        match admitted {
            Some(identity) => {
                request.extensions_mut().insert(identity);
                Ok(request)
            }
            None => {
                tracing::warn!(caller = caller.label(), service, "call refused: caller not admitted");
                Err(Status::permission_denied(format!("this caller may not call the {service}")))
            }
        }
    }
}

/// The identity [`admit`] established for this request.
pub fn caller_of<T>(request: &Request<T>) -> Result<ServiceIdentity, Status> {
    request
        .extensions()
        .get::<ServiceIdentity>()
        .cloned()
        .ok_or_else(|| Status::permission_denied("the caller has no identity"))
}
