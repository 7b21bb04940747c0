//! Objects in memory, for tests: the contract without a filesystem.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{ObjectInfo, ObjectReader, ObjectWriter, Storage, check_key, short_object};
use crate::error::{Error, Result};

type Objects = Arc<Mutex<BTreeMap<String, Arc<Vec<u8>>>>>;

/// A map from key to bytes. Clones share the same objects.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    objects: Objects,
}

impl MemoryStorage {
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Vec<u8>>>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_found(key: &str) -> Error {
    Error::io(
        format!("memory:{key}"),
        std::io::Error::from(std::io::ErrorKind::NotFound),
    )
}

impl Storage for MemoryStorage {
    fn describe(&self, key: &str) -> String {
        format!("memory:{key}")
    }

    fn create(&self, dir: &str) -> Result<Box<dyn ObjectWriter>> {
        if !dir.is_empty() {
            check_key(dir)?;
        }
        Ok(Box::new(MemoryWriter {
            objects: self.objects.clone(),
            dir: dir.to_string(),
            bytes: Vec::new(),
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn ObjectReader>> {
        check_key(key)?;
        let bytes = self.map().get(key).cloned().ok_or_else(|| not_found(key))?;
        Ok(Box::new(MemoryReader {
            key: key.to_string(),
            bytes,
        }))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        Ok(self.map().get(key).map(|b| b.len() as u64))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .map()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.map().remove(key);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn remove_partial(&self) -> Result<u64> {
        Ok(0)
    }
}

struct MemoryWriter {
    objects: Objects,
    dir: String,
    bytes: Vec<u8>,
}

impl ObjectWriter for MemoryWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn commit(self: Box<Self>, key: &str) -> Result<()> {
        check_key(key)?;
        if !super::local::lies_under(key, &self.dir) {
            return Err(Error::internal(
                "storage",
                format!("object {key:?} committed outside {:?}", self.dir),
            ));
        }
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), Arc::new(self.bytes));
        Ok(())
    }
}

struct MemoryReader {
    key: String,
    bytes: Arc<Vec<u8>>,
}

impl ObjectReader for MemoryReader {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let size = self.bytes.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(self.bytes[offset as usize..end as usize].to_vec()),
            _ => Err(short_object(
                format!("memory:{}", self.key),
                offset,
                len,
                size,
            )),
        }
    }
}
