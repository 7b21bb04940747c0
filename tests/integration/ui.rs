//! `snap ui`, served by the real binary and loaded in a real browser
//! (headless Chromium: `chromium` on PATH, or `$SNAP_CHROMIUM`; the test
//! fails and says so when there is none), and driven through WebDriver
//! (Debian's chromedriver, Selenium from PyPI) for a restore. The browser runs the pages as a
//! user would see them; its screenshots are copied into docs/ when
//! `SNAP_BLESS=1`. What a browser does not check (refusals, the restore's
//! POST) is checked over raw HTTP.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::*;

struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    base: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(env: &Env, args: &[&str]) -> Server {
    let mut child = env
        .snap_process()
        .arg("ui")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim();
    let (base, token) = url.split_once("/?token=").expect("snap ui prints its URL");
    assert!(base.starts_with("http://127.0.0.1:"), "{url}");
    Server {
        child,
        base: base.to_string(),
        token: token.to_string(),
    }
}

/// One raw HTTP/1.1 request; the status and the body.
fn http(
    srv: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let host = srv.base.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(host).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req += &format!("Host: {host}\r\n");
    }
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("SNAP_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!("no headless browser: install chromium (apt-get install chromium) or set SNAP_CHROMIUM");
}

/// Load `path` (with the token) in headless Chromium; the DOM after its
/// scripts ran, and a screenshot in `shot`.
fn browse(srv: &Server, path: &str, shot: &Path) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!("{}{path}{sep}token={}", srv.base, srv.token);
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .stderr(Stdio::null())
            .output()
            .unwrap()
    };
    let dom = run(&["--dump-dom"]);
    assert!(dom.status.success(), "chromium failed on {url}");
    let shot_arg = format!("--screenshot={}", shot.display());
    let out = run(&[&shot_arg, "--window-size=1280,900"]);
    assert!(
        out.status.success() && shot.is_file(),
        "no screenshot of {url}"
    );
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

