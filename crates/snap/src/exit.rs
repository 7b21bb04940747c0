//! Exit codes, shared by the binary and the C ABI (README, "Exit codes").

use crate::error::Error;

pub const SUCCESS: u8 = 0;
pub const FAILURE: u8 = 1;
/// Done, but not all of it: a snapshot missing unreadable paths, a restore
/// that could not restore some entries, a failed `quick_check`.
pub const PARTIAL: u8 = 3;
pub const LOCKED: u8 = 4;
pub const DAMAGED: u8 = 5;
pub const NOTHING_TO_DO: u8 = 6;
/// A migration failed and its sources were rolled back exactly.
pub const ROLLED_BACK: u8 = 7;
/// A migration failed and some entries could not be rolled back.
pub const ROLLBACK_INCOMPLETE: u8 = 8;
pub const SAFETY_INCOMPLETE: u8 = 9;
/// An encrypted repository stayed locked: a wrong password, or none given.
pub const WRONG_PASSWORD: u8 = 10;
/// 128 + SIGINT, as a shell reports a command killed by Ctrl-C; also a
/// cancelled library call.
pub const INTERRUPTED: u8 = 130;

/// The exit code for an operation that failed with `e`.
pub fn of(e: &Error) -> u8 {
    match e {
        Error::Locked { .. } => LOCKED,
        Error::SafetySnapshotIncomplete { .. } => SAFETY_INCOMPLETE,
        Error::Interrupted => INTERRUPTED,
        Error::WrongPassword { .. } | Error::NoPassword { .. } => WRONG_PASSWORD,
        e if e.is_damage() => DAMAGED,
        _ => FAILURE,
    }
}
