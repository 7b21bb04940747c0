//! The views of `snap ui`, rendered on the server. Each runs its
//! repository work on a blocking thread, under the one repository handle.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Form;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::{Shared, Ui};
use crate::cli::human_bytes;
use crate::*;
use snap::ops::dbdiff::{After, DbDiff, database_candidates, diff_database_at};
use snap::ops::diff::diff_snapshots;
use snap::ops::migration::{LABEL_RUN, TAG_KEPT, TAG_MIGRATED, TAG_PRE, TAG_ROLLED_BACK};
use snap::ops::restore::{RestoreOptions, execute_restore, plan_restore};

const STYLE: &str = include_str!("style.css");

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], STYLE).into_response()
}

/// Run `work` with the repository (opened to read, or to restore when
/// `write`) on a blocking thread; an error is a page.
async fn blocking_with(
    ui: Shared,
    write: bool,
    work: impl FnOnce(&Ui, &Repository) -> anyhow::Result<Response> + Send + 'static,
) -> Response {
    let r = tokio::task::spawn_blocking(move || {
        let _one = ui.busy.lock().unwrap_or_else(|e| e.into_inner());
        let repo = if write {
            open_repo(&ui.repo, Some(LockMode::Exclusive))?
        } else {
            open_repo_read_only(&ui.repo, Some(LockMode::Shared))?
        };
        work(&ui, &repo)
    })
    .await;
    match r {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            let status = match e.downcast_ref::<snap::Error>() {
                Some(snap::Error::NoSuchSnapshot(_)) | Some(snap::Error::NotInSnapshot { .. }) => {
                    StatusCode::NOT_FOUND
                }
                Some(snap::Error::Usage { .. }) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let body = format!("<p class=error>{}</p>", esc(&format!("{e:#}")));
            (status, page("error", &body)).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")).into_response(),
    }
}

async fn blocking(
    ui: Shared,
    work: impl FnOnce(&Ui, &Repository) -> anyhow::Result<Response> + Send + 'static,
) -> Response {
    blocking_with(ui, false, work).await
}

/// HTML-escaped text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query-string value.
fn q(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>snap: {t}</title>\
         <link rel=stylesheet href=/style.css></head><body>\
         <nav><a href=/>timeline</a> <a href=/stats>statistics</a></nav>\
         <h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

fn html(title: &str, body: String) -> anyhow::Result<Response> {
    Ok(page(title, &body).into_response())
}

/// What a snapshot is, in words: a guarded migration's, a restore's
/// safety snapshot, or one the user took.
fn role(s: &Snapshot) -> &'static str {
    let has = |t: &str| s.tags.iter().any(|x| x == t);
    if has(snap::spec::SAFETY_TAG) {
        "safety snapshot (taken by a restore: its undo)"
    } else if has(TAG_PRE) && has(TAG_ROLLED_BACK) {
        "before a migration that failed and was rolled back"
    } else if has(TAG_PRE) && has(TAG_KEPT) {
        "before a migration that was kept"
    } else if has(TAG_PRE) {
        "before a migration (unfinished or running)"
    } else if has(TAG_MIGRATED) {
        "after a migration"
    } else {
        "snapshot"
    }
}

fn user_versions(s: &Snapshot) -> String {
    s.labels
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("user_version:").map(|f| format!("{f}={v}")))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn timeline(State(ui): State<Shared>) -> Response {
    blocking(ui, |ui, repo| {
        let snaps = repo.snapshots()?;
        let mut by_source: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
        for s in &snaps {
            by_source.entry(source_text(s)).or_default().push(s);
        }
        let mut body = String::new();
        if snaps.is_empty() {
            body.push_str("<p>No snapshots yet: <code>snap create DIR</code> takes one.</p>");
        }
        for (source, list) in &by_source {
            let _ = write!(body, "<section class=source><h2>{}</h2>", esc(source));
            body.push_str(&migrations(list));
            body.push_str(&snapshot_table(ui, list));
            body.push_str("</section>");
        }
        html("timeline", body)
    })
    .await
}

/// Each guarded migration of a source as one event: its outcome and how
/// long it ran (from the pre-migration snapshot to the last of its run).
fn migrations(list: &[&Snapshot]) -> String {
    let mut runs: BTreeMap<&str, Vec<&Snapshot>> = BTreeMap::new();
    for s in list {
        if let Some(run) = s.labels.get(LABEL_RUN) {
            runs.entry(run).or_default().push(s);
        }
    }
    if runs.is_empty() {
        return String::new();
    }
    let mut out = String::from("<h3>migrations</h3><ul class=events>");
    let mut events: Vec<_> = runs.into_iter().collect();
    events.sort_by_key(|(_, ss)| ss.iter().map(|s| s.time_ns).min());
    for (run, ss) in events.iter().rev() {
        let pre = ss.iter().find(|s| s.tags.iter().any(|t| t == TAG_PRE));
        let outcome = match pre {
            Some(p) if p.tags.iter().any(|t| t == TAG_ROLLED_BACK) => "rolled back",
            Some(p) if p.tags.iter().any(|t| t == TAG_KEPT) => "kept",
            _ => "unfinished",
        };
        let start = ss.iter().map(|s| s.time_ns).min().unwrap_or(0);
        let end = ss.iter().map(|s| s.time_ns).max().unwrap_or(0);
        let _ = write!(
            out,
            "<li class=\"event {cls}\">{time}: migration <b>{outcome}</b>, {secs:.1} s between its snapshots; run {run}: {n} snapshots{pre}</li>",
            cls = outcome.replace(' ', "-"),
            time = esc(&snap::snapshot::format_time_local(start)),
            secs = (end - start) as f64 / 1e9,
            run = esc(run),
            n = ss.len(),
            pre = pre
                .map(|p| format!(
                    " (before: <a href=/snapshot/{0}>{1}</a>)",
                    p.id,
                    p.id.short()
                ))
                .unwrap_or_default(),
        );
    }
    out.push_str("</ul>");
    out
}

fn snapshot_table(ui: &Ui, list: &[&Snapshot]) -> String {
    let mut out = String::from(
        "<table class=snapshots><tr><th>time</th><th>id</th><th>what</th><th>tags</th>\
         <th>labels</th><th>user_version</th><th>files</th><th>size</th><th>new data</th><th></th></tr>",
    );
    for (i, s) in list.iter().enumerate().rev() {
        let labels: Vec<String> = s
            .labels
            .iter()
            .filter(|(k, _)| !k.starts_with("user_version:") && k.as_str() != LABEL_RUN)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let prev = i
            .checked_sub(1)
            .map(|p| {
                format!(
                    "<a href=\"/diff?from={}&to={}\">diff with previous</a>",
                    list[p].id, s.id
                )
            })
            .unwrap_or_default();
        let restore = if ui.allow_restore {
            format!(" <a href=/restore/{}>restore</a>", s.id)
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<tr class=\"{cls}\"><td>{time}</td><td><a href=/snapshot/{id}>{short}</a>{pin}</td><td>{role}</td>\
             <td>{tags}</td><td>{labels}</td><td>{uv}</td><td>{files}</td><td>{size}</td><td>{new}</td><td>{prev}{restore}</td></tr>",
            cls = if role(s).starts_with("safety") {
                "safety"
            } else {
                ""
            },
            time = esc(&snap::snapshot::format_time_local(s.time_ns)),
            id = s.id,
            short = s.id.short(),
            pin = if s.pinned { " (pinned)" } else { "" },
            role = esc(role(s)),
            tags = esc(&s.tags.join(", ")),
            labels = esc(&labels.join(", ")),
            uv = esc(&user_versions(s)),
            files = s.stats.files,
            size = human_bytes(s.stats.total_bytes),
            new = human_bytes(s.stats.new_stored_bytes),
        );
    }
    out.push_str("</table>");
    out
}

#[derive(Deserialize)]
pub struct PathQuery {
    #[serde(default)]
    path: String,
}

/// The snapshot `id` names, the path asked for in it, and its entry
/// (`None` for the root).
fn entry_at(
    repo: &Repository,
    id: &str,
    path: &str,
) -> anyhow::Result<(Snapshot, PathBuf, Option<snap::tree::Entry>)> {
    let s = repo.find_snapshot(id)?;
    let rel = PathBuf::from(path);
    let entry = snap::ops::ls::lookup(repo, &s, &rel)?.map(|(e, _)| e);
    Ok((s, rel, entry))
}

pub async fn snapshot(
    State(ui): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(p): Query<PathQuery>,
) -> Response {
    blocking(ui, move |_, repo| {
        let (s, rel, entry) = entry_at(repo, &id, &p.path)?;
        let tree_id = match entry {
            None => s.root,
            Some(e) => e.subtree().ok_or_else(|| {
                snap::Error::usage(format!("{}: not a directory", rel.display()))
            })?,
        };
        let tree = repo.load_tree(&tree_id)?;
        let mut body = format!(
            "<p>{} &middot; {} &middot; {}</p><p class=crumbs>{}</p>",
            esc(&snap::snapshot::format_time_local(s.time_ns)),
            esc(&source_text(&s)),
            esc(role(&s)),
            crumbs(&s, &rel)
        );
        body.push_str(
            "<table class=tree><tr><th>name</th><th>kind</th><th>store</th><th>size</th><th>mode</th><th>modified</th></tr>",
        );
        for e in &tree.entries {
            body.push_str(&entry_row(&s, &rel, e));
        }
        body.push_str("</table>");
        html(&format!("snapshot {}", s.id.short()), body)
    })
    .await
}

fn crumbs(s: &Snapshot, rel: &Path) -> String {
    let mut out = format!("<a href=/snapshot/{}>/</a>", s.id);
    let mut at = PathBuf::new();
    for c in rel.components() {
        at.push(c);
        let _ = write!(
            out,
            " <a href=\"/snapshot/{}?path={}\">{}</a> /",
            s.id,
            q(&at.to_string_lossy()),
            esc(&c.as_os_str().to_string_lossy())
        );
    }
    out
}

fn entry_row(s: &Snapshot, dir: &Path, e: &snap::tree::Entry) -> String {
    let path = dir.join(e.name_os());
    let name = esc(&e.name_os().to_string_lossy());
    let link = match e.kind {
        snap::tree::Kind::Dir => format!(
            "<a href=\"/snapshot/{}?path={}\">{name}/</a>",
            s.id,
            q(&path.to_string_lossy())
        ),
        snap::tree::Kind::File => format!(
            "<a href=\"/download/{}?path={}\">{name}</a>",
            s.id,
            q(&path.to_string_lossy())
        ),
        _ => name,
    };
    let store = if e.has_flag(snap::tree::flags::SQLITE_IMAGE) {
        "sqlite"
    } else if e.kind == snap::tree::Kind::File {
        "plain"
    } else {
        ""
    };
    format!(
        "<tr><td>{link}</td><td>{kind:?}</td><td>{store}</td><td>{size}</td><td>{mode:o}</td><td>{mtime}</td></tr>",
        kind = e.kind,
        size = if e.kind == snap::tree::Kind::File {
            human_bytes(e.size)
        } else {
            String::new()
        },
        mode = e.mode,
        mtime = esc(&snap::snapshot::format_time_local(e.mtime_ns)),
    )
}

pub async fn download(
    State(ui): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(p): Query<PathQuery>,
) -> Response {
    blocking(ui, move |_, repo| {
        let (_, rel, entry) = entry_at(repo, &id, &p.path)?;
        let Some(e) = entry else {
            anyhow::bail!(snap::Error::usage("the root is a directory"));
        };
        if e.kind != snap::tree::Kind::File {
            anyhow::bail!(snap::Error::usage(format!("{}: not a file", rel.display())));
        }
        let mut bytes = Vec::with_capacity(e.size as usize);
        snap::ops::dump::dump_file(repo, &e, &mut bytes)?;
        let name = e.name_os().to_string_lossy().replace(['"', '\\'], "_");
        Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            Body::from(bytes),
        )
            .into_response())
    })
    .await
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: String,
    to: String,
}

