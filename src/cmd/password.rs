//! Where the CLI gets the password of an encrypted repository: the
//! `SNAP_PASSWORD` variable, else the file `--password-file` (or
//! `SNAP_PASSWORD_FILE`) names, else a prompt when stdin is a terminal.
//! Without any of them the command fails with exit code 10, before it
//! changes anything.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use snap::Error;
use zeroize::Zeroizing;

static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The global `--password-file`, set once at start.
pub fn set_file(path: Option<PathBuf>) {
    let _ = FILE.set(path);
}

/// A password file's content without its final newline.
fn read_file(path: &Path) -> snap::Result<Zeroizing<String>> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| Error::io(path, e))?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::usage(format!("{}: the password is not UTF-8", path.display())))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(Error::usage(format!(
            "{}: the password file is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(text.to_string()))
}

fn prompt(text: &str) -> snap::Result<Zeroizing<String>> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| Error::io("/dev/tty", e))
}

/// From the variable `var`, else the file, else a prompt (twice when
/// `confirm`, for a new password).
fn from_sources(
    repo: &str,
    var: &str,
    file: Option<&Path>,
    what: &str,
    confirm: bool,
) -> snap::Result<Zeroizing<String>> {
    if let Some(pw) = std::env::var_os(var) {
        let pw = pw
            .into_string()
            .map_err(|_| Error::usage(format!("{var} is not UTF-8")))?;
        if pw.is_empty() {
            return Err(Error::usage(format!("{var} is empty")));
        }
        return Ok(Zeroizing::new(pw));
    }
    if let Some(f) = file {
        return read_file(f);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::NoPassword {
            repo: repo.to_string(),
            why: format!("set {var} or pass a password file; stdin is not a terminal to ask on"),
        });
    }
    let pw = prompt(&format!("{what} for {repo}: "))?;
    if pw.is_empty() {
        return Err(Error::usage("the password is empty"));
    }
    if confirm && *prompt(&format!("{what} again: "))? != *pw {
        return Err(Error::usage("the two passwords differ"));
    }
    Ok(pw)
}

/// The password of an existing repository. Remembered once given, for a
/// process that opens the repository again (`snap ui`, for each request).
pub fn current(repo: &str) -> snap::Result<Zeroizing<String>> {
    static REMEMBERED: std::sync::Mutex<Option<(String, Zeroizing<String>)>> =
        std::sync::Mutex::new(None);
    let mut remembered = REMEMBERED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((r, pw)) = remembered.as_ref()
        && r == repo
    {
        return Ok(pw.clone());
    }
    let file = FILE.get().cloned().flatten();
    let pw = from_sources(repo, "SNAP_PASSWORD", file.as_deref(), "password", false)?;
    *remembered = Some((repo.to_string(), pw.clone()));
    Ok(pw)
}

/// The password of the repository `snap copy` copies to.
pub fn destination(repo: &str, file: Option<&Path>) -> snap::Result<Zeroizing<String>> {
    from_sources(repo, "SNAP_TO_PASSWORD", file, "password", false)
}

/// The password of a new repository (`snap init`).
pub fn for_new_repository(repo: &str) -> snap::Result<Zeroizing<String>> {
    let file = FILE.get().cloned().flatten();
    from_sources(repo, "SNAP_PASSWORD", file.as_deref(), "new password", true).map_err(
        |e| match e {
            Error::NoPassword { repo, why } => Error::NoPassword {
                repo,
                why: format!("{why}; or init it with --no-encrypt"),
            },
            e => e,
        },
    )
}

/// The new password of `snap key passwd`.
pub fn replacement(repo: &str, file: Option<&Path>) -> snap::Result<Zeroizing<String>> {
    from_sources(repo, "SNAP_NEW_PASSWORD", file, "new password", true)
}
