//! The demo services' gRPC contracts, generated at build time from `proto/ducktrace/demo/v1`.
//!
//! Messages are prost structs at the crate root (`demo_contracts::Order`); each service `X` has
//! `x_client::XClient` and `x_server::{X, XServer}`.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/contracts.rs"));
}

pub use generated::*;
