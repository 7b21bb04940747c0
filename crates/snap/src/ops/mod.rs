//! The operations: each takes `*Options`, returns a result with statistics.

pub mod bounds;
pub mod check;
pub mod copy;
pub mod create;
pub mod dbdiff;
pub mod diff;
pub mod dump;
pub mod find;
pub mod gc;
pub mod gc_shared;
pub mod ls;
pub mod migration;
pub mod repair;
pub mod restore;
pub mod stats;
pub mod sync;
pub mod unlock;
