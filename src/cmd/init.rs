//! `snap init`: a new repository with the given format parameters.

use crate::*;

pub fn run(
    ctx: &mut Ctx,
    path: Option<PathBuf>,
    pack_size: u64,
    zstd_level: i32,
) -> anyhow::Result<u8> {
    let path = match path.or(ctx.repo.clone()) {
        Some(p) => p,
        None => default_repo()?,
    };
    let config = snap::config::RepoConfig {
        pack_target_bytes: pack_size.saturating_mul(1024 * 1024),
        zstd_level,
        ..Default::default()
    };
    match remote_of(&path)? {
        Some(r) => {
            Repository::init_remote(r.storage, &r.cache_base, &config)?;
        }
        None => Repository::init(&path, &config)?,
    }
    writeln!(ctx.out, "created repository {}", path.display())?;
    Ok(0)
}
