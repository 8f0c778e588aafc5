//! Integration tests: one binary (faster to link), one module per concern.

mod audit;
mod auth;
mod connections;
mod deadlines;
mod faults;
mod finpass_edges;
mod headers;
mod helpers;
mod http_api;
mod jwks;
mod limits;
mod process;
mod purge;
mod read_side;
mod retention;
mod security;
mod startup;
mod statements;
mod validation;
mod write_path;
