//! OpenAPI links: how one operation's answer feeds the next (store → describe → content; a
//! listing → describe; a job → the job → its cancellation). They document the flows a client follows, and schemathesis's stateful
//! phase walks them with real ids instead of guessing ids that only ever get 404.
//!
//! utoipa's path macro cannot declare links, so they are added to the rendered document here,
//! in one place, by operation id. utoipa 5.5 serialises a link's `operation_id` in snake case,
//! which no OpenAPI tool reads, so the field is written through the link's flattened
//! extensions under its real name, `operationId` (the test below reads the rendered document).

use utoipa::openapi::{OpenApi, RefOr, extensions::Extensions, link::LinkBuilder};

/// `(from operation, status, link name, to operation, [(parameter, runtime expression)])`.
type LinkSpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const LINKS: &[LinkSpec] = &[
    (
        "store_statements",
        "200",
        "DescribeFirstStatement",
        "read_statement",
        &[
            ("client_id", "$response.body#/client_id"),
            ("statement_id", "$response.body#/reports/0/statement_id"),
        ],
    ),
    (
        "store_statements",
        "200",
        "ReadFirstStatementContent",
        "statement_content",
        &[
            ("client_id", "$response.body#/client_id"),
            ("statement_id", "$response.body#/reports/0/statement_id"),
        ],
    ),
    (
        "store_statements",
        "200",
        "ListClientStatements",
        "list_statements",
        &[("client_id", "$response.body#/client_id")],
    ),
    (
        "list_statements",
        "200",
        "DescribeFirstListed",
        "read_statement",
        &[
            ("client_id", "$response.body#/client_id"),
            ("statement_id", "$response.body#/statements/0/statement_id"),
        ],
    ),
    (
        "create_job",
        "202",
        "ReadJob",
        "read_job",
        &[("job_id", "$response.body#/job_id")],
    ),
    (
        "create_job",
        "202",
        "CancelJob",
        "cancel_job",
        &[("job_id", "$response.body#/job_id")],
    ),
    (
        "read_job",
        "200",
        "CancelReadJob",
        "cancel_job",
        &[("job_id", "$response.body#/job_id")],
    ),
];

/// Adds [`LINKS`] to the document's responses.
pub struct Links;

impl utoipa::Modify for Links {
    fn modify(&self, openapi: &mut OpenApi) {
        for (from, status, name, to, parameters) in LINKS {
            let operations = openapi.paths.paths.values_mut().flat_map(|item| {
                [&mut item.get, &mut item.post, &mut item.delete]
                    .into_iter()
                    .flatten()
            });
            for operation in operations {
                if operation.operation_id.as_deref() != Some(*from) {
                    continue;
                }
                if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) {
                    let link = parameters
                        .iter()
                        .fold(LinkBuilder::new(), |l, (p, e)| l.parameter(*p, *e))
                        .extensions(Some(Extensions::from_iter([("operationId", *to)])))
                        .build();
                    response.links.insert((*name).to_owned(), RefOr::T(link));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    /// Every link starts at a documented response and names an operation that exists with
    /// exactly the parameters it fills, so a rename cannot leave a dangling link.
    #[test]
    fn every_link_joins_documented_operations_and_parameters() {
        let doc = serde_json::to_value(crate::api::ApiDoc::openapi()).expect("json");
        let mut operations = std::collections::HashMap::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("item").values() {
                if let Some(id) = op["operationId"].as_str() {
                    operations.insert(id.to_owned(), op.clone());
                }
            }
        }
        for (from, status, name, to, parameters) in super::LINKS {
            let link = &operations[*from]["responses"][*status]["links"][*name];
            assert_eq!(link["operationId"], *to, "{from} {status} {name}");
            let wanted: Vec<&str> = operations[*to]["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let given: Vec<&str> = parameters.iter().map(|(p, _)| *p).collect();
            assert_eq!(given, wanted, "{from} → {to}");
        }
    }
}
