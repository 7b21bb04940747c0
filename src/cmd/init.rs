//! `snap init`: a new repository with the given format parameters,
//! encrypted when asked (the default for a bucket).

use std::sync::Arc;

use snap::storage::{LocalStorage, Storage};

use crate::*;

pub fn run(
    ctx: &mut Ctx,
    path: Option<PathBuf>,
    config: snap::config::RepoConfig,
    encrypt: Option<bool>,
) -> anyhow::Result<u8> {
    let path = match path.or(ctx.repo.clone()) {
        Some(p) => p,
        None => default_repo()?,
    };
    let s3 = s3_storage(&path)?;
    // A bucket is someone else's disk: encrypted unless --no-encrypt.
    let encrypt = encrypt.unwrap_or(s3.is_some());
    match (s3, encrypt) {
        (Some(storage), false) => {
            Repository::init_remote(storage, &cache_base()?, &config)?;
        }
        (None, false) => Repository::init(&path, &config)?,
        (s3, true) => {
            let base: Arc<dyn Storage> = match s3 {
                Some(storage) => storage,
                None => {
                    refuse_non_empty(&path)?;
                    snap::repo::create_private_dir(&path)?;
                    Arc::new(LocalStorage::new(&path))
                }
            };
            let pw = cmd::password::for_new_repository(&path.display().to_string())?;
            let (config, sealed) = snap::keys::prepare_encrypted(base, &config, pw.as_bytes())?;
            Repository::init_remote(sealed, &cache_base()?, &config)?;
        }
    }
    let how = if encrypt { "encrypted " } else { "" };
    writeln!(ctx.out, "created {how}repository {}", path.display())?;
    Ok(0)
}

/// An encrypted repository goes into a new or empty directory only.
fn refuse_non_empty(path: &Path) -> anyhow::Result<()> {
    let non_empty = snap::local_dir::is_empty_dir(path).is_ok_and(|empty| !empty);
    if non_empty {
        return Err(Error::InitNonEmpty {
            path: path.to_path_buf(),
        }
        .into());
    }
    Ok(())
}
