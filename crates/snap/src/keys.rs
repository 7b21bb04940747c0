//! The keys of an encrypted repository.
//!
//! A random 32-byte master key, made once at init, never changes: every
//! object is sealed with a key derived from it, and chunk and tree ids are
//! keyed with another. It is stored only wrapped, in key objects
//! (`keys/<name>`), each sealing it with XChaCha20-Poly1305 under a key
//! derived from a password with argon2id (parameters and salt in the
//! object). Changing the password writes a new key object and then removes
//! the old one; no data is rewritten. The byte layout is in
//! docs/format.md, "Encrypted repositories".

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use std::sync::Arc;

use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::objects::{CONFIG_FILE, hex, unhex};
use crate::storage::{SealedStorage, Storage};

pub use crate::storage::{KEYS_DIR, MasterKey};

pub use crate::config::SCHEME;

/// argon2id's cost parameters, stored in each key object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes: OWASP's argon2id guidance is at least 19 MiB and
    /// 2 passes; this takes about 0.2 s on one core of the project machine
    /// and fits a phone.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// Bounds a key object's parameters must lie in: a hostile object must not
/// make an unlock take minutes or gigabytes, nor weaken the KDF to nothing.
const MEMORY_KIB: std::ops::RangeInclusive<u32> = 8 * 1024..=1024 * 1024;
const ITERATIONS: std::ops::RangeInclusive<u32> = 1..=20;
const PARALLELISM: std::ops::RangeInclusive<u32> = 1..=16;

#[derive(Serialize, Deserialize)]
struct KeyObject {
    kdf: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
    nonce: String,
    /// The master key sealed (hex: 32 bytes and a 16-byte tag).
    sealed_key: String,
    created_ns: i64,
}

fn wrapping_key(password: &[u8], salt: &[u8], p: &KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let bad = |e: argon2::Error| Error::BadConfig(format!("argon2id parameters: {e}"));
    let params =
        argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32)).map_err(bad)?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, salt, &mut *out)
        .map_err(bad)?;
    Ok(out)
}

/// The key wrap is bound to the repository id: a key object copied from
/// another repository does not open this one.
fn wrap_aad(repo_id: &str) -> Vec<u8> {
    format!("snap key object 1 {repo_id}").into_bytes()
}

/// Write a new key object that opens with `password`; returns its name.
pub fn add_key(
    storage: &dyn Storage,
    repo_id: &str,
    master: &MasterKey,
    password: &[u8],
    params: KdfParams,
) -> Result<String> {
    if password.is_empty() {
        return Err(Error::usage("the password is empty"));
    }
    let salt: [u8; 16] = rand::random();
    let nonce: [u8; 24] = rand::random();
    let wrap = wrapping_key(password, &salt, &params)?;
    let cipher = XChaCha20Poly1305::new(&(*wrap).into());
    let aad = wrap_aad(repo_id);
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: master.expose(),
                aad: &aad,
            },
        )
        .map_err(|_| Error::internal("key sealing", "sealing the master key failed"))?;
    let obj = KeyObject {
        kdf: "argon2id".into(),
        params,
        salt: hex(&salt),
        nonce: hex(&nonce),
        sealed_key: hex(&sealed),
        created_ns: jiff::Timestamp::now().as_nanosecond() as i64,
    };
    let name = format!("{:016x}", rand::random::<u64>());
    let json = serde_json::to_vec_pretty(&obj).expect("plain data serializes");
    storage.put(&format!("{KEYS_DIR}/{name}"), &json)?;
    Ok(name)
}

/// The key objects' names.
pub fn key_names(storage: &dyn Storage) -> Result<Vec<String>> {
    let prefix = format!("{KEYS_DIR}/");
    Ok(storage
        .list(&prefix)?
        .into_iter()
        .filter_map(|o| o.key.strip_prefix(&prefix).map(str::to_string))
        .filter(|n| !n.contains('/'))
        .collect())
}

/// Key objects an unlock reads at most: whoever can write the repository
/// can add key objects, and each costs a key derivation to try.
pub const MAX_KEY_OBJECTS: usize = 16;