/// Two snapshots, their differences, and each modified database's.
type Compared = (
    Snapshot,
    Snapshot,
    Vec<snap::ops::diff::Difference>,
    BTreeMap<PathBuf, DbDiff>,
);

/// The differences between two snapshots, with each modified database's.
fn compute_diff(repo: &Repository, from: &str, to: &str) -> anyhow::Result<Compared> {
    let (a, b) = (repo.find_snapshot(from)?, repo.find_snapshot(to)?);
    let diffs = diff_snapshots(repo, &a, &b)?;
    let mut dbs = BTreeMap::new();
    for path in database_candidates(&diffs) {
        if let Some(db) = diff_database_at(repo, &path, &a, After::Snapshot(&b), 20)? {
            dbs.insert(path, db);
        }
    }
    Ok((a, b, diffs, dbs))
}

pub async fn diff(State(ui): State<Shared>, Query(d): Query<DiffQuery>) -> Response {
    blocking(ui, move |_, repo| {
        let (a, b, diffs, dbs) = compute_diff(repo, &d.from, &d.to)?;
        let mut body = format!(
            "<p>from <a href=/snapshot/{}>{}</a> ({}) to <a href=/snapshot/{}>{}</a> ({})</p>",
            a.id,
            a.id.short(),
            esc(&snap::snapshot::format_time_local(a.time_ns)),
            b.id,
            b.id.short(),
            esc(&snap::snapshot::format_time_local(b.time_ns)),
        );
        if diffs.is_empty() {
            body.push_str("<p>No differences.</p>");
        }
        body.push_str("<ul class=diff>");
        for x in &diffs {
            let _ = write!(
                body,
                "<li class={cls}><code>{letter}</code> {path}</li>",
                cls = format!("{:?}", x.change).to_lowercase(),
                letter = x.change.letter(),
                path = esc(&x.path.to_string_lossy())
            );
        }
        body.push_str("</ul>");
        for (path, db) in &dbs {
            body.push_str(&database_html(path, db));
        }
        html("diff", body)
    })
    .await
}

