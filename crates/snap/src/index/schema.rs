//! The index schema. `PRAGMA user_version` holds the schema version; the
//! repository format version is also kept in the `config` table.

pub const SCHEMA_VERSION: u32 = 4;

pub const CREATE: &str = r#"
CREATE TABLE config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE packs (
    id          INTEGER PRIMARY KEY,
    hash        BLOB NOT NULL UNIQUE,
    size        INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    kind        INTEGER NOT NULL DEFAULT 0,
    bases       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE chunks (
    hash       BLOB PRIMARY KEY,
    pack       INTEGER NOT NULL REFERENCES packs(id),
    offset     INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    raw_len    INTEGER NOT NULL,
    codec      INTEGER NOT NULL,
    base       BLOB,
    inner_offset INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX chunks_by_pack ON chunks(pack);
CREATE TABLE trees (
    id    INTEGER PRIMARY KEY,
    hash  BLOB NOT NULL UNIQUE,
    codec INTEGER NOT NULL,
    data  BLOB NOT NULL
);
CREATE TABLE snapshots (
    id         INTEGER PRIMARY KEY,
    hash       BLOB NOT NULL UNIQUE,
    time_ns    INTEGER NOT NULL,
    host       TEXT NOT NULL,
    source     BLOB NOT NULL,
    root       BLOB NOT NULL,
    parent     BLOB,
    tags       TEXT NOT NULL,
    labels     TEXT NOT NULL,
    complete   INTEGER NOT NULL,
    pinned     INTEGER NOT NULL DEFAULT 0,
    unreadable TEXT NOT NULL,
    stats      TEXT NOT NULL,
    root_meta  TEXT NOT NULL
);
CREATE TABLE applied_changes (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE INDEX snapshots_by_source ON snapshots(source, time_ns);
"#;

/// Packs a gc on shared storage condemned (docs/design.md, "Several
/// clients on one bucket"), and the chunk rows they had: out of `chunks`,
/// so that no create dedups against them, still readable for a restore
/// until the pack is deleted or rescued. Created on every read-write open
/// (indexes made before it existed gain it). With them, `held_back`: the
/// snapshot objects of a shared repository the last sync could not index
/// (their data is missing), which `check` reports as damage.
pub const CONDEMNED: &str = r#"
CREATE TABLE IF NOT EXISTS condemned (
    pack   INTEGER PRIMARY KEY REFERENCES packs(id),
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS condemned_chunks (
    pack       INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    offset     INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    raw_len    INTEGER NOT NULL,
    codec      INTEGER NOT NULL,
    base       BLOB,
    inner_offset INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pack, hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS condemned_chunks_by_hash ON condemned_chunks(hash);
CREATE TABLE IF NOT EXISTS held_back (
    hash   BLOB PRIMARY KEY,
    reason TEXT NOT NULL
) WITHOUT ROWID;
"#;
