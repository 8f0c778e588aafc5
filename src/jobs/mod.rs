//! Statement jobs (#19): the caller asks once; the gateway polls Finpass on a ladder, stores each
//! report when it is READY and tells the caller by a signed webhook. Jobs use the pipeline,
//! storage and audit, never the other way round: nothing outside `jobs`, `api` and `startup`
//! imports this module.

pub mod engine;
pub mod ladder;
pub mod queue;
pub mod record;
pub mod step;
pub mod store;
pub mod webhook;