/// An app with a database, snapshotted, then one migration kept and one
/// rolled back (each through `snap guard`).
fn app_with_history(env: &Env) -> (PathBuf, String, String) {
    let app = env.path("app");
    fs::create_dir_all(&app).unwrap();
    write(&app.join("prefs.json"), r#"{"theme":"dark"}"#);
    let db = app.join("notes.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT);
         INSERT INTO notes(title) VALUES ('a'), ('b'), ('c');",
    )
    .unwrap();
    drop(c);
    let first = env.create_id(&app);
    let migrate = format!(
        "python3 -c \"import sqlite3; c=sqlite3.connect('{}'); c.executescript('ALTER TABLE notes ADD COLUMN done INTEGER; UPDATE notes SET title=title||\\'!\\' WHERE id=2; PRAGMA user_version=2;'); c.commit()\"",
        db.display()
    );
    env.snap()
        .args(["guard", "--source"])
        .arg(&app)
        .args(["--", "sh", "-c", &migrate])
        .assert()
        .success();
    let second = env.create_id(&app);
    // A migration that changes the database and then fails: rolled back,
    // with a safety snapshot of what it left.
    let failing = format!(
        "python3 -c \"import sqlite3; c=sqlite3.connect('{}'); c.execute('DELETE FROM notes'); c.commit()\"; exit 3",
        db.display()
    );
    env.snap()
        .args(["guard", "--source"])
        .arg(&app)
        .args(["--", "sh", "-c", &failing])
        .assert()
        .code(7);
    (app, first, second)
}

#[test]
fn the_ui_shows_timeline_tree_diff_and_stats_in_a_browser() {
    let env = Env::new();
    let (_, first, second) = app_with_history(&env);
    let srv = serve(&env, &[]);
    let shots = env.path("shots");
    fs::create_dir_all(&shots).unwrap();

    let dom = browse(&srv, "/", &shots.join("ui-timeline.png"));
    assert!(
        dom.contains(&first[..8]) && dom.contains(&second[..8]),
        "{dom}"
    );
    assert!(
        dom.contains("migration <b>kept</b>"),
        "the kept migration is one event: {dom}"
    );
    assert!(dom.contains("migration <b>rolled back</b>"), "{dom}");
    assert!(
        dom.contains("safety snapshot"),
        "a rollback's safety snapshot says what it is: {dom}"
    );
    assert!(dom.contains("notes.db=2"), "user_versions are shown: {dom}");

    let dom = browse(
        &srv,
        &format!("/snapshot/{second}"),
        &shots.join("ui-tree.png"),
    );
    assert!(dom.contains("notes.db") && dom.contains("sqlite"), "{dom}");
    let (status, body) = http(
        &srv,
        "GET",
        &format!("/download/{second}?path=prefs.json"),
        &[("Cookie", &format!("snap_token={}", srv.token))],
        "",
    );
    assert_eq!((status, body.as_str()), (200, r#"{"theme":"dark"}"#));

    let dom = browse(
        &srv,
        &format!("/diff?from={first}&to={second}"),
        &shots.join("ui-diff.png"),
    );
    assert!(dom.contains("notes.db"), "{dom}");
    assert!(dom.contains("user_version 0 → 2"), "{dom}");
    assert!(dom.contains("+column done"), "{dom}");
    assert!(
        dom.contains("<td>notes</td><td>0</td><td>0</td><td>1</td>"),
        "one row updated: {dom}"
    );

    let dom = browse(&srv, "/stats", &shots.join("ui-stats.png"));
    assert!(dom.contains("<svg id=\"growth\""), "{dom}");
    assert!(
        dom.matches("<rect class=\"new\"").count() >= 4,
        "a bar per snapshot: {dom}"
    );

    if std::env::var_os("SNAP_BLESS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        for f in [
            "ui-timeline.png",
            "ui-tree.png",
            "ui-diff.png",
            "ui-stats.png",
        ] {
            fs::copy(shots.join(f), docs.join(f)).unwrap();
        }
    }
}

#[test]
fn the_ui_refuses_requests_without_the_token_from_other_hosts_and_writes_nothing() {
    let env = Env::new();
    let (app, first, _) = app_with_history(&env);
    let srv = serve(&env, &[]);
    let cookie = format!("snap_token={}", srv.token);
    assert_eq!(http(&srv, "GET", "/", &[], "").0, 403, "no token");
    assert_eq!(
        http(
            &srv,
            "GET",
            "/",
            &[("Cookie", "snap_token=00000000000000000000000000000000")],
            ""
        )
        .0,
        403
    );
    assert_eq!(http(&srv, "GET", "/?token=nope", &[], "").0, 403);
    let (status, _) = http(
        &srv,
        "GET",
        "/",
        &[("Cookie", &cookie), ("Host", "evil.example:80")],
        "",
    );
    assert_eq!(status, 421, "another Host (DNS rebinding) is refused");
    assert_eq!(
        http(&srv, "GET", "/api/snapshots", &[("Cookie", &cookie)], "").0,
        200
    );
    // The read-only server restores nothing, even asked properly.
    let before = listing(&app);
    let origin = srv.base.clone();
    let (status, body) = http(
        &srv,
        "POST",
        &format!("/restore/{first}"),
        &[
            ("Cookie", &cookie),
            ("Origin", &origin),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("token={}", srv.token),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("--allow-restore"), "{body}");
    assert_eq!(listing(&app), before);
}

#[test]
fn a_restore_from_the_ui_shows_its_plan_first_and_its_undo_after() {
    let env = Env::new();
    let (app, first, _) = app_with_history(&env);
    let srv = serve(&env, &["--allow-restore"]);
    let cookie = format!("snap_token={}", srv.token);
    let target = env.path("restored");
    fs::create_dir_all(&target).unwrap();
    write(&target.join("stray.txt"), "not in the snapshot");
    let t = target.to_string_lossy().into_owned();
    let (status, plan) = http(
        &srv,
        "GET",
        &format!("/restore/{first}?target={t}"),
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(status, 200, "{plan}");
    assert!(
        plan.contains("stray.txt") && plan.contains("id=confirm"),
        "{plan}"
    );
    assert!(
        target.join("stray.txt").exists(),
        "the plan changes nothing"
    );
    let form = format!("token={}&target={t}", srv.token);
    let headers = |origin: &'static str| {
        vec![
            ("Cookie".to_string(), cookie.clone()),
            ("Origin".to_string(), origin.to_string()),
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
        ]
    };
    fn as_refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
        h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
    // From another origin (a page elsewhere posting to this server): refused.
    let evil = headers("http://evil.example");
    let (status, _) = http(
        &srv,
        "POST",
        &format!("/restore/{first}"),
        &as_refs(&evil),
        &form,
    );
    assert_eq!(status, 403);
    assert!(target.join("stray.txt").exists());
    let origin: &'static str = Box::leak(srv.base.clone().into_boxed_str());
    let ok = headers(origin);
    let (status, done) = http(
        &srv,
        "POST",
        &format!("/restore/{first}"),
        &as_refs(&ok),
        &form,
    );
    assert_eq!(status, 200, "{done}");
    assert!(
        done.contains("id=undo"),
        "the safety snapshot is named as the undo: {done}"
    );
    assert!(!target.join("stray.txt").exists());
    let expected = env.path("expected");
    env.restore_to(&first, &expected);
    assert_same_tree(&expected, &target);
    let _ = app;
}

/// What the Selenium test does in the browser: open the page the
/// server printed, follow the snapshot's restore link from the timeline,
/// ask for the plan into another directory, confirm, and print the undo.
const RESTORE_IN_BROWSER: &str = r#"
import sys
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
url, snapshot, target, chromium, driver = sys.argv[1:6]
options = Options()
for a in ("--headless", "--no-sandbox", "--disable-gpu"):
    options.add_argument(a)
options.binary_location = chromium
d = webdriver.Chrome(options=options, service=Service(executable_path=driver))
try:
    d.get(url)
    d.find_element(By.CSS_SELECTOR, 'a[href="/restore/%s"]' % snapshot).click()
    box = d.find_element(By.ID, "target")
    box.clear()
    box.send_keys(target)
    d.find_element(By.ID, "replan").click()
    plan = d.find_element(By.CSS_SELECTOR, "ul.plan").text
    assert "stray.txt" in plan, plan
    d.find_element(By.ID, "confirm").click()
    print(d.find_element(By.ID, "done").text)
    print(d.find_element(By.ID, "undo").text)
finally:
    d.quit()
"#;

fn chromedriver() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v chromedriver"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "no chromedriver: install chromium-driver (apt-get install chromium-driver)"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A restore clicked through in the browser: the plan lists what it will
/// delete, the confirmation restores, and the directory is what the CLI's
/// restore gives, with the safety snapshot named as the undo.
#[test]
fn a_restore_clicked_through_in_the_browser_equals_the_clis() {
    let python = tools_python("py-selenium", &["selenium==4.51.0"], "import selenium");
    let env = Env::new();
    let (_, first, _) = app_with_history(&env);
    let target = env.path("restored");
    fs::create_dir_all(&target).unwrap();
    write(&target.join("stray.txt"), "not in the snapshot");
    let srv = serve(&env, &["--allow-restore"]);
    let script = env.path("restore.py");
    write(&script, RESTORE_IN_BROWSER);
    let out = Command::new(python)
        .arg(&script)
        .arg(format!("{}/?token={}", srv.base, srv.token))
        .arg(&first)
        .arg(&target)
        .arg(chromium())
        .arg(chromedriver())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("Restored {}", &first[..8])),
        "{said}"
    );
    assert!(said.contains("Undo: restore the safety snapshot"), "{said}");
    drop(srv);
    let expected = env.path("expected");
    env.restore_to(&first, &expected);
    assert_same_tree(&expected, &target);
    // The undo it named holds the stray file: the restore can be undone.
    let safety = env
        .list()
        .into_iter()
        .rfind(|s| {
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "pre-restore")
        })
        .unwrap();
    let undone = env.path("undone");
    env.restore_to(safety["id"].as_str().unwrap(), &undone);
    assert!(undone.join("stray.txt").is_file());
}
