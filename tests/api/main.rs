//! Integration tests: one binary (faster to link), one module per concern.

mod auth;
mod faults;
mod finpass_edges;
mod helpers;
mod http_api;
mod process;
mod read_side;
mod security;
mod statements;
mod validation;
mod write_path;
