//! The public HTTP API: routes, handlers and the problem+json error model.

mod admission;
mod caller;
mod clients;
mod health;
mod jobs;
mod links;
use links::Links;
mod problem;
mod request_id;
mod source;
mod statements;
mod webhook_doc;

use webhook_doc::WebhooksDoc;

pub use crate::pipeline::answer::{ReportDto, StatementsResponse};
pub use admission::{Admission, CallPermit};
pub use caller::Authenticated;
pub use clients::{
    DeletedDto, DownloadUrlDto, ReadSide, StatementDto, StatementListDto, routes as read_routes,
    user_routes as user_read_routes,
};
pub use health::{healthz, metrics, openapi_yaml as serve_openapi, readyz};
pub use jobs::{JobRequest, routes as job_routes, user_routes as user_job_routes};
pub use problem::{
    ApiError, json_config, not_found, problem_with_instance, single_method_resource,
};
pub use request_id::{HttpRequestId, RequestSpan, X_REQUEST_ID};
pub use statements::{StatementsRequest, store_statements};

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
        jobs::create_job,
        jobs::read_job,
        jobs::cancel_job,
        health::healthz, health::readyz, health::metrics, health::openapi_yaml),
    modifiers(&BearerAuth, &ResponseHeaders, &Links, &WebhooksDoc),
    tags(
        (name = "statements", description = "The gateway's purpose"),
        (name = "jobs", description = "Statement jobs: the gateway polls Finpass for hours and stores each report when it is READY"),
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
            .description(Some("A service token (CALLER_TOKENS; its scopes decide the routes: store, read, delete) or a user JWT whose client-id claim matches client_id (store and read, never delete). The public listener (PUBLIC_LISTEN_ADDR) accepts user JWTs only."))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Documents the headers the edge middleware puts on every answer, on every response of every
/// operation (utoipa has no document-wide response headers; listing them per route would
/// repeat them a hundred times and drift).
struct ResponseHeaders;

impl utoipa::Modify for ResponseHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, header::HeaderBuilder};
        let request_id = HeaderBuilder::new()
            .description(Some(
                "The exchange's id (the caller's X-Request-Id if 1..128 visible ASCII, else a UUID); a problem's `instance`",
            ))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .insert("X-Request-Id".to_owned(), request_id.clone());
                    }
                }
            }
        }
    }
}

/// Renders [`ApiDoc`] as YAML.
pub fn openapi_yaml() -> Result<String, String> {
    use utoipa::OpenApi;
    ApiDoc::openapi().to_yaml().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    /// The edge middleware puts `X-Request-Id` on every answer: the document says so on each.
    #[test]
    fn every_documented_response_names_the_request_id_header() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(super::ApiDoc::openapi()).expect("json");
        let mut responses = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                for (status, resp) in op["responses"].as_object().expect("responses") {
                    responses += 1;
                    assert!(
                        resp["headers"].get("X-Request-Id").is_some(),
                        "{method} {path} {status}"
                    );
                }
            }
        }
        assert!(responses > 20);
    }

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
