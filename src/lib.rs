//! finpass-gateway: stores customers' Finpass Account Aggregator statements in the company's
//! S3 bucket and returns permanent object keys. See README.md for the tour.

pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod download;
pub mod finpass;
pub mod link_policy;
pub mod metrics;
pub mod pipeline;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod startup;
pub mod storage;
pub mod telemetry;
