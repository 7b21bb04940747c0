//! The C ABI of snap: what an app (Flutter through dart:ffi, Swift, Kotlin,
//! Python ctypes) calls around its own migration. The contract is the
//! header, `ffi/include/snap.h`, generated from this file; docs/embedding.md
//! explains it with examples.
//!
//! Every function catches panics, checks its pointers and its UTF-8, and
//! reports failure as an exit code plus a thread-local message. Requests
//! and results are JSON, so the ABI stays small and each field can grow.

mod events;
mod request;

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use snap::{
    Error, GcOptions, HeldFiles, LockMode, Outcome, Remedy, Repository, RestoreOptions,
    begin_migration, exit, finish_migration, gc, restore, unfinished_session,
};

use events::EventSink;
use request::{CreateRequest, GcRequest, OpenOptions, RestoreRequest};

/// An open repository. Opaque to C; made by snap_open, freed by snap_close.
pub struct SnapRepo {
    path: PathBuf,
    /// An encrypted repository, unlocked once at snap_open.
    unlocked: Option<snap::UnlockedRepository>,
    /// Descriptors of the app's SQLite files, never closed before
    /// snap_close (see snap::held).
    held: Arc<HeldFiles>,
    /// Set by snap_cancel; cleared when a call starts.
    cancel: AtomicBool,
}

/// Receives progress and warnings as JSON objects, for example
/// `{"event":"progress","phase":"create","entries":120,"bytes":1048576,"total_bytes":null}`
/// or `{"event":"warning","kind":"unreadable","path":"cache/x","message":"..."}`.
/// The string belongs to the callee, which frees it with snap_free (so it
/// may read it after returning, as NativeCallable.listener does).
pub type SnapEventFn =
    Option<unsafe extern "C" fn(event_json: *mut c_char, user_data: *mut c_void)>;

/// Why a call failed: the exit code it returns and the message
/// snap_last_error gives.
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let mut message = e.to_string();
        match e.remedy() {
            Some(Remedy::RepairIndex) => message.push_str(
                "; the index can be rebuilt from the repository's files (no data is lost)",
            ),
            Some(Remedy::ReportBug) => {
                message.push_str("; this is a bug in snap, please report it")
            }
            Some(Remedy::EndMigration) => message.push_str(
                "; end it first: snap_migration_unfinished gives its snapshot, then snap_migration_end with succeeded 0 rolls back what it left, 1 keeps it",
            ),
            None => {}
        }
        Failure {
            code: exit::of(&e),
            message,
        }
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        code: exit::FAILURE,
        message: message.into(),
    }
}

/// What a call produced: its exit code and its result.
struct Done {
    code: u8,
    result: Value,
}

fn done(result: Value) -> Done {
    Done { code: 0, result }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: Option<String>) {
    let c = message.map(|m| CString::new(m.replace('\0', " ")).expect("no NUL left"));
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn to_c_string(s: String) -> *mut c_char {
    CString::new(s.replace('\0', " "))
        .expect("no NUL left")
        .into_raw()
}

/// Run `f` as one ABI call: no panic escapes, the result goes to `out`,
/// the message to snap_last_error.
fn call(out: *mut *mut c_char, f: impl FnOnce() -> Result<Done, Failure>) -> i32 {
    if !out.is_null() {
        // SAFETY: the caller passes a valid `char **` or NULL.
        unsafe { *out = std::ptr::null_mut() };
    }
    let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        Err(invalid(format!("internal error (a bug in snap): {what}")))
    });
    match r {
        Ok(d) => {
            set_last_error(None);
            if !out.is_null() {
                let text = serde_json::to_string(&d.result).unwrap_or_else(|_| "null".into());
                // SAFETY: as above.
                unsafe { *out = to_c_string(text) };
            }
            if d.code != 0 {
                // Every nonzero return says why (snap.h); a result without
                // an `error` still names its code.
                let why = d.result["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("returned {}", d.code));
                set_last_error(Some(why));
            }
            d.code as i32
        }
        Err(f) => {
            set_last_error(Some(f.message));
            f.code as i32
        }
    }
}

