//! The directories this client has snapshotted into a repository, kept on
//! the client's side, outside the repository.
//!
//! An in-place restore writes where a snapshot says its source was. A
//! repository is not the user's word: whoever can write a plain
//! repository (a shared directory, an unencrypted bucket) can add a
//! snapshot whose source is another of the victim's directories. So an
//! in-place restore goes only to a directory the user's side names: a
//! source of the config file, or one recorded here by a create this
//! client ran. Anything else needs `--target`.
//!
//! The record is one file per repository (named by a hash of where the
//! repository is), each line a path's bytes in hex, written atomically.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use snap::error::IoContext;
use snap::objects::{hex, unhex};
use snap::{Error, Repository, Result};

const HEADER: &str = "# snap: directories this client snapshotted into one repository (hex bytes)";

pub struct KnownSources {
    file: PathBuf,
    paths: BTreeSet<PathBuf>,
}

/// The record's name for a repository: where it is, not what its config
/// says (a config is the repository's word).
fn record_name(repo: &Repository) -> String {
    let place = match repo.storage().local_dir() {
        Some(d) => fs::canonicalize(d)
            .unwrap_or_else(|_| d.to_path_buf())
            .as_os_str()
            .as_bytes()
            .to_vec(),
        None => repo.storage().describe("").into_bytes(),
    };
    blake3::hash(&place).to_hex()[..32].to_string()
}

impl KnownSources {
    /// The record for `repo` in `state_dir` (empty when there is none yet).
    pub fn load(state_dir: &Path, repo: &Repository) -> Result<KnownSources> {
        let file = state_dir.join("known-sources").join(record_name(repo));
        let mut paths = BTreeSet::new();
        match fs::read_to_string(&file) {
            Ok(text) => {
                for line in text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                {
                    let bytes = unhex(line).ok_or_else(|| Error::Damaged {
                        path: file.clone(),
                        reason: format!("not a line of hex: {line:?}"),
                    })?;
                    paths.insert(PathBuf::from(std::ffi::OsString::from_vec(bytes)));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&file, e)),
        }
        Ok(KnownSources { file, paths })
    }

    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.paths.iter()
    }

    /// Add `new` (absolute paths) and write the record if it changed.
    pub fn add(&mut self, new: impl IntoIterator<Item = PathBuf>) -> Result<()> {
        let before = self.paths.len();
        self.paths
            .extend(new.into_iter().filter(|p| p.is_absolute()));
        if self.paths.len() == before {
            return Ok(());
        }
        let dir = self.file.parent().expect("the record is in a directory");
        snap::repo::create_private_dir(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
        let mut text = format!("{HEADER}\n");
        for p in &self.paths {
            text.push_str(&hex(p.as_os_str().as_bytes()));
            text.push('\n');
        }
        tmp.write_all(text.as_bytes()).at(&self.file)?;
        tmp.as_file().sync_all().at(&self.file)?;
        tmp.persist(&self.file)
            .map_err(|e| Error::io(&self.file, e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use snap::objects::unhex;

    #[test]
    fn hex_lines_decode_and_bad_ones_are_refused() {
        assert_eq!(unhex("2f610a"), Some(b"/a\n".to_vec()));
        assert_eq!(unhex("2f6"), None);
        assert_eq!(unhex("zz"), None);
    }
}
