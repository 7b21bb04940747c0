//! The operations: each takes `*Options`, returns a result with statistics.

pub mod create;
pub mod ls;
pub mod restore;
