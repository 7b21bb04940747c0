//! `snap key`: the passwords of an encrypted repository. Each password is
//! a key object wrapping the same master key: adding, removing or changing
//! one rewrites no data, and the master key never changes (so whoever once
//! read it, with an old password, still holds it; start a new repository
//! and `snap copy` to change it).

use crate::*;
use snap::keys;

/// An encrypted repository's storage (unsealed: key objects are plain),
/// its description and id, and the current password.
struct Keyring {
    storage: std::sync::Arc<dyn snap::storage::Storage>,
    describe: String,
    id: String,
    password: zeroize::Zeroizing<String>,
}

fn keyring(cli_repo: &Option<PathBuf>) -> anyhow::Result<Keyring> {
    let path = match cli_repo {
        Some(p) => p.clone(),
        None => default_repo()?,
    };
    let Some(r) = remote_of(&path)? else {
        anyhow::bail!("{}: the repository is not encrypted", path.display());
    };
    if !keys::is_encrypted(&*r.storage)? {
        anyhow::bail!("{}: the repository is not encrypted", path.display());
    }
    let describe = r.storage.describe("").trim_end_matches('/').to_string();
    let id = snap::objects::read_config(&*r.storage)?.id;
    let password = cmd::password::current(&describe)?;
    Ok(Keyring {
        storage: r.storage,
        describe,
        id,
        password,
    })
}

pub fn run(
    cli_repo: &Option<PathBuf>,
    what: cli::KeyWhat,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let k = keyring(cli_repo)?;
    let storage = &*k.storage;
    let pw = k.password.as_bytes();
    match what {
        cli::KeyWhat::Passwd { new_password_file } => {
            // Checked before asking for the new one: a mistyped old
            // password fails fast, with its own exit code.
            keys::unlock(storage, &k.id, pw)?;
            let new = cmd::password::replacement(&k.describe, new_password_file.as_deref())?;
            let (_, removed) = keys::change_password(storage, &k.id, pw, new.as_bytes())?;
            writeln!(
                out,
                "changed the password of {}: removed {} key object(s) the old password opened; the master key is unchanged",
                k.describe, removed
            )?;
        }
        cli::KeyWhat::Add { new_password_file } => {
            keys::unlock(storage, &k.id, pw)?;
            let new = cmd::password::replacement(&k.describe, new_password_file.as_deref())?;
            let name = keys::add_password(storage, &k.id, pw, new.as_bytes())?;
            writeln!(out, "added key object {name}")?;
        }
        cli::KeyWhat::List { json } => {
            let list = keys::list_keys(storage, &k.id, pw)?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &list)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<16}  {:<19}  {:>9}  {:>6}  OPENS",
                    "NAME", "CREATED", "MEMORY", "PASSES"
                )?;
                for key in &list {
                    writeln!(
                        out,
                        "{:<16}  {:<19}  {:>5} MiB  {:>6}  {}",
                        key.name,
                        format_time_local(key.created_ns),
                        key.memory_kib / 1024,
                        key.iterations,
                        if key.opens { "yes" } else { "no" }
                    )?;
                }
            }
        }
        cli::KeyWhat::Remove { name } => {
            keys::remove_key(storage, &k.id, pw, &name)?;
            writeln!(out, "removed key object {name}")?;
        }
    }
    Ok(0)
}
