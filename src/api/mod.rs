//! The public HTTP API: routes, handlers and the problem+json error model.

mod admission;
mod caller;
mod clients;
mod health;
mod problem;
mod request_id;
mod statements;

pub use admission::{Admission, CallPermit};
pub use caller::Authenticated;
pub use clients::{
    DeletedDto, DownloadUrlDto, ReadSide, StatementDto, StatementListDto, routes as read_routes,
};
pub use health::{healthz, metrics, openapi_yaml as serve_openapi, readyz};
pub use problem::{
    ApiError, json_config, not_found, problem_with_instance, single_method_resource,
};
pub use request_id::{HttpRequestId, RequestSpan, X_REQUEST_ID};
pub use statements::{ReportDto, StatementsRequest, StatementsResponse, store_statements};

/// The OpenAPI document of every endpoint, schema and problem response.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "finpass-gateway",
        description = "Stores customers' Finpass Account Aggregator statements in S3 and returns permanent object keys. Errors are RFC 9457 application/problem+json with a stable `code`.",
    ),
    paths(
        statements::store_statements,
        clients::list_statements,
        clients::read_statement,
        clients::statement_content,
        clients::download_url,
        clients::delete_statements,
        clients::delete_statement,
        health::healthz, health::readyz, health::metrics, health::openapi_yaml),
    modifiers(&BearerAuth),
    tags(
        (name = "statements", description = "The gateway's purpose"),
        (name = "read", description = "Stored statements: list, describe, stream, download links, purge (every call audited)"),
        (name = "operations", description = "Probes, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme: a service token or a user JWT.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("A service token (CALLER_TOKENS) or a user JWT whose client-id claim matches client_id."))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Renders [`ApiDoc`] as YAML.
pub fn openapi_yaml() -> Result<String, String> {
    use utoipa::OpenApi;
    ApiDoc::openapi().to_yaml().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    /// The checked-in spec is what other teams code against: it must be exactly what the code
    /// serves. Regenerate with `UPDATE_OPENAPI=1 cargo test --lib openapi`.
    #[test]
    fn openapi_file_matches_the_code() {
        let generated = super::openapi_yaml().expect("render");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.yaml");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write openapi.yaml");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi/openapi.yaml is stale: run UPDATE_OPENAPI=1 cargo test --lib openapi"
        );
    }
}
