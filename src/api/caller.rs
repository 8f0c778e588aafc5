//! The `Caller` extractor: authentication happens in `auth`; this is where its answer meets
//! HTTP (the header in, a problem+json out).

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use futures_util::future::LocalBoxFuture;

use super::{ApiError, source::source_of};
use crate::auth::{Audience, AuthError, Authenticator, Caller};

/// Extracting a [`Caller`] authenticates the request.
pub struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = ApiError;
    /// Asynchronous because a token with an unknown `kid` may refresh the JWKS first.
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = req.app_data::<web::Data<Authenticator>>().cloned();
        // Each listener's `App` says which audience it serves; without it, the narrower one.
        let audience = req
            .app_data::<Audience>()
            .copied()
            .unwrap_or(Audience::Public);
        // The source address as the audit trail records it: the peer, or the first
        // `X-Forwarded-For` hop from a trusted proxy, so users behind the ingress do not
        // share one budget of failed authentications.
        let source = source_of(req);
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Box::pin(async move {
            match auth {
                Some(auth) => auth
                    .authenticate(header.as_deref(), audience, source)
                    .await
                    .map(Self)
                    .map_err(ApiError::from),
                // Fail closed: a route that asks for a caller never runs unauthenticated.
                None => Err(AuthError::Unauthorized.into()),
            }
        })
    }
}
