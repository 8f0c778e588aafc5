//! The `Caller` extractor: authentication happens in `auth`; this is where its answer meets
//! HTTP (the header in, a problem+json out).

use std::future::Ready;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use super::ApiError;
use crate::auth::{AuthError, Authenticator, Caller};

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized => Self::Unauthorized,
            AuthError::Forbidden => Self::Forbidden,
            AuthError::RateLimited { retry_after } => Self::RateLimited { retry_after },
        }
    }
}

/// Extracting a [`Caller`] authenticates the request.
pub struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<Authenticator>>() {
            Some(auth) => {
                let header = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                auth.authenticate(header).map(Self).map_err(ApiError::from)
            }
            // Fail closed: a route that asks for a caller never runs unauthenticated.
            None => Err(ApiError::Unauthorized),
        };
        std::future::ready(result)
    }
}
