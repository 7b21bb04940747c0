//! `snap tag ID [--add TAG]... [--remove TAG]...`

use std::io::Write;

use crate::cli::TagArgs;
use snap::lock::LockMode;

pub fn run(
    repo: &Option<std::path::PathBuf>,
    args: TagArgs,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    if args.add.is_empty() && args.remove.is_empty() {
        anyhow::bail!("give --add TAG or --remove TAG (or both)");
    }
    if let Some(bad) = args
        .add
        .iter()
        .find(|t| t.is_empty() || t.contains(',') || t.trim() != t.as_str())
    {
        anyhow::bail!(
            "{bad:?} is not a tag: tags are non-empty, without commas or surrounding spaces"
        );
    }
    let repo = crate::open_repo(repo, Some(LockMode::Exclusive))?;
    let s = repo.find_snapshot(&args.id)?;
    for t in args.remove.iter().filter(|t| !s.tags.contains(t)) {
        eprintln!(
            "snap: warning: snapshot {} has no tag {}; nothing to remove",
            s.id.short(),
            crate::escape(t.as_bytes())
        );
    }
    let mut tags = s.tags.clone();
    tags.retain(|t| !args.remove.contains(t));
    for t in &args.add {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    if tags != s.tags {
        repo.set_tags(&s.id, &tags)?;
    }
    writeln!(
        out,
        "snapshot {} tags: {}",
        s.id,
        if tags.is_empty() {
            "(none)".into()
        } else {
            tags.join(",")
        }
    )?;
    Ok(0)
}