/// argon2id work (KiB of memory times passes) one unlock spends at most,
/// over every key object it tries: 2 GiB-passes, ten times the default
/// object's cost. Objects are tried cheapest first, so a planted costly
/// one cannot starve the real one.
pub const UNLOCK_WORK: u64 = 2 * 1024 * 1024;

/// A key object read and checked, not yet opened.
struct Candidate {
    name: String,
    object: KeyObject,
    cost: u64,
}

/// The key objects, at most [`MAX_KEY_OBJECTS`], cheapest first.
fn candidates(storage: &dyn Storage) -> Result<Vec<Candidate>> {
    let names = key_names(storage)?;
    if names.is_empty() {
        return Err(Error::Damaged {
            path: storage.describe(KEYS_DIR).into(),
            reason: "the repository is encrypted but has no key object".into(),
        });
    }
    if names.len() > MAX_KEY_OBJECTS {
        return Err(Error::Damaged {
            path: storage.describe(KEYS_DIR).into(),
            reason: format!(
                "{} key objects, more than the {MAX_KEY_OBJECTS} snap tries: were some planted? (`snap key list`, then remove the ones you did not add)",
                names.len()
            ),
        });
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let key = format!("{KEYS_DIR}/{name}");
        let object = parse_key_object(storage, &key, &storage.read(&key)?)?;
        let cost = u64::from(object.params.memory_kib) * u64::from(object.params.iterations);
        out.push(Candidate { name, object, cost });
    }
    out.sort_by_key(|c| c.cost);
    Ok(out)
}

/// Every key object `password` opens (cheapest first, within the work
/// bound), with the master key. None opening it is `Error::WrongPassword`.
/// `first`: stop at the first that opens (an unlock), else try them all.
fn open_with(
    storage: &dyn Storage,
    repo_id: &str,
    password: &[u8],
    first: bool,
) -> Result<(MasterKey, Vec<String>)> {
    let mut work = 0u64;
    let mut opened = Vec::new();
    let mut master = None;
    let mut skipped = Vec::new();
    for c in candidates(storage)? {
        if work + c.cost > UNLOCK_WORK {
            skipped.push(c.name);
            continue;
        }
        work += c.cost;
        if let Some(m) = open_key_object(&c.object, repo_id, password)? {
            master = Some(m);
            opened.push(c.name);
            if first {
                break;
            }
        }
    }
    match master {
        Some(m) => Ok((m, opened)),
        None if !skipped.is_empty() => Err(Error::Damaged {
            path: storage.describe(KEYS_DIR).into(),
            reason: format!(
                "no key object tried opens with this password, and {} were not tried: they cost more key derivation than snap spends on one unlock ({})",
                skipped.len(),
                skipped.join(", ")
            ),
        }),
        None => Err(Error::WrongPassword {
            repo: storage.describe("").trim_end_matches('/').to_string(),
        }),
    }
}

/// The master key, from a key object `password` opens, and that object's
/// name. No object opening it is `Error::WrongPassword`.
pub fn unlock(
    storage: &dyn Storage,
    repo_id: &str,
    password: &[u8],
) -> Result<(MasterKey, String)> {
    let (master, names) = open_with(storage, repo_id, password, true)?;
    Ok((
        master,
        names.into_iter().next().expect("opened by one at least"),
    ))
}

/// A key object as `snap key list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub created_ns: i64,
    pub memory_kib: u32,
    pub iterations: u32,
    /// Whether the password given opens it.
    pub opens: bool,
}

/// Every key object, and whether `password` opens it.
pub fn list_keys(storage: &dyn Storage, repo_id: &str, password: &[u8]) -> Result<Vec<KeyInfo>> {
    let (_, opened) = open_with(storage, repo_id, password, false)?;
    let mut out: Vec<KeyInfo> = candidates(storage)?
        .into_iter()
        .map(|c| KeyInfo {
            opens: opened.contains(&c.name),
            name: c.name,
            created_ns: c.object.created_ns,
            memory_kib: c.object.params.memory_kib,
            iterations: c.object.params.iterations,
        })
        .collect();
    out.sort_by_key(|k| k.created_ns);
    Ok(out)
}

