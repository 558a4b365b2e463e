//! The shared kernel of the demo services: the few types every service must agree on, and
//! nothing else (no I/O, no dependencies beyond `thiserror`).

mod customer;
mod error_code;
pub mod seed;

pub use customer::{CustomerId, InvalidCustomerId};
pub use error_code::ErrorCode;