/// A snapshot as every call returns it (ffi/schemas/snapshot.schema.json):
/// its fields, and `snapshot`, its id, as the key every result names a
/// snapshot by.
fn snapshot_json(s: &snap::Snapshot) -> Value {
    let mut v = s.to_json();
    v["snapshot"] = json!(s.id.to_hex());
    v
}

/// The repository and the sources a request names (snap_create and the
/// migration calls), the call started on the repository.
///
/// SAFETY: as for [`repo_arg`] and [`json_arg`].
unsafe fn sources_request<'a>(
    repo: *mut SnapRepo,
    request_json: *const c_char,
) -> Result<(&'a SnapRepo, snap::CreateOptions), Failure> {
    // SAFETY: forwarded from the caller.
    let (r, req): (&SnapRepo, CreateRequest) =
        unsafe { (repo_arg(repo)?, json_arg(request_json, "request_json")?) };
    r.start();
    Ok((r, req.to_options()?))
}

/// A C string argument as UTF-8.
///
/// SAFETY: `p` is NULL or a NUL-terminated string valid for this call.
unsafe fn arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(invalid(format!("{name} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated, as the caller promises.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|e| invalid(format!("{name} is not UTF-8: {e}")))
}

/// An optional JSON object argument (NULL or "" is `{}`).
///
/// SAFETY: as for [`arg`].
unsafe fn json_arg<T: serde::de::DeserializeOwned>(
    p: *const c_char,
    name: &str,
) -> Result<T, Failure> {
    let text = if p.is_null() {
        ""
    } else {
        // SAFETY: forwarded.
        unsafe { arg(p, name)? }
    };
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| invalid(format!("{name}: {e}")))
}

/// SAFETY: `repo` is NULL or a pointer snap_open returned and snap_close
/// has not freed.
unsafe fn repo_arg<'a>(repo: *const SnapRepo) -> Result<&'a SnapRepo, Failure> {
    // SAFETY: as the caller promises.
    unsafe { repo.as_ref() }.ok_or_else(|| invalid("repo is NULL"))
}

impl SnapRepo {
    /// Open the repository for one call, with the lock that call needs.
    fn open(&self, mode: LockMode) -> Result<Repository, Failure> {
        let repo = match &self.unlocked {
            Some(u) => u.open(Some(mode), false)?,
            None => Repository::open(&self.path, Some(mode))?,
        };
        Ok(repo.with_held_files(self.held.clone()))
    }

    /// Open it read-only (list, a dry-run gc).
    fn open_read_only(&self, mode: Option<LockMode>) -> Result<Repository, Failure> {
        Ok(match &self.unlocked {
            Some(u) => u.open(mode, true)?,
            None => Repository::open_read_only(&self.path, mode)?,
        })
    }

    fn start(&self) {
        self.cancel.store(false, Ordering::Relaxed);
    }
}

/// Open the repository at `repo` (a directory). `options_json` may be
/// NULL; `{"create": true}` creates the repository when it does not exist.
/// `{"password": "...", "cache_dir": "/app/cache/snap"}` opens (or with
/// `create`, creates) an encrypted repository: every object sealed, its
/// index kept in `cache_dir` (the app's cache directory; losing it costs
/// one rebuild). With a wrong password it returns NULL and
/// snap_last_error says "wrong password". Returns NULL on failure (snap_last_error says why).
///
/// # Safety
/// `repo` and `options_json` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_open(
    repo: *const c_char,
    options_json: *const c_char,
) -> *mut SnapRepo {
    let mut opened = std::ptr::null_mut();
    call(std::ptr::null_mut(), || {
        // SAFETY: forwarded from the caller.
        let path = PathBuf::from(unsafe { arg(repo, "repo")? });
        // SAFETY: forwarded from the caller.
        let opts: OpenOptions = unsafe { json_arg(options_json, "options_json")? };
        let unlocked = match (&opts.password, &opts.cache_dir) {
            (Some(pw), Some(cache)) => Some(open_encrypted(&path, pw, cache, opts.create)?),
            (Some(_), None) => {
                return Err(invalid(
                    "an encrypted repository needs cache_dir for its index",
                ));
            }
            (None, _) => {
                if opts.create && !snap::is_repository(&path) {
                    Repository::init(&path, &Default::default())?;
                }
                // Fails now, with its reason, rather than at the first call.
                drop(Repository::open(&path, None)?);
                None
            }
        };
        let r = Box::new(SnapRepo {
            path,
            unlocked,
            held: Arc::default(),
            cancel: AtomicBool::new(false),
        });
        opened = Box::into_raw(r);
        Ok(done(Value::Null))
    });
    opened
}

