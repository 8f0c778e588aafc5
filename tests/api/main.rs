//! Integration tests: one binary (faster to link), one module per concern.

mod audit;
mod auth;
mod auth_failures;
mod connections;
mod deadlines;
mod faults;
mod finpass_edges;
mod headers;
mod helpers;
mod http_api;
mod jobs;
mod jobs_sqs;
mod jwks;
mod limits;
mod listeners;
mod process;
mod purge;
mod read_side;
mod retention;
mod scopes;
mod security;
mod startup;
mod statements;
mod tokens;
mod validation;
mod write_path;
