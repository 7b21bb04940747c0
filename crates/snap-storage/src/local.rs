//! Objects as files under a directory: `<root>/<key>`.
//!
//! A put writes `.tmp-*` in the object's own directory (same filesystem,
//! so the rename is atomic), fsyncs it, renames it over the key, and
//! fsyncs the directory so the name is durable too. New directories are
//! created 0700 and their parent fsynced. Deletes unlink and remember the
//! directory; `flush` fsyncs each remembered directory once.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{ObjectInfo, ObjectReader, ObjectWriter, Storage, check_key, short_object, split_key};
use crate::error::{Error, IoContext, Result};

const TMP_PREFIX: &str = ".tmp-";

pub struct LocalStorage {
    root: PathBuf,
    /// Directories with unlinks not yet made durable.
    dirty: Mutex<BTreeSet<PathBuf>>,
}

impl LocalStorage {
    pub fn new(root: &Path) -> LocalStorage {
        LocalStorage {
            root: root.to_path_buf(),
            dirty: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Create `dir` and its missing parents below `root`, 0700, each new one
/// made durable in its parent.
fn ensure_dir(root: &Path, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && parent != root
        && parent.starts_with(root)
    {
        ensure_dir(root, parent)?;
    }
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(Error::io(dir, e)),
        _ => {}
    }
    sync_dir(dir.parent().unwrap_or(root))
}

/// Is `key` in `dir` or below it?
pub(super) fn lies_under(key: &str, dir: &str) -> bool {
    dir.is_empty() || key.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

impl Storage for LocalStorage {
    fn describe(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn create(&self, dir: &str) -> Result<Box<dyn ObjectWriter>> {
        let dir_path = if dir.is_empty() {
            self.root.clone()
        } else {
            self.path(dir)?
        };
        ensure_dir(&self.root, &dir_path)?;
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&dir_path)
            .at(&dir_path)?;
        Ok(Box::new(LocalWriter {
            root: self.root.clone(),
            dir: dir.to_string(),
            tmp_path: tmp.path().to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, tmp),
            len: 0,
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn ObjectReader>> {
        let path = self.path(key)?;
        let file = File::open(&path).at(&path)?;
        let size = file.metadata().at(&path)?.len();
        Ok(Box::new(LocalReader { path, file, size }))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // Walk only the directory the prefix lies in.
        let (dir, _) = split_key(prefix);
        let start = if dir.is_empty() {
            self.root.clone()
        } else {
            self.path(dir)?
        };
        let mut out = Vec::new();
        walk(&self.root, &start, prefix, &mut out, &mut |_| {})?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
        if let Some(p) = path.parent() {
            self.dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.to_path_buf());
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let dirs = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        for d in dirs {
            if d.is_dir() {
                sync_dir(&d)?;
            }
        }
        Ok(())
    }

    fn remove_partial(&self) -> Result<u64> {
        let mut temps = Vec::new();
        let mut none = Vec::new();
        walk(&self.root, &self.root, "", &mut none, &mut |p| {
            temps.push(p.to_path_buf())
        })?;
        for t in &temps {
            match fs::remove_file(t) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(t, e)),
                _ => {}
            }
            if let Some(p) = t.parent() {
                self.dirty
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(p.to_path_buf());
            }
        }
        Ok(temps.len() as u64)
    }
}

/// Files under `dir` whose keys start with `prefix` go to `out`; our
/// temporaries go to `temp`. Dot-named entries that are not ours (the
/// index's sidecars, `.index.db.init`) are neither. `index.db`, `lock`
/// and `tmp/` are not objects: the repository never lists the root's
/// top level with an empty prefix except to find temporaries.
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<ObjectInfo>,
    temp: &mut dyn FnMut(&Path),
) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for de in rd {
        let de = de.at(dir)?;
        let path = de.path();
        let name = de.file_name();
        let Some(name) = name.to_str() else { continue };
        let ft = de.file_type().at(&path)?;
        if name.starts_with(TMP_PREFIX) && ft.is_file() {
            temp(&path);
            continue;
        }
        if name.starts_with('.') || (dir == root && is_local_only(name)) {
            continue;
        }
        let key = path
            .strip_prefix(root)
            .expect("walk stays under the root")
            .to_str()
            .expect("names checked above")
            .to_string();
        if ft.is_dir() {
            // Descend only where keys with the prefix can be.
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(root, &path, prefix, out, temp)?;
            }
        } else if ft.is_file() && key.starts_with(prefix) {
            let size = de.metadata().at(&path)?.len();
            out.push(ObjectInfo { key, size });
        }
    }
    Ok(())
}

/// Entries of the repository's directory that are not objects.
fn is_local_only(name: &str) -> bool {
    name == "lock" || name == "tmp" || name.starts_with("index.db")
}

struct LocalWriter {
    root: PathBuf,
    dir: String,
    tmp_path: PathBuf,
    file: BufWriter<tempfile::NamedTempFile>,
    len: u64,
}

impl ObjectWriter for LocalWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).at(&self.tmp_path)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn commit(self: Box<Self>, key: &str) -> Result<()> {
        check_key(key)?;
        if !lies_under(key, &self.dir) {
            return Err(Error::internal(
                "storage",
                format!("object {key:?} committed outside {:?}", self.dir),
            ));
        }
        let me = *self;
        let tmp = me
            .file
            .into_inner()
            .map_err(|e| Error::io(&me.tmp_path, e.into_error()))?;
        crate::fault::point("object written");
        tmp.as_file().sync_all().at(&me.tmp_path)?;
        crate::fault::point("object fsynced");
        let path = me.root.join(key);
        let parent = path.parent().expect("an object has a directory");
        ensure_dir(&me.root, parent)?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        crate::fault::point("object renamed");
        sync_dir(parent)?;
        crate::fault::point("object directory fsynced");
        Ok(())
    }
}

struct LocalReader {
    path: PathBuf,
    file: File,
    size: u64,
}

impl ObjectReader for LocalReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset.checked_add(len);
        if end.is_none_or(|e| e > self.size) {
            return Err(short_object(
                self.path.display().to_string(),
                offset,
                len,
                self.size,
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                short_object(self.path.display().to_string(), offset, len, self.size)
            } else {
                Error::io(&self.path, e)
            }
        })?;
        Ok(buf)
    }
}
