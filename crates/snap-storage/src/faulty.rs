//! A storage that fails on purpose, for tests: the N-th call fails, or the
//! process "dies" there (a put in progress is torn: part of it reaches the
//! inner storage's temporaries, nothing is committed, and every later call
//! fails), or reads come back short.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{ObjectInfo, ObjectReader, ObjectWriter, Storage};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing fails; calls are counted (to learn how many a run makes).
    None,
    /// The N-th call (from 1) fails with an I/O error; the rest succeed.
    FailCall(u64),
    /// At the N-th call the process dies: that call and all later ones fail.
    CrashAt(u64),
    /// Every range read returns one byte fewer than asked.
    ShortReads,
}

struct State {
    fault: Fault,
    calls: AtomicU64,
    crashed: AtomicBool,
}

impl State {
    /// Count a call; `Err` when it must fail, with whether it is the crash.
    fn call(&self) -> std::result::Result<(), bool> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(false);
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        match self.fault {
            Fault::FailCall(k) if k == n => Err(false),
            Fault::CrashAt(k) if k == n => {
                self.crashed.store(true, Ordering::SeqCst);
                Err(true)
            }
            _ => Ok(()),
        }
    }
}

fn injected(what: &str) -> Error {
    Error::io(what, std::io::Error::other("injected storage fault"))
}

pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    state: Arc<State>,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>, fault: Fault) -> FaultyStorage {
        FaultyStorage {
            inner,
            state: Arc::new(State {
                fault,
                calls: AtomicU64::new(0),
                crashed: AtomicBool::new(false),
            }),
        }
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Has the simulated crash happened?
    pub fn crashed(&self) -> bool {
        self.state.crashed.load(Ordering::SeqCst)
    }

    fn check(&self, key: &str) -> Result<()> {
        self.state
            .call()
            .map_err(|_| injected(&self.inner.describe(key)))
    }
}

impl Storage for FaultyStorage {
    fn describe(&self, key: &str) -> String {
        self.inner.describe(key)
    }

    fn local_dir(&self) -> Option<&std::path::Path> {
        self.inner.local_dir()
    }

    fn create(&self, dir: &str) -> Result<Box<dyn ObjectWriter>> {
        self.check(dir)?;
        Ok(Box::new(FaultyWriter {
            inner: Some(self.inner.create(dir)?),
            state: self.state.clone(),
            what: self.inner.describe(dir),
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn ObjectReader>> {
        self.check(key)?;
        Ok(Box::new(FaultyReader {
            inner: self.inner.open(key)?,
            state: self.state.clone(),
            what: self.inner.describe(key),
        }))
    }

    fn open_sized(&self, key: &str, size: u64) -> Result<Box<dyn ObjectReader>> {
        self.check(key)?;
        Ok(Box::new(FaultyReader {
            inner: self.inner.open_sized(key, size)?,
            state: self.state.clone(),
            what: self.inner.describe(key),
        }))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.check(key)?;
        self.inner.size(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.check(prefix)?;
        self.inner.list(prefix)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.check(key)?;
        self.inner.delete(key)
    }

    fn flush(&self) -> Result<()> {
        self.check("")?;
        self.inner.flush()
    }

    fn remove_partial(&self) -> Result<u64> {
        self.check("")?;
        self.inner.remove_partial()
    }
}

struct FaultyWriter {
    inner: Option<Box<dyn ObjectWriter>>,
    state: Arc<State>,
    what: String,
}

impl FaultyWriter {
    /// Die in the middle of a write: half of `bytes` reaches the inner
    /// writer, which is then abandoned without commit or cleanup.
    fn tear(&mut self, bytes: &[u8]) {
        if let Some(mut w) = self.inner.take() {
            let _ = w.write(&bytes[..bytes.len() / 2]);
            std::mem::forget(w);
        }
    }
}

impl ObjectWriter for FaultyWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self.state.call() {
            Ok(()) => self
                .inner
                .as_mut()
                .ok_or_else(|| injected(&self.what))?
                .write(bytes),
            Err(crash) => {
                if crash {
                    self.tear(bytes);
                }
                Err(injected(&self.what))
            }
        }
    }

    fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |w| w.len())
    }

    fn commit(mut self: Box<Self>, key: &str) -> Result<()> {
        match self.state.call() {
            Ok(()) => self
                .inner
                .take()
                .ok_or_else(|| injected(&self.what))?
                .commit(key),
            Err(crash) => {
                if crash {
                    self.tear(&[]);
                }
                Err(injected(&self.what))
            }
        }
    }
}

struct FaultyReader {
    inner: Box<dyn ObjectReader>,
    state: Arc<State>,
    what: String,
}

impl ObjectReader for FaultyReader {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.state.call().map_err(|_| injected(&self.what))?;
        let mut bytes = self.inner.read_at(offset, len)?;
        if self.state.fault == Fault::ShortReads {
            bytes.pop();
        }
        Ok(bytes)
    }

    fn read_planned(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.state.call().map_err(|_| injected(&self.what))?;
        let mut bytes = self.inner.read_planned(offset, len)?;
        if self.state.fault == Fault::ShortReads {
            bytes.pop();
        }
        Ok(bytes)
    }
}
