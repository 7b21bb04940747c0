//! Repository configuration: the parameters that are part of the format.
//!
//! Chunker sizes and the compression level are fixed when a repository is
//! created and stored in its index, so later versions of snap keep cutting the
//! same boundaries and keep deduplicating against old data.

use crate::error::{Error, Result};

/// The one repository format this build writes and reads (docs/format.md,
/// "Compatibility"): delta chunks, groups of small chunks and of trees,
/// in version 5 packs. Formats 2-4 were development steps that no release
/// wrote; a repository of one of them is refused with [`Error::OldFormat`].
pub const FORMAT_VERSION: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoConfig {
    pub format_version: u32,
    pub chunk_min_bytes: u32,
    pub chunk_avg_bytes: u32,
    pub chunk_max_bytes: u32,
    pub zstd_level: i32,
    pub pack_target_bytes: u64,
    /// A random name for this repository, fixed at init (hex; empty in
    /// repositories made before it existed). Clients of a remote
    /// repository keep their cache under it.
    pub id: String,
    /// How objects are sealed: empty (not encrypted) or
    /// [`SCHEME`].
    pub encryption: String,
}

/// The `encryption` value of an encrypted repository's config.
pub const SCHEME: &str = "xchacha20poly1305-argon2id-1";

impl Default for RepoConfig {
    /// Sizes chosen for application data (see docs/design.md, "Chunk sizes"):
    /// databases are cut by pages, not by these; for everything else 64 KiB
    /// on average is 16-32 times finer than restic's and borg's chunks and
    /// costs a quarter of the index rows and footer entries of 16 KiB.
    fn default() -> Self {
        RepoConfig {
            format_version: FORMAT_VERSION,
            chunk_min_bytes: 16 * 1024,
            chunk_avg_bytes: 64 * 1024,
            chunk_max_bytes: 256 * 1024,
            zstd_level: 3,
            pack_target_bytes: 16 * 1024 * 1024,
            id: String::new(),
            encryption: String::new(),
        }
    }
}

/// Upper bound on any chunk, whatever a (possibly damaged) config says.
pub const CHUNK_MAX_LIMIT: u32 = 16 * 1024 * 1024;

impl RepoConfig {
    /// Whether the index keeps a copy of each tree: only where reading a
    /// tree pack is slow (`remote`: a bucket).
    pub fn index_keeps_tree_copies(&self, remote: bool) -> bool {
        remote
    }

    /// A fresh repository id: 16 random bytes in hex.
    pub fn new_id() -> String {
        let bytes: [u8; 16] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// fastcdc only debug-asserts its bounds: check them here.
    pub fn validate(&self) -> Result<()> {
        let (min, avg, max) = (
            self.chunk_min_bytes,
            self.chunk_avg_bytes,
            self.chunk_max_bytes,
        );
        let bad = |why: &str| Err(Error::BadConfig(why.to_string()));
        if self.format_version != FORMAT_VERSION {
            return Err(Error::BadConfig(format!(
                "format version {} (this snap reads {FORMAT_VERSION}){}",
                self.format_version,
                if self.format_version > FORMAT_VERSION {
                    "; upgrade snap"
                } else {
                    ""
                }
            )));
        }
        // The id names a cache directory: hex only, never a path.
        if self.id.len() > 64 || !self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("the repository id must be at most 64 hex digits");
        }
        if !self.encryption.is_empty() && self.encryption != SCHEME {
            return Err(Error::BadConfig(format!(
                "unknown encryption {:?} (this snap knows {:?}); upgrade snap",
                self.encryption, SCHEME
            )));
        }
        if !(64..=1_048_576).contains(&min) {
            return bad("chunk_min_bytes must be in 64..=1 MiB");
        }
        if !(256..=4_194_304).contains(&avg) {
            return bad("chunk_avg_bytes must be in 256..=4 MiB");
        }
        if !(1024..=CHUNK_MAX_LIMIT).contains(&max) {
            return bad("chunk_max_bytes must be in 1 KiB..=16 MiB");
        }
        if !(min <= avg && avg <= max) {
            return bad("chunk sizes must satisfy min <= avg <= max");
        }
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return bad("chunk sizes must be even");
        }
        if !(1..=19).contains(&self.zstd_level) {
            return bad("zstd_level must be in 1..=19");
        }
        if self.pack_target_bytes < 1024 * 1024 || self.pack_target_bytes > 1024 * 1024 * 1024 {
            return bad("pack_target_bytes must be in 1 MiB..=1 GiB");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_sizes_are_refused() {
        RepoConfig::default().validate().unwrap();
        let odd = RepoConfig {
            chunk_avg_bytes: 16385,
            ..RepoConfig::default()
        };
        assert!(odd.validate().is_err());
        let inverted = RepoConfig {
            chunk_min_bytes: 32768,
            chunk_avg_bytes: 16384,
            ..RepoConfig::default()
        };
        assert!(inverted.validate().is_err());
    }
}