/// Add a key object that opens with `new_password`, proven by `password`.
pub fn add_password(
    storage: &dyn Storage,
    repo_id: &str,
    password: &[u8],
    new_password: &[u8],
) -> Result<String> {
    let (master, _) = open_with(storage, repo_id, password, true)?;
    if key_names(storage)?.len() >= MAX_KEY_OBJECTS {
        return Err(Error::usage(format!(
            "the repository has {MAX_KEY_OBJECTS} key objects already, as many as an unlock tries"
        )));
    }
    add_key(
        storage,
        repo_id,
        &master,
        new_password,
        KdfParams::default(),
    )
}

/// Remove key object `name`, proven by `password`; never the last one,
/// nor the last one `password` opens (that is `change_password`).
pub fn remove_key(storage: &dyn Storage, repo_id: &str, password: &[u8], name: &str) -> Result<()> {
    let (_, opened) = open_with(storage, repo_id, password, false)?;
    let names = key_names(storage)?;
    if !names.iter().any(|n| n == name) {
        return Err(Error::usage(format!("no key object named {name}")));
    }
    if names.len() == 1 {
        return Err(Error::usage(format!(
            "{name} is the repository's only key object: removing it would lock everyone out"
        )));
    }
    if opened.len() == 1 && opened[0] == name {
        return Err(Error::usage(format!(
            "{name} is the only key object your password opens; change it with `snap key passwd`"
        )));
    }
    storage.delete(&format!("{KEYS_DIR}/{name}"))?;
    storage.flush()
}

fn parse_key_object(storage: &dyn Storage, key: &str, bytes: &[u8]) -> Result<KeyObject> {
    let damaged = |why: String| Error::Damaged {
        path: storage.describe(key).into(),
        reason: why,
    };
    let o: KeyObject =
        serde_json::from_slice(bytes).map_err(|e| damaged(format!("not a key object: {e}")))?;
    let p = o.params;
    if o.kdf != "argon2id"
        || !MEMORY_KIB.contains(&p.memory_kib)
        || !ITERATIONS.contains(&p.iterations)
        || !PARALLELISM.contains(&p.parallelism)
    {
        return Err(damaged(format!(
            "unsupported key derivation {} {p:?}",
            o.kdf
        )));
    }
    let field = |s: &str, len: usize, what: &str| {
        unhex(s)
            .filter(|b| b.len() == len)
            .map(|_| ())
            .ok_or_else(|| damaged(format!("bad {what}")))
    };
    field(&o.salt, 16, "salt")?;
    field(&o.nonce, 24, "nonce")?;
    field(&o.sealed_key, 48, "sealed key")?;
    Ok(o)
}

fn open_key_object(o: &KeyObject, repo_id: &str, password: &[u8]) -> Result<Option<MasterKey>> {
    let hexed = |s: &str| unhex(s).expect("checked by parse_key_object");
    let salt = hexed(&o.salt);
    let nonce: [u8; 24] = hexed(&o.nonce).try_into().expect("24 bytes");
    let sealed = hexed(&o.sealed_key);
    let wrap = wrapping_key(password, &salt, &o.params)?;
    let cipher = XChaCha20Poly1305::new(&(*wrap).into());
    let aad = wrap_aad(repo_id);
    let Ok(plain) = cipher.decrypt(
        &XNonce::from(nonce),
        Payload {
            msg: &sealed,
            aad: &aad,
        },
    ) else {
        return Ok(None);
    };
    let plain = Zeroizing::new(plain);
    Ok(Some(MasterKey::from_bytes(
        plain[..].try_into().expect("32 bytes"),
    )))
}

/// Replace every key object `old_password` opens by one `new_password`
/// opens (the new one is written first, so a crash leaves both); returns
/// its name and how many were removed. The master key does not change.
pub fn change_password(
    storage: &dyn Storage,
    repo_id: &str,
    old_password: &[u8],
    new_password: &[u8],
) -> Result<(String, usize)> {
    let (master, old) = open_with(storage, repo_id, old_password, false)?;
    let name = add_key(
        storage,
        repo_id,
        &master,
        new_password,
        KdfParams::default(),
    )?;
    // Every object the old password opens goes: afterwards it opens none.
    for o in &old {
        storage.delete(&format!("{KEYS_DIR}/{o}"))?;
    }
    storage.flush()?;
    Ok((name, old.len()))
}