/// Unlock (or create, when asked and there is none) an encrypted
/// repository; checks that it opens now rather than at the first call.
fn open_encrypted(
    path: &std::path::Path,
    password: &str,
    cache: &std::path::Path,
    create: bool,
) -> Result<snap::UnlockedRepository, Failure> {
    let exists = path.join("config").exists();
    let u = if create && !exists {
        snap::UnlockedRepository::create(path, password, cache, &Default::default())?
    } else {
        snap::UnlockedRepository::unlock(path, password, cache)?
    };
    drop(u.open(None, true)?);
    Ok(u)
}

/// Close `repo` and release everything it holds, including the
/// descriptors of the app's databases (so close those first). NULL is
/// ignored.
///
/// # Safety
/// `repo` is NULL or from snap_open, and no call on it is running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_close(repo: *mut SnapRepo) {
    if !repo.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: from snap_open, freed once, as the caller promises.
            drop(unsafe { Box::from_raw(repo) });
        }));
    }
}

/// Ask the call running on `repo` (from another thread) to stop at its
/// next safe point; it then returns 130 having committed nothing more.
/// A call that starts later is not affected.
///
/// # Safety
/// `repo` is NULL or from snap_open and not closed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_cancel(repo: *const SnapRepo) {
    // SAFETY: as the caller promises.
    if let Some(r) = unsafe { repo.as_ref() } {
        r.cancel.store(true, Ordering::Relaxed);
    }
}

/// Take a snapshot. Request: `{"sources": "/data/app"}` or
/// `{"sources": {"db": "/data/app/db", "prefs": "/data/prefs"}}`, and
/// optionally `"tags": [...]`, `"labels": {"k": "v"}`, `"exclude": [globs]`.
/// Result: the snapshot as `snap create --json` prints it. Returns 0, or 3
/// when some paths could not be read (the result lists them).
///
/// # Safety
/// `repo` is from snap_open; strings are NULL or NUL-terminated;
/// `result_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_create(
    repo: *mut SnapRepo,
    request_json: *const c_char,
    on_event: SnapEventFn,
    user_data: *mut c_void,
    result_json: *mut *mut c_char,
) -> i32 {
    call(result_json, || {
        // SAFETY: forwarded from the caller.
        let (r, opts) = unsafe { sources_request(repo, request_json)? };
        let sink = EventSink::new(on_event, user_data, &r.cancel);
        let repo = r.open(LockMode::Exclusive)?;
        let snap = snap::create(&repo, &opts, &sink);
        sink.finish();
        let snap = snap?;
        Ok(Done {
            code: if snap.complete { 0 } else { exit::PARTIAL },
            result: snapshot_json(&snap),
        })
    })
}

