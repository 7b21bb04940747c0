//! An encrypted repository in a local directory, unlocked once and opened
//! per operation.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::keys::{is_encrypted, prepare_encrypted, unlocked};
use crate::storage::Storage;

/// An encrypted repository in a local directory, unlocked once (the key
/// derivation is deliberately slow) and opened as often as needed. Its
/// index is this app's cache of it, under `cache_base/<repository id>/`.
pub struct UnlockedRepository {
    storage: Arc<dyn Storage>,
    cache_base: std::path::PathBuf,
}

impl UnlockedRepository {
    /// Unlock the encrypted repository in `path` with `password`. A
    /// wrong one is `Error::WrongPassword` (exit code 10); a repository
    /// that is not encrypted is refused.
    pub fn unlock(
        path: &std::path::Path,
        password: &str,
        cache_base: &std::path::Path,
    ) -> Result<Self> {
        let base: Arc<dyn Storage> = Arc::new(crate::storage::LocalStorage::new(path));
        if !is_encrypted(&*base)? {
            return Err(Error::usage(format!(
                "{}: not an encrypted repository",
                path.display()
            )));
        }
        let pw = Zeroizing::new(password.to_string());
        Ok(UnlockedRepository {
            storage: unlocked(base, || Ok(pw))?,
            cache_base: cache_base.to_path_buf(),
        })
    }

    /// Create an encrypted repository in `path` (new or empty) that opens
    /// with `password`.
    pub fn create(
        path: &std::path::Path,
        password: &str,
        cache_base: &std::path::Path,
        config: &RepoConfig,
    ) -> Result<Self> {
        let non_empty = crate::local_dir::is_empty_dir(path).is_ok_and(|empty| !empty);
        if non_empty {
            return Err(Error::InitNonEmpty {
                path: path.to_path_buf(),
            });
        }
        crate::repo::create_private_dir(path)?;
        let base: Arc<dyn Storage> = Arc::new(crate::storage::LocalStorage::new(path));
        let (config, storage) = prepare_encrypted(base, config, password.as_bytes())?;
        crate::repo::Repository::init_remote(storage.clone(), cache_base, &config)?;
        Ok(UnlockedRepository {
            storage,
            cache_base: cache_base.to_path_buf(),
        })
    }

    /// Open it for one operation (its cache brought up to date first).
    pub fn open(
        &self,
        mode: Option<crate::LockMode>,
        read_only: bool,
    ) -> Result<crate::repo::Repository> {
        let (repo, _) = crate::repo::Repository::open_remote(
            self.storage.clone(),
            &self.cache_base,
            mode,
            read_only,
            &crate::NoProgress,
        )?;
        Ok(repo)
    }
}
