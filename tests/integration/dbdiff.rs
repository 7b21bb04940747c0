//! `snap diff --db`: what a migration changed inside a SQLite database,
//! between two snapshots or against the live database, through the binary.

use std::fs;
use std::path::Path;

use crate::common::*;

fn exec(db: &Path, sql: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(sql).unwrap();
}

/// The database of a notes app before its migration: a rowid table with
/// an integer key, a WITHOUT ROWID table, a table with no key, an index,
/// awkward names and NULLs.
fn notes_app(app: &Path) -> std::path::PathBuf {
    fs::create_dir_all(app).unwrap();
    write(&app.join("prefs.json"), "{}");
    let db = app.join("notes.db");
    exec(
        &db,
        r#"PRAGMA journal_mode=WAL;
        CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT, body TEXT);
        CREATE TABLE tags(name TEXT PRIMARY KEY, color TEXT) WITHOUT ROWID;
        CREATE TABLE log(msg TEXT);
        CREATE TABLE "we""ird ta ble"(k INTEGER PRIMARY KEY, v);
        CREATE INDEX notes_title ON notes(title);
        WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)
          INSERT INTO notes SELECT i, 't' || i, CASE WHEN i % 10 = 0 THEN NULL ELSE 'b' || i END FROM c;
        WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20)
          INSERT INTO tags SELECT 'tag' || i, 'red' FROM c;
        WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 50)
          INSERT INTO log SELECT 'm' || i FROM c;
        INSERT INTO "we""ird ta ble" VALUES (1, NULL), (2, x'00ff');"#,
    );
    db
}

/// The migration: schema changes, and rows inserted, deleted and updated.
const MIGRATION: &str = r#"
    ALTER TABLE notes ADD COLUMN archived INTEGER DEFAULT 0;
    UPDATE notes SET body = body || ' (edited)' WHERE id % 500 = 1;
    DELETE FROM notes WHERE id > 2990;
    INSERT INTO notes(id, title, body) VALUES (5000, 'new', NULL);
    UPDATE tags SET color = 'blue' WHERE name = 'tag3';
    DELETE FROM log WHERE rowid <= 5;
    UPDATE "we""ird ta ble" SET v = NULL WHERE k = 1;
    UPDATE "we""ird ta ble" SET v = 'x' WHERE k = 2;
    CREATE TABLE attachments(id INTEGER PRIMARY KEY, note INTEGER, data BLOB);
    INSERT INTO attachments(note, data) VALUES (1, x'deadbeef');
    DROP INDEX notes_title;
    PRAGMA user_version = 7;"#;

fn diff_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let out = env
        .snap()
        .arg("diff")
        .args(args)
        .arg("--json")
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

fn database<'v>(diff: &'v serde_json::Value, path: &str) -> &'v serde_json::Value {
    let entry = diff
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("{path} is in the diff: {diff}"));
    &entry["database"]
}

fn table<'v>(db: &'v serde_json::Value, name: &str) -> &'v serde_json::Value {
    db["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("table {name} changed: {db}"))
}