fn database_html(path: &Path, db: &DbDiff) -> String {
    let (a, b) = (&db.before, &db.after);
    let mut out = format!(
        "<section class=database><h2>{}</h2><p>SQLite: user_version {} &rarr; {}, journal {} &rarr; {}, {} &rarr; {} pages</p>",
        esc(&path.to_string_lossy()),
        a.user_version,
        b.user_version,
        esc(&a.journal_mode),
        esc(&b.journal_mode),
        a.pages,
        b.pages
    );
    if !db.schema.is_empty() {
        out.push_str("<h3>schema</h3><ul class=schema>");
        for c in &db.schema {
            let mut cols = String::new();
            for col in &c.columns_added {
                let _ = write!(cols, " +column {}", esc(col));
            }
            for col in &c.columns_removed {
                let _ = write!(cols, " &minus;column {}", esc(col));
            }
            let _ = write!(
                out,
                "<li class={}>{} {} <b>{}</b>{cols}</li>",
                c.change,
                c.change,
                esc(&c.kind),
                esc(&c.name)
            );
        }
        out.push_str("</ul>");
    }
    if !db.tables.is_empty() {
        out.push_str("<h3>rows</h3><table class=rows><tr><th>table</th><th>inserted</th><th>deleted</th><th>updated</th><th>rows</th><th>matched by</th></tr>");
        for t in &db.tables {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} &rarr; {}</td><td>{}</td></tr>",
                esc(&t.table),
                t.inserted,
                t.deleted,
                t.updated,
                t.rows_before,
                t.rows_after,
                esc(&t.key)
            );
        }
        out.push_str("</table>");
        for t in db.tables.iter().filter(|t| !t.changed_rows.is_empty()) {
            let _ = write!(
                out,
                "<h4>{}: first changed rows</h4><ul class=changed>",
                esc(&t.table)
            );
            for r in &t.changed_rows {
                let cols = serde_json::to_string(&r.columns).unwrap_or_default();
                let key = serde_json::to_string(&r.key).unwrap_or_default();
                let _ = write!(
                    out,
                    "<li class={}>{} {} {}</li>",
                    r.change,
                    r.change,
                    esc(&key),
                    esc(&cols)
                );
            }
            out.push_str("</ul>");
        }
    }
    out.push_str("</section>");
    out
}