/// Restore a snapshot. Request: `"snapshot"` (an id, a prefix, `latest`,
/// `latest~N`, `tag:NAME`), optionally `"target"` (another directory;
/// default: the snapshot's own sources, in place), `"path"` (one path of
/// the snapshot), `"dry_run"`. An in-place restore first takes a
/// `pre-restore` safety snapshot. Result: the plan (dry run) or what was
/// done, as `snap restore --json` prints them. Returns 0, 3 when some
/// entries could not be restored, 6 when a dry run finds nothing to do.
///
/// # Safety
/// As for snap_create.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_restore(
    repo: *mut SnapRepo,
    request_json: *const c_char,
    on_event: SnapEventFn,
    user_data: *mut c_void,
    result_json: *mut *mut c_char,
) -> i32 {
    call(result_json, || {
        // SAFETY: forwarded from the caller.
        let (r, req): (&SnapRepo, RestoreRequest) =
            unsafe { (repo_arg(repo)?, json_arg(request_json, "request_json")?) };
        r.start();
        let mode = if req.dry_run {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        };
        let repo = r.open(mode)?;
        let snap = repo.find_snapshot(&req.snapshot)?;
        let opts = RestoreOptions {
            target: req.target.clone(),
            subpath: req.path.clone(),
            dry_run: req.dry_run,
            safety_snapshot: true,
            ..RestoreOptions::default()
        };
        let sink = EventSink::new(on_event, user_data, &r.cancel);
        let outcome = restore(&repo, &snap, &opts, &sink);
        sink.finish();
        let (plan, stats) = outcome?;
        Ok(match stats {
            None => Done {
                code: if !plan.damaged.is_empty() {
                    exit::DAMAGED
                } else if plan.changes_anything() {
                    0
                } else {
                    exit::NOTHING_TO_DO
                },
                result: serde_json::to_value(&plan).map_err(|e| invalid(e.to_string()))?,
            },
            Some(st) => {
                let mut v = serde_json::to_value(&st).map_err(|e| invalid(e.to_string()))?;
                v["snapshot"] = json!(snap.id.to_hex());
                v["target"] = json!(plan.target.to_string_lossy());
                let code = if st.damaged {
                    exit::DAMAGED
                } else if st.failed.is_empty() {
                    0
                } else {
                    v["error"] =
                        json!(format!("{} entries could not be restored", st.failed.len()));
                    exit::PARTIAL
                };
                Done { code, result: v }
            }
        })
    })
}

/// The snapshots, oldest first: a JSON array of what snap_create returns.
///
/// # Safety
/// As for snap_create.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_list(repo: *mut SnapRepo, result_json: *mut *mut c_char) -> i32 {
    call(result_json, || {
        // SAFETY: forwarded from the caller.
        let r = unsafe { repo_arg(repo)? };
        r.start();
        let repo = r.open_read_only(None)?;
        let list: Vec<Value> = repo.snapshots()?.iter().map(snapshot_json).collect();
        Ok(done(Value::Array(list)))
    })
}

/// Remove snapshots a retention policy does not keep, and the data only
/// they used. Request (all optional): `keep_last`, `keep_hourly`,
/// `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`,
/// `keep_within` ("30d", "12h"), `keep_tags`, `dry_run`. Without a policy
/// no snapshot is removed, only unreferenced data. Pinned snapshots are
/// always kept. Result: what `snap gc --json` prints.
///
/// # Safety
/// As for snap_create.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_gc(
    repo: *mut SnapRepo,
    request_json: *const c_char,
    result_json: *mut *mut c_char,
) -> i32 {
    call(result_json, || {
        // SAFETY: forwarded from the caller.
        let (r, req): (&SnapRepo, GcRequest) =
            unsafe { (repo_arg(repo)?, json_arg(request_json, "request_json")?) };
        r.start();
        let repo = if req.dry_run {
            r.open_read_only(Some(LockMode::Shared))?
        } else {
            r.open(LockMode::Exclusive)?
        };
        let opts = GcOptions {
            policy: req.policy()?,
            dry_run: req.dry_run,
            ..GcOptions::default()
        };
        let sink = EventSink::new(None, std::ptr::null_mut(), &r.cancel);
        let stats = gc(&repo, &opts, &sink)?;
        Ok(done(
            serde_json::to_value(&stats).map_err(|e| invalid(e.to_string()))?,
        ))
    })
}

/// Begin a migration: take the pinned `pre-migration` snapshot of the
/// sources (request: as for snap_create). Refused (1) while an earlier
/// session of the same sources was never ended, or when a path could not
/// be read (a rollback could not bring it back). Result: `{"snapshot":
/// "<id>", ...}` plus the rest of the snapshot, as snap_create returns it.
///
/// # Safety
/// As for snap_create.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_migration_begin(
    repo: *mut SnapRepo,
    request_json: *const c_char,
    result_json: *mut *mut c_char,
) -> i32 {
    call(result_json, || {
        // SAFETY: forwarded from the caller.
        let (r, opts) = unsafe { sources_request(repo, request_json)? };
        let repo = r.open(LockMode::Exclusive)?;
        let sink = EventSink::new(None, std::ptr::null_mut(), &r.cancel);
        let snap = begin_migration(&repo, &opts, &sink)?;
        Ok(done(snapshot_json(&snap)))
    })
}

