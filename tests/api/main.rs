//! Integration tests: one binary (faster to link), one module per concern.

mod auth;
mod deadlines;
mod faults;
mod helpers;
mod http_api;
mod jwks;
mod limits;
mod security;
mod startup;
mod statements;
mod validation;