pub async fn stats(State(ui): State<Shared>) -> Response {
    blocking(ui, |_, repo| {
        let st = snap::ops::stats::repo_stats(repo)?;
        let snaps = repo.snapshots()?;
        let mut body = String::from("<table class=stats>");
        for (k, v) in [
            ("snapshots", st.snapshots.to_string()),
            ("logical size", human_bytes(st.logical_bytes)),
            (
                "unique data",
                format!(
                    "{} in {} chunks",
                    human_bytes(st.unique_bytes),
                    st.unique_chunks
                ),
            ),
            ("compressed", human_bytes(st.compressed_bytes)),
            (
                "stored",
                format!("{} ({} packs)", human_bytes(st.stored_bytes), st.packs),
            ),
            ("dedup ratio", format!("{:.2}x", st.dedup_ratio)),
            ("compression ratio", format!("{:.2}x", st.compression_ratio)),
        ] {
            let _ = write!(body, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
        }
        body.push_str("</table><h2>size over time</h2>");
        body.push_str(&super::svg::growth_chart(&snaps));
        html("statistics", body)
    })
    .await
}

#[derive(Deserialize)]
pub struct RestoreForm {
    token: String,
    #[serde(default)]
    target: String,
}

#[derive(Deserialize)]
pub struct TargetQuery {
    #[serde(default)]
    target: String,
}

fn restore_options(ui: &Ui, target: &str, dry_run: bool) -> RestoreOptions {
    let target = (!target.is_empty()).then(|| PathBuf::from(target));
    RestoreOptions {
        known_sources: target.is_none().then(|| ui.known_sources.clone()),
        target,
        subpath: None,
        dry_run,
        verify: false,
        safety_snapshot: true,
        force: false,
        safety_labels: Default::default(),
    }
}

fn restore_allowed(ui: &Ui) -> anyhow::Result<()> {
    if !ui.allow_restore {
        anyhow::bail!(snap::Error::usage(
            "this server is read-only: start it with `snap ui --allow-restore` to restore"
        ));
    }
    Ok(())
}

/// The plan first: what a restore would change, and a form to run it.
pub async fn restore_plan(
    State(ui): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(t): Query<TargetQuery>,
) -> Response {
    blocking(ui, move |ui, repo| {
        restore_allowed(ui)?;
        let s = repo.find_snapshot(&id)?;
        let plan = plan_restore(repo, &s, &restore_options(ui, &t.target, true))?;
        let mut body = format!(
            "<p>Restore {} into {}: {} files written, {} entries deleted, {} directories created.</p><ul class=plan>",
            s.id.short(),
            esc(&plan.target.to_string_lossy()),
            plan.summary.write_files,
            plan.summary.delete_entries,
            plan.summary.create_dirs,
        );
        for step in plan.steps.iter().take(500) {
            if let Some(verb) = step.verb() {
                let _ = write!(body, "<li>{verb} {}</li>", esc(&step.path().to_string_lossy()));
            }
        }
        let _ = write!(
            body,
            "</ul><form method=post action=/restore/{id}><input type=hidden name=token value={token}>\
             <input type=hidden name=target value=\"{target}\">\
             <button type=submit id=confirm>Restore (a safety snapshot is taken first)</button></form>\
             <form method=get action=/restore/{id}><label>Or into another directory: \
             <input name=target id=target size=60 value=\"{target}\"></label> \
             <button type=submit id=replan>Show that plan</button></form>",
            id = s.id,
            token = ui.token,
            target = esc(&t.target),
        );
        html("restore plan", body)
    })
    .await
}

pub async fn restore_run(
    State(ui): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Form(f): Form<RestoreForm>,
) -> Response {
    if !ui.allow_restore {
        return blocking(ui, |ui, _| restore_allowed(ui).map(|_| unreachable!())).await;
    }
    blocking_with(ui, true, move |ui, repo| {
        restore_allowed(ui)?;
        if !super::equal_tokens(&f.token, &ui.token) {
            anyhow::bail!(snap::Error::usage("the form's token is wrong"));
        }
        let s = repo.find_snapshot(&id)?;
        let opts = restore_options(ui, &f.target, false);
        let plan = plan_restore(repo, &s, &opts)?;
        let stats = execute_restore(repo, &s, &plan, &opts, &snap::NoProgress)?;
        let undo = stats
            .safety_snapshot
            .as_ref()
            .map(|id| format!("<p id=undo>Undo: restore the safety snapshot <a href=/snapshot/{id}>{}</a>.</p>", &id[..8.min(id.len())]))
            .unwrap_or_else(|| "<p>No safety snapshot was needed (the target was new or empty).</p>".into());
        let body = format!(
            "<p id=done>Restored {} into {}: {} files written, {} entries deleted.</p>{undo}",
            s.id.short(),
            esc(&plan.target.to_string_lossy()),
            stats.written_files,
            stats.deleted_entries,
        );
        html("restored", body)
    })
    .await
}

pub async fn api_snapshots(State(ui): State<Shared>) -> Response {
    blocking(ui, |_, repo| {
        let v: Vec<serde_json::Value> = repo.snapshots()?.iter().map(snapshot_json).collect();
        Ok(axum::Json(v).into_response())
    })
    .await
}

pub async fn api_diff(State(ui): State<Shared>, Query(d): Query<DiffQuery>) -> Response {
    blocking(ui, move |_, repo| {
        let (_, _, diffs, dbs) = compute_diff(repo, &d.from, &d.to)?;
        let v: Vec<serde_json::Value> = diffs
            .iter()
            .map(|x| cmd::diff::entry_json(x, dbs.get(&x.path), None))
            .collect();
        Ok(axum::Json(v).into_response())
    })
    .await
}
