//! `snap dump ID PATH`: a file to stdout, or a directory as tar.

use std::io::Write;
use std::path::Path;

use snap::ops::dump::{dump_file, dump_tar};
use snap::ops::ls::lookup;
use snap::tree::Kind;

pub fn run(
    repo: &Option<std::path::PathBuf>,
    id: &str,
    path: &Path,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let repo = crate::open_repo_read_only(repo, Some(snap::lock::LockMode::Shared))?;
    let s = repo.find_snapshot(id)?;
    if std::io::stdout().is_terminal_like() {
        anyhow::bail!(
            "refusing to write {} to a terminal; redirect stdout (`> FILE` or `| tar -x`)",
            path.display()
        );
    }
    let root_tree = match lookup(&repo, &s, path)? {
        None => s.root,
        Some((e, _)) => match (e.kind, e.subtree()) {
            (Kind::Dir, Some(t)) => t,
            (Kind::File, _) => {
                dump_file(&repo, &e, out)?;
                out.flush()?;
                return Ok(0);
            }
            (k, _) => anyhow::bail!(
                "{}: a {} in snapshot {}; dump writes files and directories",
                path.display(),
                format!("{k:?}").to_lowercase(),
                s.id.short()
            ),
        },
    };
    let skipped = dump_tar(&repo, &root_tree, out)?;
    out.flush()?;
    for p in &skipped {
        eprintln!(
            "warning: {}: a socket, which tar cannot hold; left out",
            p.display()
        );
    }
    Ok(0)
}

trait TerminalLike {
    fn is_terminal_like(&self) -> bool;
}

impl TerminalLike for std::io::Stdout {
    fn is_terminal_like(&self) -> bool {
        std::io::IsTerminal::is_terminal(self)
    }
}
