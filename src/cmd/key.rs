//! `snap key passwd`: change an encrypted repository's password. A new
//! key object sealing the same master key is written, then the old one is
//! removed; no data is rewritten.

use crate::*;

pub fn passwd(
    cli_repo: &Option<PathBuf>,
    new_password_file: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let path = match cli_repo {
        Some(p) => p.clone(),
        None => default_repo()?,
    };
    let Some(r) = remote_of(&path)? else {
        anyhow::bail!("{}: the repository is not encrypted", path.display());
    };
    let storage = &*r.storage;
    if !snap::keys::is_encrypted(storage)? {
        anyhow::bail!("{}: the repository is not encrypted", path.display());
    }
    let repo = storage.describe("").trim_end_matches('/').to_string();
    let id = snap::objects::read_config(storage)?.id;
    let old = cmd::password::current(&repo)?;
    // Checked before asking for the new one: a mistyped old password
    // fails fast, with its own exit code.
    snap::keys::unlock(storage, &id, old.as_bytes())?;
    let new = cmd::password::replacement(&repo, new_password_file)?;
    snap::keys::change_password(storage, &id, old.as_bytes(), new.as_bytes())?;
    writeln!(out, "changed the password of {}", path.display())?;
    Ok(0)
}
