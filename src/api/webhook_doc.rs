//! The OpenAPI 3.1 `webhooks` section: what a job POSTs to its `webhook_url`. utoipa 5 has no
//! field for it, so it is added as a top-level key through the document's extensions (which
//! serialise flattened), referring to the `Job` schema of the routes.

use serde_json::json;

/// Adds `webhooks.statement_job`.
pub(super) struct WebhooksDoc;

impl utoipa::Modify for WebhooksDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .extensions
            .get_or_insert_with(Default::default)
            .insert("webhooks".to_owned(), webhooks());
    }
}

fn header(name: &str, description: &str, example: &str) -> serde_json::Value {
    json!({
        "name": name,
        "in": "header",
        "required": true,
        "description": description,
        "schema": {"type": "string"},
        "example": example,
    })
}

fn webhooks() -> serde_json::Value {
    let example_job = json!({
        "job_id": "job_3f9c2a7d41e04b7e9a1c5d2e8f6b0a13",
        "client_id": "aa_demo_pending",
        "request_id": null,
        "state": "completed",
        "created_at": "2026-12-03T19:00:00Z",
        "updated_at": "2026-12-03T19:00:16Z",
        "deadline_at": "2026-12-04T01:00:00Z",
        "next_poll_at": null,
        "polls": 3,
        "reports": [],
        "summary": {"stored": 0, "pending": 0, "failed": 0},
        "error": null,
        "webhook": {"url": "https://hooks.example.com/finpass", "delivered": 0, "failed": 0, "last_status": null}
    });
    json!({
        "statement_job": {
            "post": {
                "summary": "A statement job's event (Standard Webhooks v1)",
                "description": "Sent to the job's `webhook_url`, which must lie under one of the caller's prefixes in WEBHOOK_ENDPOINTS_FILE. `statement_job.updated` when new reports were stored while others are still PENDING; exactly one terminal event per job: `statement_job.completed`, `.expired`, `.failed` or `.cancelled`. Events of one job arrive in order. Verify `webhook-signature` (HMAC-SHA256 with the secret's decoded bytes over `{webhook-id}.{webhook-timestamp}.{body}`, base64; space-separated `v1,<sig>`, two during a secret rotation) with any Standard Webhooks library, and deduplicate on `webhook-id`. A 2xx within 15 s delivers; otherwise the event is retried about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h later (WEBHOOK_RETRY_SCHEDULE, ±20 % jitter), after `Retry-After` on 429/503; 410 stops the job's deliveries. Redirects are not followed. The body never holds a PDF, a link or a token.",
                "tags": ["jobs"],
                "parameters": [
                    header("webhook-id", "The event's id: the same on every retry of it (deduplicate on it)", "msg_2b6f0c1e9d7a4c35a8e1f0b7d3c9a210"),
                    header("webhook-timestamp", "Unix seconds of this attempt (refuse old ones: replay protection)", "1796324416"),
                    header("webhook-signature", "Space-separated `v1,<base64 HMAC-SHA256>`, one per current secret", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="),
                ],
                "requestBody": {
                    "required": true,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["type", "timestamp", "data"],
                                "properties": {
                                    "type": {
                                        "type": "string",
                                        "enum": [
                                            "statement_job.updated",
                                            "statement_job.completed",
                                            "statement_job.expired",
                                            "statement_job.failed",
                                            "statement_job.cancelled"
                                        ]
                                    },
                                    "timestamp": {"type": "string", "format": "date-time"},
                                    "data": {"$ref": "#/components/schemas/Job"}
                                }
                            },
                            "example": {
                                "type": "statement_job.completed",
                                "timestamp": "2026-12-03T19:00:16Z",
                                "data": example_job
                            }
                        }
                    }
                },
                "responses": {
                    "2XX": {"description": "Delivered"},
                    "410": {"description": "Gone: no more deliveries for this job"},
                    "429": {"description": "Retried, no sooner than `Retry-After`"},
                    "503": {"description": "Retried, no sooner than `Retry-After`"}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    /// The section is in the document and its schema reference resolves.
    #[test]
    fn the_document_describes_the_webhook() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(super::super::ApiDoc::openapi()).expect("json");
        let post = &doc["webhooks"]["statement_job"]["post"];
        assert!(post["requestBody"].is_object(), "{doc:#}");
        let reference = post["requestBody"]["content"]["application/json"]["schema"]["properties"]
            ["data"]["$ref"]
            .as_str()
            .expect("a $ref");
        let name = reference.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{reference}"
        );
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
