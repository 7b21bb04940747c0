//! How the library reports progress and non-fatal problems. It never prints:
//! the binary supplies an implementation (a terminal bar, or nothing).

pub trait Progress: Sync {
    /// A phase starts; `total_bytes` when known.
    fn phase(&self, _name: &str, _total_bytes: Option<u64>) {}
    /// Entries visited (files, directories, ...).
    fn entries(&self, _n: u64) {}
    /// Bytes processed in the current phase.
    fn bytes(&self, _n: u64) {}
    /// A problem that does not stop the operation (a file that could not be
    /// read, a file that changed while it was read, ...).
    fn warn(&self, _message: &str) {}
    /// The operation is over; hide any bar.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