#[test]
fn diff_db_between_snapshots_gives_schema_and_rows_by_key() {
    let env = Env::new();
    let app = env.path("app");
    let db = notes_app(&app);
    let before = env.create_id(&app);
    exec(&db, MIGRATION);
    write(&app.join("prefs.json"), r#"{"v": 2}"#);
    let after = env.create_id(&app);

    let v = diff_json(&env, &[&before, &after, "--rows", "2"]);
    let d = database(&v, "notes.db");
    assert_eq!(d["before"]["user_version"], 0);
    assert_eq!(d["after"]["user_version"], 7);
    assert_eq!(d["before"]["journal_mode"], "wal");
    let schema: Vec<(String, String, String)> = d["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().into(),
                c["kind"].as_str().unwrap().into(),
                c["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("removed", "index", "notes_title"),
        ("altered", "table", "notes"),
        ("added", "table", "attachments"),
    ] {
        let want = (want.0.to_string(), want.1.to_string(), want.2.to_string());
        assert!(schema.contains(&want), "{want:?} in {schema:?}");
    }
    assert_eq!(schema.len(), 3, "{schema:?}");
    let altered = d["schema"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "notes")
        .unwrap();
    assert_eq!(altered["columns_added"], serde_json::json!(["archived"]));

    // notes: ids 2991..3000 deleted (10), 5000 inserted, bodies of ids
    // 1, 501, ..., 2501 edited (6; NULL || text stays NULL for none of
    // them: none is a multiple of 10).
    let notes = table(d, "notes");
    assert_eq!(notes["key"], "primary key (id)");
    assert_eq!(
        (&notes["inserted"], &notes["deleted"], &notes["updated"]),
        (&1.into(), &10.into(), &6.into()),
        "{notes}"
    );
    assert_eq!(notes["rows_before"], 3000);
    assert_eq!(notes["rows_after"], 2991);
    let rows = notes["changed_rows"].as_array().unwrap();
    let updated: Vec<_> = rows.iter().filter(|r| r["change"] == "updated").collect();
    assert_eq!(updated.len(), 2, "--rows 2 lists two of each change");
    assert_eq!(updated[0]["key"], serde_json::json!([1]));
    assert_eq!(
        updated[0]["columns"]["body"],
        serde_json::json!(["b1", "b1 (edited)"]),
        "only the changed column, before and after"
    );
    assert!(updated[0]["columns"].get("title").is_none());
    let inserted: Vec<_> = rows.iter().filter(|r| r["change"] == "inserted").collect();
    assert_eq!(inserted[0]["key"], serde_json::json!([5000]));
    assert_eq!(inserted[0]["columns"]["body"], serde_json::Value::Null);

    let tags = table(d, "tags");
    assert_eq!(tags["key"], "primary key (name)");
    assert_eq!(
        (tags["updated"].as_i64(), tags["inserted"].as_i64()),
        (Some(1), Some(0))
    );
    let log = table(d, "log");
    assert_eq!(log["key"], "rowid");
    assert_eq!(log["deleted"], 5);
    // NULL to NULL is no change; a blob to text is one.
    let weird = table(d, "we\"ird ta ble");
    assert_eq!(weird["updated"], 1, "{weird}");
    // prefs.json changed too, and is no database.
    let prefs = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "prefs.json")
        .unwrap();
    assert!(prefs.get("database").is_none());

    // The text form says the same, under the file's line.
    let out = env
        .snap()
        .args(["diff", &before, &after, "--db"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("user_version 0 -> 7"), "{text}");
    assert!(
        text.contains("table notes: 1 inserted, 10 deleted, 6 updated"),
        "{text}"
    );
    assert!(text.contains("+ table attachments (1 rows)"), "{text}");
    // Without --db, no database is opened and the output is the files only.
    let out = env
        .snap()
        .args(["diff", &before, &after])
        .assert()
        .success();
    let plain = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(!plain.contains("SQLite"), "{plain}");
}

/// Against the live database with writes still in its `-wal` (not
/// checkpointed, the app's connection open): the change is seen, and the
/// source's files are not touched (its shared memory aside).
#[test]
fn diff_db_against_the_live_source_reads_the_wal_and_touches_nothing() {
    let env = Env::new();
    let app = env.path("app");
    let db = notes_app(&app);
    let snapshot = env.create_id(&app);
    let app_conn = rusqlite::Connection::open(&db).unwrap();
    app_conn
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             INSERT INTO log VALUES ('live 1'), ('live 2');
             UPDATE notes SET title = 'renamed' WHERE id = 7;",
        )
        .unwrap();
    let wal = app.join("notes.db-wal");
    assert!(
        fs::metadata(&wal).unwrap().len() > 0,
        "the writes are in the -wal"
    );
    // The -shm is SQLite's shared memory, which every reader of a live
    // WAL database writes its read mark in (create does too): not data.
    let files = || {
        let mut l = listing(&app);
        l.remove(Path::new("notes.db-shm"));
        l
    };
    let before = files();
    let bytes = |p: &Path| fs::read(p).unwrap();
    let (main, wal_bytes) = (bytes(&db), bytes(&wal));

    let v = diff_json(&env, &[&snapshot, "--db", "--rows", "5"]);
    let d = database(&v, "notes.db");
    assert_eq!(table(d, "log")["inserted"], 2);
    let notes = table(d, "notes");
    assert_eq!(notes["updated"], 1);
    assert_eq!(
        notes["changed_rows"][0]["columns"]["title"],
        serde_json::json!(["t7", "renamed"])
    );
    assert_eq!(files(), before, "the source's files and metadata unchanged");
    assert_eq!(bytes(&db), main);
    assert_eq!(bytes(&wal), wal_bytes);
    drop(app_conn);
}

/// `diff --json` (with --db and --rows) fits docs/schemas/diff.schema.json,
/// checked by the same small validator the C ABI's schemas use.
#[test]
fn diff_json_fits_its_documented_schema() {
    let env = Env::new();
    let app = env.path("app");
    let db = notes_app(&app);
    let before = env.create_id(&app);
    exec(&db, MIGRATION);
    fs::remove_file(app.join("prefs.json")).unwrap();
    fs::create_dir_all(app.join("cache")).unwrap();
    let after = env.create_id(&app);
    let v = diff_json(&env, &[&before, &after, "--rows", "3"]);
    assert!(v.as_array().unwrap().len() >= 3, "{v}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let json = env.path("diff.json");
    fs::write(&json, v.to_string()).unwrap();
    let check = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys; sys.path.insert(0, sys.argv[1]); import schema_check\n\
             errs = schema_check.errors(json.load(open(sys.argv[3])), json.load(open(sys.argv[2])))\n\
             print('\\n'.join(errs)); sys.exit(1 if errs else 0)",
        )
        .arg(root.join("ffi/tests/python"))
        .arg(root.join("docs/schemas/diff.schema.json"))
        .arg(&json)
        .output()
        .expect("python3 runs");
    assert!(
        check.status.success(),
        "diff --json breaks its schema: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // The check can fail: a result with a wrong type does.
    let mut broken = v.clone();
    broken[0]["change"] = "changed".into();
    fs::write(&json, broken.to_string()).unwrap();
    let bad = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys; sys.path.insert(0, sys.argv[1]); import schema_check\n\
             sys.exit(1 if schema_check.errors(json.load(open(sys.argv[3])), json.load(open(sys.argv[2]))) else 0)",
        )
        .arg(root.join("ffi/tests/python"))
        .arg(root.join("docs/schemas/diff.schema.json"))
        .arg(&json)
        .status()
        .unwrap();
    assert!(!bad.success(), "a wrong change kind is caught");
}

/// A database that is not valid SQLite on one side (its header intact,
/// its pages garbage): `diff --db` names it and why, reports the other
/// files, and exits 0.
#[test]
fn diff_db_names_a_damaged_database_and_goes_on() {
    let env = Env::new();
    let app = env.path("app");
    let db = notes_app(&app);
    let other = app.join("other.db");
    exec(&other, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    let before = env.create_id(&app);
    let mut bytes = fs::read(&db).unwrap();
    for b in &mut bytes[100..] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    fs::write(&db, &bytes).unwrap();
    fs::remove_file(app.join("notes.db-wal")).ok();
    fs::remove_file(app.join("notes.db-shm")).ok();
    exec(&other, "INSERT INTO t VALUES (2);");
    let after = env.create_id(&app);
    let out = env
        .snap()
        .args(["diff", &before, &after, "--db", "--json"])
        .assert()
        .success();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains("notes.db") && err.contains("the newer image"),
        "the damaged database is named: {err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let notes = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "notes.db")
        .unwrap();
    assert!(
        notes["database_error"]
            .as_str()
            .unwrap()
            .contains("notes.db"),
        "{notes}"
    );
    assert_eq!(table(database(&v, "other.db"), "t")["inserted"], 1);
}

/// A Python with Alembic and SQLAlchemy from PyPI.
fn alembic_python() -> std::path::PathBuf {
    tools_python(
        "py-alembic",
        &["alembic==1.14.1", "sqlalchemy==2.0.36"],
        "import alembic, sqlalchemy",
    )
}

/// Rows of `sql` (key first, then the values) from `db`, by key.
fn rows_by_key(db: &Path, sql: &str) -> std::collections::BTreeMap<i64, Vec<String>> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        let vals = (1..n)
            .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
            .collect();
        Ok((r.get(0)?, vals))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

/// A real Alembic migration (its operations API, batch mode recreating a
/// table as SQLite needs) between two snapshots: the report holds exactly
/// the changes a row-by-row comparison computed here finds.
#[test]
fn diff_db_reports_exactly_what_an_alembic_migration_changed() {
    let python = alembic_python();
    let env = Env::new();
    let app = env.path("app");
    fs::create_dir_all(&app).unwrap();
    let db = app.join("app.db");
    exec(
        &db,
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT, score REAL);
         CREATE TABLE events(kind TEXT, at INTEGER);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)
           INSERT INTO users SELECT i, 'user ' || i, 'u' || i || '@example.org', i * 0.5 FROM c;
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100)
           INSERT INTO events SELECT 'k' || (i % 3), i FROM c;",
    );
    let copy_before = env.path("before.db");
    fs::copy(&db, &copy_before).unwrap();
    let before = env.create_id(&app);
    let script = env.path("migrate.py");
    write(
        &script,
        format!(
            r#"import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
engine = sa.create_engine("sqlite:///{db}")
with engine.begin() as conn:
    op = Operations(MigrationContext.configure(conn))
    op.add_column("users", sa.Column("active", sa.Integer, server_default="1"))
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email")
    op.execute("UPDATE users SET score = score * 2 WHERE id % 37 = 0")
    op.execute("DELETE FROM users WHERE id > 1990")
    op.execute("INSERT INTO users(id, name, score) VALUES (5000, 'late', 1.0)")
    op.execute("DELETE FROM events WHERE at % 10 = 0")
    op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True), sa.Column("what", sa.Text))
    op.create_index("users_name", "users", ["name"])
    op.execute("PRAGMA user_version = 3")
