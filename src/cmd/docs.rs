//! `snap completions SHELL` and `snap man [COMMAND]`: generated from the
//! argument definitions, so they never drift from the binary.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell, out: &mut impl Write) -> anyhow::Result<u8> {
    clap_complete::generate(shell, &mut Cli::command(), "snap", out);
    Ok(0)
}

/// Exit codes, for the EXIT STATUS section (README, "Exit codes").
const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "success"),
    (
        "1",
        "failure (bad input, an I/O error, ...); nothing was committed",
    ),
    ("2", "usage error (bad arguments)"),
    (
        "3",
        "finished, but some files could not be read or restored (listed on stderr), or a database failed --sqlite-check",
    ),
    (
        "4",
        "the repository is locked by another process (the message names it)",
    ),
    (
        "5",
        "the repository is damaged (a chunk, pack, tree or the index failed its check)",
    ),
    (
        "6",
        "nothing to do (restore: already equal to the snapshot; gc: nothing to remove; a restore declined at the prompt)",
    ),
    (
        "7",
        "guard: the migration failed and the sources were rolled back exactly",
    ),
    (
        "8",
        "guard: the migration failed and some entries could not be rolled back",
    ),
    (
        "9",
        "restore: the safety snapshot could not read some files, so nothing was changed (--force goes on)",
    ),
    (
        "10",
        "the repository is encrypted and stayed locked: a wrong password, or none given",
    ),
    (
        "130",
        "interrupted (Ctrl-C, SIGTERM): nothing was committed",
    ),
];

/// Environment variables snap reads, for the ENVIRONMENT section.
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "SNAP_REPO",
        "the repository (a directory or s3://BUCKET/PREFIX), as --repo",
    ),
    ("SNAP_CONFIG", "the config file, as --config"),
    (
        "SNAP_CACHE_DIR",
        "where a bucket's or an encrypted repository's index is kept, as --cache-dir",
    ),
    ("SNAP_PASSWORD", "the password of an encrypted repository"),
    (
        "SNAP_PASSWORD_FILE",
        "a file holding it, as --password-file",
    ),
    (
        "SNAP_NEW_PASSWORD",
        "the new password, for snap key passwd and snap key add",
    ),
    (
        "SNAP_TO_PASSWORD",
        "the password of the repository snap copy copies to, when it is encrypted",
    ),
    (
        "SNAP_TO_PASSWORD_FILE",
        "a file holding it, as snap copy --to-password-file",
    ),
    (
        "SNAP_LOCK_WAIT",
        "seconds to wait for a repository another process holds",
    ),
    ("SNAP_WORKERS", "how many files create reads at once"),
    (
        "SNAP_GUARD_SNAPSHOT",
        "set by guard for the migration it runs: the pre-migration snapshot's id",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
        "credentials of an s3:// repository",
    ),
    (
        "AWS_REGION, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL",
        "its region and endpoint",
    ),
    (
        "XDG_CONFIG_HOME, XDG_CACHE_HOME, XDG_STATE_HOME",
        "where snap.toml, the caches and the record of this client's sources are (default ~/.config, ~/.cache, ~/.local/state)",
    ),
];

/// A roff section of term / description pairs.
fn roff_section(out: &mut impl Write, title: &str, items: &[(&str, &str)]) -> std::io::Result<()> {
    writeln!(out, ".SH \"{title}\"")?;
    for (term, what) in items {
        writeln!(
            out,
            ".TP\n\\fB{}\\fR\n{}",
            roff_escape(term),
            roff_escape(what)
        )?;
    }
    Ok(())
}

/// Text that roff prints as it is: backslashes doubled, no line starting
/// with a request character.
fn roff_escape(s: &str) -> String {
    let s = s.replace('\\', "\\\\");
    match s.starts_with(['.', '\'']) {
        true => format!("\\&{s}"),
        false => s,
    }
}

/// One page: clap's sections, then EXIT STATUS and ENVIRONMENT (every
/// command shares them), then SEE ALSO naming the other pages.
fn render_page(
    cmd: clap::Command,
    see_also: &[String],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    clap_mangen::Man::new(cmd).render(out)?;
    roff_section(out, "EXIT STATUS", EXIT_STATUS)?;
    roff_section(out, "ENVIRONMENT", ENVIRONMENT)?;
    if !see_also.is_empty() {
        writeln!(out, ".SH \"SEE ALSO\"")?;
        let refs: Vec<String> = see_also.iter().map(|p| format!("\\fB{p}\\fR(1)")).collect();
        writeln!(out, "{}", refs.join(", "))?;
    }
    Ok(())
}

/// The page of one command, named `snap-NAME` (title and file).
fn command_page(cmd: &clap::Command, name: &str) -> anyhow::Result<clap::Command> {
    let sub = cmd
        .find_subcommand(name)
        .ok_or_else(|| anyhow::anyhow!("no command {name:?}; `snap man` lists them"))?;
    // clap names are &'static str; a page is made once per process.
    let title: &'static str = Box::leak(format!("snap-{name}").into_boxed_str());
    Ok(sub.clone().name(title))
}

/// The names of the commands that get a page of their own (every one
/// the top page lists, `help` included).
fn page_names(cmd: &clap::Command) -> Vec<String> {
    cmd.get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect()
}

/// The page of snap (which lists every command), or of one command; with
/// `dir`, every page, as `snap.1` and `snap-COMMAND.1` files in it.
pub fn man(
    command: Option<&str>,
    dir: Option<&std::path::Path>,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    cmd.build();
    let names = page_names(&cmd);
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        let write = |file: String, page: clap::Command, see: &[String]| -> anyhow::Result<()> {
            let path = dir.join(file);
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            );
            render_page(page, see, &mut f)?;
            f.flush()?;
            Ok(())
        };
        let all: Vec<String> = names.iter().map(|n| format!("snap-{n}")).collect();
        write("snap.1".into(), cmd.clone(), &all)?;
        for n in &names {
            write(
                format!("snap-{n}.1"),
                command_page(&cmd, n)?,
                &["snap".to_string()],
            )?;
        }
        writeln!(
            out,
            "wrote {} pages to {}",
            names.len() + 1,
            crate::escape_path(dir)
        )?;
        return Ok(0);
    }
    match command {
        None => {
            let all: Vec<String> = names.iter().map(|n| format!("snap-{n}")).collect();
            render_page(cmd, &all, out)?
        }
        Some(name) => render_page(command_page(&cmd, name)?, &["snap".to_string()], out)?,
    }
    Ok(0)
}
