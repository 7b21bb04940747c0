//! `snap ui`: a local web page to look at a repository: a timeline of
//! snapshots per source with each guarded migration as one event, a
//! snapshot's tree with downloads, a diff between two snapshots (databases
//! included), statistics with a chart, and, with `--allow-restore`, a
//! restore shown as its plan first.
//!
//! Served on loopback unless told otherwise. Every request needs the
//! random token the command prints (in the URL once, then a cookie that
//! is HttpOnly and SameSite=Strict), a Host header naming this server
//! (no DNS rebinding) and, for the one request that writes (a restore),
//! an Origin of this server and the token in the form. Pages are rendered
//! on the server; the JSON under `/api/` is what the CLI's `--json` prints.

mod pages;
mod svg;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::cli::UiArgs;
use crate::*;

/// What every request handler shares. The repository is opened for each
/// request and closed after it, so the lock it takes (shared to read,
/// exclusive to restore) never keeps `snap create` or `gc` waiting
/// between requests.
pub(crate) struct Ui {
    /// `--repo`, as every command resolves it.
    pub repo: Option<PathBuf>,
    /// One request at a time works on the repository.
    pub busy: Mutex<()>,
    pub token: String,
    pub allow_restore: bool,
    /// Host headers this server answers to.
    pub hosts: Vec<String>,
    /// The directories an in-place restore may write (as `snap restore`).
    pub known_sources: Vec<PathBuf>,
}

pub(crate) type Shared = Arc<Ui>;

pub fn run(ctx: &mut Ctx, args: UiArgs) -> anyhow::Result<u8> {
    // Opened once now, to fail early (and ask an encrypted one's password
    // once: it is remembered for the requests).
    let repo = open_repo_read_only(&ctx.repo, Some(LockMode::Shared))?;
    let place = repo
        .storage()
        .describe("")
        .trim_end_matches('/')
        .to_string();
    let known_sources = if args.allow_restore {
        cmd::restore::known_sources(ctx, &repo)?
    } else {
        Vec::new()
    };
    let addr: SocketAddr = SocketAddr::new(args.bind, args.port);
    if !addr.ip().is_loopback() {
        eprintln!(
            "snap: warning: serving on {} lets anyone who can reach it and has the token read every file of every snapshot",
            addr.ip()
        );
    }
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let token = hex_token();
    let shown = if bound.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port())
    } else {
        bound
    };
    let mut hosts = vec![
        shown.to_string(),
        format!("localhost:{}", bound.port()),
        bound.to_string(),
    ];
    hosts.dedup();
    drop(repo);
    let ui = Arc::new(Ui {
        repo: ctx.repo.clone(),
        busy: Mutex::new(()),
        token: token.clone(),
        allow_restore: args.allow_restore,
        hosts,
        known_sources,
    });
    writeln!(ctx.out, "http://{shown}/?token={token}")?;
    ctx.out.flush()?;
    eprintln!(
        "snap: serving {place} ({}); Ctrl-C to stop",
        if args.allow_restore {
            "restores allowed, each after its plan"
        } else {
            "read-only"
        }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router(ui)).await
    })?;
    Ok(0)
}

/// 128 random bits, in hex.
fn hex_token() -> String {
    let bytes: [u8; 16] = rand::random();
    snap::objects::hex(&bytes)
}

fn router(ui: Shared) -> Router {
    Router::new()
        .route("/", get(pages::timeline))
        .route("/snapshot/{id}", get(pages::snapshot))
        .route("/download/{id}", get(pages::download))
        .route("/diff", get(pages::diff))
        .route("/stats", get(pages::stats))
        .route(
            "/restore/{id}",
            get(pages::restore_plan).post(pages::restore_run),
        )
        .route("/api/snapshots", get(pages::api_snapshots))
        .route("/api/diff", get(pages::api_diff))
        .route("/style.css", get(pages::style))
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui)
}

/// The checks every request passes before a handler sees it.
async fn guard(State(ui): State<Shared>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !ui.hosts.iter().any(|h| h == host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this server answers only to its own address",
        );
    }
    if req.method() != Method::GET && !same_origin(&ui, headers) {
        return refuse(StatusCode::FORBIDDEN, "a request from another origin");
    }
    let query_token = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    });
    if let Some(t) = query_token {
        if !equal_tokens(&t, &ui.token) {
            return refuse(StatusCode::FORBIDDEN, "wrong token");
        }
        // The token moves into a cookie, and out of the address bar.
        let rest: Vec<&str> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.starts_with("token=") && !kv.is_empty())
            .collect();
        let to = match rest.is_empty() {
            true => req.uri().path().to_string(),
            false => format!("{}?{}", req.uri().path(), rest.join("&")),
        };
        let mut resp = Redirect::to(&to).into_response();
        let cookie = format!("snap_token={}; HttpOnly; SameSite=Strict; Path=/", ui.token);
        resp.headers_mut()
            .insert(header::SET_COOKIE, cookie.parse().expect("ascii"));
        return resp;
    }
    if !cookie_token(headers).is_some_and(|t| equal_tokens(&t, &ui.token)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "open the address snap ui printed (it holds the token)",
        );
    }
    next.run(req).await
}

fn same_origin(ui: &Ui, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    ui.hosts.iter().any(|h| origin == format!("http://{h}"))
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok())
        .flat_map(|c| c.split(';'))
        .find_map(|kv| kv.trim().strip_prefix("snap_token=").map(str::to_string))
}

/// Compared in time independent of where they differ.
fn equal_tokens(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(format!("{why}\n")),
    )
        .into_response()
}