/// Prepare `base` (empty) to hold a new encrypted repository of `config`:
/// a fresh id and master key, and the first key object, which opens with
/// `password`. Returns the config to init with and the sealed storage to
/// init through (`Repository::init_remote`).
pub fn prepare_encrypted(
    base: Arc<dyn Storage>,
    config: &RepoConfig,
    password: &[u8],
) -> Result<(RepoConfig, Arc<dyn Storage>)> {
    if base.size(CONFIG_FILE)?.is_some() || !key_names(&*base)?.is_empty() {
        return Err(Error::usage(format!(
            "{}: already holds a repository",
            base.describe("").trim_end_matches('/')
        )));
    }
    let mut config = config.clone();
    config.id = RepoConfig::new_id();
    config.encryption = SCHEME.to_string();
    let master = MasterKey::random();
    add_key(&*base, &config.id, &master, password, KdfParams::default())?;
    let sealed: Arc<dyn Storage> = Arc::new(SealedStorage::new(base, &master));
    Ok((config, sealed))
}

/// The storage to open the repository in `base` through: `base` itself
/// when the repository is not encrypted, else `base` sealed with the key
/// that `password()` (asked only then) opens.
pub fn unlocked(
    base: Arc<dyn Storage>,
    password: impl FnOnce() -> Result<Zeroizing<String>>,
) -> Result<Arc<dyn Storage>> {
    let Some(config) = crate::objects::read_config_if_exists(&*base)? else {
        return Ok(base);
    };
    if config.encryption.is_empty() {
        refuse_plain_with_keys(&*base)?;
        return Ok(base);
    }
    let pw = password()?;
    let (master, _) = unlock(&*base, &config.id, pw.as_bytes())?;
    Ok(Arc::new(SealedStorage::new(base, &master)))
}

/// A config object that says "plain" beside key objects was altered: the
/// config is the one object an attacker can rewrite without the key, and
/// opening the repository as plain would write the next snapshot in the
/// clear. Key objects are never in a plain repository.
pub fn refuse_plain_with_keys(storage: &dyn Storage) -> Result<()> {
    let keys = key_names(storage)?;
    if keys.is_empty() {
        return Ok(());
    }
    Err(Error::Damaged {
        path: storage.describe(CONFIG_FILE).into(),
        reason: format!(
            "the config says the repository is not encrypted, but it holds {} key object(s) in {KEYS_DIR}/: the config was altered; snap never opens an encrypted repository as plain (restore the config from a copy)",
            keys.len()
        ),
    })
}

/// Is the repository in `storage` encrypted: its config says so, or it
/// holds key objects (whatever the config says)?
pub fn is_encrypted(storage: &dyn Storage) -> Result<bool> {
    let said =
        crate::objects::read_config_if_exists(storage)?.is_some_and(|c| !c.encryption.is_empty());
    Ok(said || !key_names(storage)?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    const FAST: KdfParams = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn a_key_object_opens_with_its_password_only_and_only_in_its_repository() {
        let s = MemoryStorage::new();
        let master = MasterKey::random();
        add_key(&s, "aa", &master, b"right", FAST).unwrap();
        let (back, _) = unlock(&s, "aa", b"right").unwrap();
        assert_eq!(back.expose(), master.expose());
        assert!(matches!(
            unlock(&s, "aa", b"wrong"),
            Err(Error::WrongPassword { .. })
        ));
        assert!(matches!(
            unlock(&s, "bb", b"right"),
            Err(Error::WrongPassword { .. })
        ));
    }

    #[test]
    fn a_password_change_keeps_the_master_key_and_drops_the_old_password() {
        let s = MemoryStorage::new();
        let master = MasterKey::random();
        add_key(&s, "aa", &master, b"old", FAST).unwrap();
        change_password(&s, "aa", b"old", b"new").unwrap();
        assert_eq!(key_names(&s).unwrap().len(), 1);
        assert_eq!(
            unlock(&s, "aa", b"new").unwrap().0.expose(),
            master.expose()
        );
        assert!(matches!(
            unlock(&s, "aa", b"old"),
            Err(Error::WrongPassword { .. })
        ));
    }
}
