//! Content ids: BLAKE3-256 digests, one newtype per kind of object so that a
//! pack id can never be passed where a chunk id belongs.

use std::fmt;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The id of `data`: its BLAKE3-256 digest.
            pub fn of(data: &[u8]) -> Self {
                $name(*blake3::hash(data).as_bytes())
            }

            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                bytes.try_into().ok().map($name)
            }

            pub fn from_hex(hex: &str) -> Option<Self> {
                blake3::Hash::from_hex(hex).ok().map(|h| $name(*h.as_bytes()))
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                blake3::Hash::from_bytes(self.0).to_hex().to_string()
            }

            /// The first 8 hex digits, for messages.
            pub fn short(&self) -> String {
                self.to_hex()[..8].to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

define_id!(
    /// BLAKE3 of a chunk's uncompressed bytes.
    ChunkId
);
define_id!(
    /// BLAKE3 of a tree's canonical encoding.
    TreeId
);
define_id!(
    /// BLAKE3 of a whole pack file.
    PackId
);
define_id!(
    /// BLAKE3 of a snapshot's canonical description.
    SnapshotId
);

/// How a repository names content: plain BLAKE3, or BLAKE3 keyed with a
/// secret of an encrypted repository, so that an id reveals nothing about
/// the content to someone without the key (they cannot confirm a guess).
/// Chunk and tree ids use the same function: a tree's blob is a chunk.
/// Equal `Ids` name every content alike (a copy between two repositories
/// whose `Ids` are equal keeps every id).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Ids(Option<[u8; 32]>);

impl Ids {
    pub const PLAIN: Ids = Ids(None);

    /// Ids keyed with `key` (an encrypted repository's), or plain.
    pub fn with_key(key: Option<[u8; 32]>) -> Ids {
        Ids(key)
    }

    pub fn is_keyed(&self) -> bool {
        self.0.is_some()
    }

    fn hash(&self, data: &[u8]) -> [u8; 32] {
        match &self.0 {
            None => *blake3::hash(data).as_bytes(),
            Some(k) => *blake3::keyed_hash(k, data).as_bytes(),
        }
    }

    pub fn chunk(&self, data: &[u8]) -> ChunkId {
        ChunkId(self.hash(data))
    }

    pub fn tree(&self, encoding: &[u8]) -> TreeId {
        TreeId(self.hash(encoding))
    }
}

impl fmt::Debug for Ids {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_keyed() {
            "Ids(keyed)"
        } else {
            "Ids(plain)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(
            id.to_hex(),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
        assert!(ChunkId::from_hex("zz").is_none());
    }
}