/// The migration session of the sources (request: as for snap_create)
/// that was begun and never ended, because the app died during it:
/// snap_migration_begin refuses (1) until it is ended. Result:
/// `{"snapshot": "<id>" | null, "time": ..., ...}` (the rest of the
/// snapshot, as snap_list gives it). End it with snap_migration_end on
/// that id: `succeeded` 0 rolls back what the dead session left (returns
/// 7), 1 keeps it (returns 0). Returns 0, or 6 when there is none.
///
/// # Safety
/// As for snap_create.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_migration_unfinished(
    repo: *mut SnapRepo,
    request_json: *const c_char,
    result_json: *mut *mut c_char,
) -> i32 {
    call(result_json, || {
        // SAFETY: forwarded from the caller.
        let (r, opts) = unsafe { sources_request(repo, request_json)? };
        let repo = r.open(LockMode::Shared)?;
        Ok(match unfinished_session(&repo, &opts)? {
            Some(s) => done(snapshot_json(&s)),
            None => Done {
                code: exit::NOTHING_TO_DO,
                result: json!({ "snapshot": null }),
            },
        })
    })
}

/// End the migration begun with `snapshot` (the id snap_migration_begin
/// returned). `succeeded` nonzero: the changes stay, the snapshot is
/// unpinned and tagged `migration-kept` (it keeps `pre-migration`: it
/// holds the state before); returns 0. Zero: the sources are put
/// back exactly as they were (close the databases first), the snapshot is
/// tagged `rolled-back`; returns 7, or 8 when some entries could not be
/// rolled back (the result lists them). Result: `{"outcome": "migrated" |
/// "rolled_back" | "rollback_incomplete", "snapshot", "restore",
/// "rolled_back": ["<verb> <path>", ...], ...}`.
///
/// # Safety
/// As for snap_create.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_migration_end(
    repo: *mut SnapRepo,
    snapshot: *const c_char,
    succeeded: i32,
    result_json: *mut *mut c_char,
) -> i32 {
    call(result_json, || {
        // SAFETY: forwarded from the caller.
        let (r, spec) = unsafe { (repo_arg(repo)?, arg(snapshot, "snapshot")?) };
        r.start();
        let repo = r.open(LockMode::Exclusive)?;
        let id = repo.find_snapshot(spec)?.id;
        let sink = EventSink::new(None, std::ptr::null_mut(), &r.cancel);
        let end = finish_migration(&repo, &id, succeeded != 0, None, &sink)?;
        let mut v = serde_json::to_value(&end).map_err(|e| invalid(e.to_string()))?;
        let code = match end.outcome {
            Outcome::Migrated => 0,
            Outcome::RolledBack => {
                // Not a failure of the call, but not 0: snap_last_error
                // says what happened, as for every nonzero return.
                v["error"] = json!("the migration failed and its sources were rolled back exactly");
                exit::ROLLED_BACK
            }
            Outcome::RollbackIncomplete => {
                v["error"] =
                    json!("the rollback could not restore every entry; see restore.failed");
                exit::ROLLBACK_INCOMPLETE
            }
        };
        Ok(Done { code, result: v })
    })
}

/// Why the last call on this thread returned nonzero (a failure, or 7:
/// the migration was rolled back), or NULL if it returned 0.
/// Valid until the next snap call on this thread; do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn snap_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}

/// Free a string snap returned through `result_json`. NULL is ignored.
///
/// # Safety
/// `s` is NULL or a string from a snap `result_json`, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn snap_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: made by CString::into_raw in this library.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// snap's version, for example "0.1.0". Static; do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn snap_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("version has a NUL"),
        };
    VERSION.as_ptr()
}
