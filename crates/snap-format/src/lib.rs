//! snap's formats: bytes in, bytes out, no I/O.
//!
//! Content ids and how a repository keys them ([`id`]), the one error type
//! ([`error`]), compression and page deltas ([`compress`], [`delta`],
//! [`grouping`]), the chunker ([`chunker`]), the repository's format
//! parameters ([`config`]), and the encodings of trees, snapshots and pack
//! files ([`tree`], [`snapshot`], [`pack`]). docs/format.md is the
//! reference for every byte; the storage and library crates build on this
//! one and nothing here knows about them.

pub mod chunker;
pub mod compress;
pub mod config;
pub mod delta;
pub mod error;
pub mod grouping;
pub mod id;
pub mod pack;
pub mod snapshot;
pub mod tree;
