//! Pack files through a storage: writing them ([`PackWriter`], and
//! [`Packer`] for a stream of packs) and reading them ([`PackReader`]).
//! The layout is `snap_format::pack`'s, re-exported here.

mod reader;
mod writer;

pub use reader::{
    Footer, PackReader, Salvaged, damaged, decode_blob, decode_chunk, for_each_footer,
};
pub use snap_format::pack::*;
pub use writer::{FinishedPack, PackWriter, Packer, SealedPack};