"#,
            db = db.display()
        ),
    );
    let ran = std::process::Command::new(&python)
        .arg(&script)
        .status()
        .unwrap();
    assert!(ran.success());
    let after = env.create_id(&app);

    // What changed, computed row by row: users by id over the columns
    // both images have (name, score), events by rowid.
    let a = rows_by_key(&copy_before, "SELECT id, name, score FROM users");
    let b = rows_by_key(&db, "SELECT id, name, score FROM users");
    let inserted: Vec<i64> = b.keys().filter(|k| !a.contains_key(k)).copied().collect();
    let deleted: Vec<i64> = a.keys().filter(|k| !b.contains_key(k)).copied().collect();
    let updated: Vec<i64> = a
        .iter()
        .filter(|(k, v)| b.get(k).is_some_and(|w| w != *v))
        .map(|(k, _)| *k)
        .collect();
    assert_eq!((inserted.len(), deleted.len(), updated.len()), (1, 10, 53));
    let ea = rows_by_key(&copy_before, "SELECT rowid, kind, at FROM events");
    let eb = rows_by_key(&db, "SELECT rowid, kind, at FROM events");
    let events_deleted = ea.keys().filter(|k| !eb.contains_key(k)).count();

    let v = diff_json(&env, &[&before, &after, "--rows", "100"]);
    let d = database(&v, "app.db");
    assert_eq!(
        (
            d["before"]["user_version"].as_i64(),
            d["after"]["user_version"].as_i64()
        ),
        (Some(0), Some(3))
    );
    let users = table(d, "users");
    assert_eq!(users["key"], "primary key (id)");
    assert_eq!(
        users["compared_columns"],
        serde_json::json!(["name", "score"])
    );
    assert_eq!(
        (
            users["inserted"].as_u64(),
            users["deleted"].as_u64(),
            users["updated"].as_u64()
        ),
        (
            Some(inserted.len() as u64),
            Some(deleted.len() as u64),
            Some(updated.len() as u64)
        ),
        "the batch mode's table copy rewrote every row, but only {} changed",
        updated.len()
    );
    let listed = |change: &str| -> Vec<i64> {
        users["changed_rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["change"] == change)
            .map(|r| r["key"][0].as_i64().unwrap())
            .collect()
    };
    assert_eq!(listed("inserted"), inserted);
    assert_eq!(listed("deleted"), deleted);
    let mut up = listed("updated");
    up.sort();
    assert_eq!(up, updated);
    let events = table(d, "events");
    assert_eq!(
        events["key"], "rowid",
        "a table without a primary key is matched by rowid"
    );
    assert_eq!(events["deleted"].as_u64(), Some(events_deleted as u64));
    let schema: Vec<String> = d["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["change"].as_str().unwrap(),
                c["kind"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "altered table users",
        "added table audit",
        "added index users_name",
    ] {
        assert!(schema.iter().any(|s| s == want), "{want} in {schema:?}");
    }
    let altered = d["schema"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "users")
        .unwrap();
    assert_eq!(altered["columns_added"], serde_json::json!(["active"]));
    assert_eq!(altered["columns_removed"], serde_json::json!(["email"]));
}

/// Between two snapshots, a table whose pages are the same pages,
/// unchanged, is not compared row by row (the common migration touches a
/// few tables of a large database); one whose pages moved (VACUUM) is,
/// and both give the right answer.
#[test]
fn diff_db_skips_tables_its_unchanged_pages_prove_equal() {
    let env = Env::new();
    let app = env.path("app");
    fs::create_dir_all(&app).unwrap();
    let db = app.join("big.db");
    exec(
        &db,
        "CREATE TABLE big(id INTEGER PRIMARY KEY, body TEXT);
         CREATE TABLE small(id INTEGER PRIMARY KEY, v INTEGER);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
           INSERT INTO big SELECT i, hex(randomblob(100)) FROM c;
         INSERT INTO small VALUES (1, 1), (2, 2), (3, 3);",
    );
    let a = env.create_id(&app);
    exec(&db, "UPDATE small SET v = v * 10 WHERE id = 2;");
    let b = env.create_id(&app);
    let v = diff_json(&env, &[&a, &b, "--db"]);
    let d = database(&v, "big.db");
    assert!(d["tables_proven_unchanged"].as_u64().unwrap() >= 1, "{d}");
    assert_eq!(d["tables"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(table(d, "small")["updated"], 1);
    // The same rows of `big` on other pages (deleted and put back):
    // its pages prove nothing, and row by row it is unchanged.
    exec(
        &db,
        "CREATE TABLE keep AS SELECT * FROM big WHERE id <= 5000;
         DELETE FROM big WHERE id <= 5000;
         INSERT INTO big SELECT * FROM keep;
         DROP TABLE keep;",
    );
    let c = env.create_id(&app);
    let v = diff_json(&env, &[&b, &c, "--db"]);
    let d = database(&v, "big.db");
    assert!(
        d["tables_proven_unchanged"].as_u64().unwrap() < 2,
        "big's pages moved: {d}"
    );
    assert!(d["tables"].as_array().unwrap().is_empty(), "{d}");
}
