//! Crafted config and key objects in a real encrypted repository: opening
//! it returns an error or the repository, never panics, never spends more
//! key derivation than an unlock's bound, and never opens it as plain.
//!
//! The first byte picks what the input becomes:
//! 0: the bytes as one more key object;
//! 1: the bytes as the plain config (JSON of any shape);
//! 2: the config's JSON with one field set from the bytes;
//! 3: as many cheap key objects as the bytes say (up to 40).
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use snap::UnlockedRepository;
use snap::keys::{KdfParams, KEYS_DIR};
use snap::storage::{LocalStorage, Storage};

const PASSWORD: &str = "fuzz password";

struct World {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    cache: PathBuf,
    pristine: Vec<(PathBuf, Vec<u8>)>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        UnlockedRepository::create(&repo, PASSWORD, &cache, &Default::default()).unwrap();
        // The cheapest key the bounds allow, so each run is fast.
        let base = LocalStorage::new(&repo);
        let id = snap::objects::read_config(&base).unwrap().id;
        let (master, old) = snap::keys::unlock(&base, &id, PASSWORD.as_bytes()).unwrap();
        let cheap = KdfParams { memory_kib: 8 * 1024, iterations: 1, parallelism: 1 };
        snap::keys::add_key(&base, &id, &master, PASSWORD.as_bytes(), cheap).unwrap();
        base.delete(&format!("{KEYS_DIR}/{old}")).unwrap();
        let pristine = walk(&repo);
        World { _dir: dir, repo, cache, pristine }
    })
}

fn walk(root: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

fn reset(w: &World) {
    let _ = fs::remove_dir_all(&w.repo);
    let _ = fs::remove_dir_all(&w.cache);
    for (p, bytes) in &w.pristine {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    reset(w);
    let Some((kind, rest)) = data.split_first() else { return };
    let config = w.repo.join("config");
    match kind % 4 {
        0 => fs::write(w.repo.join(KEYS_DIR).join("00000000000000ff"), rest).unwrap(),
        1 => fs::write(&config, rest).unwrap(),
        2 => {
            let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
            let fields = ["format_version", "chunk_min_bytes", "chunk_avg_bytes", "chunk_max_bytes", "zstd_level", "pack_target_bytes", "id", "encryption"];
            let field = fields[rest.first().copied().unwrap_or(0) as usize % fields.len()];
            v[field] = serde_json::from_slice(rest.get(1..).unwrap_or(&[]))
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(rest).into_owned()));
            fs::write(&config, serde_json::to_vec(&v).unwrap()).unwrap();
        }
        _ => {
            let n = rest.first().copied().unwrap_or(0) as usize % 40;
            for i in 0..n {
                let obj = serde_json::json!({
                    "kdf": "argon2id", "memory_kib": 8192, "iterations": 1, "parallelism": 1,
                    "salt": "00".repeat(16), "nonce": "00".repeat(24), "sealed_key": "00".repeat(48),
                    "created_ns": 0
                });
                fs::write(w.repo.join(KEYS_DIR).join(format!("1{i:015x}")), obj.to_string()).unwrap();
            }
        }
    }
    let started = std::time::Instant::now();
    let opened = UnlockedRepository::unlock(&w.repo, PASSWORD, &w.cache)
        .and_then(|u| u.open(None, true).map(|r| r.storage().id_key().is_some()));
    // Never opened as plain: an encrypted repository opens sealed or not at all.
    if let Ok(sealed) = opened {
        assert!(sealed, "an encrypted repository was opened without its key");
    }
    // 16 objects of at most 2 GiB-passes in all: seconds, not minutes.
    assert!(started.elapsed().as_secs() < 30, "an unlock took {:?}", started.elapsed());
});
