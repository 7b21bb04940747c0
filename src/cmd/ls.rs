//! `snap ls`: the entries of a snapshot, like `ls -l`.

use crate::*;

pub fn run(
    ctx: &mut Ctx,
    id: String,
    path: Option<PathBuf>,
    recursive: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let repo = open_repo_read_only(&ctx.repo, None)?;
    let snap = repo.find_snapshot(&id)?;
    let rel = path.unwrap_or_default();
    let rel = rel.strip_prefix("/").unwrap_or(&rel).to_path_buf();
    let mut entries: Vec<(PathBuf, snap::tree::Entry)> = Vec::new();
    match lookup(&repo, &snap, &rel)? {
        Some((e, p)) if e.kind != Kind::Dir => entries.push((p, e)),
        found => {
            let tree = match found {
                None => snap.root,
                Some((e, _)) => e.subtree().expect("dir has a tree"),
            };
            if recursive {
                walk(&repo, &tree, &rel, &mut |p, e| {
                    entries.push((p.to_path_buf(), e.clone()));
                    Ok(())
                })?;
            } else {
                for e in repo.load_tree(&tree)?.entries {
                    entries.push((PathBuf::from(e.name_os()), e));
                }
            }
        }
    }
    if json {
        let list: Vec<_> = entries.iter().map(|(p, e)| entry_json(p, e)).collect();
        let v = json!({ "snapshot": snapshot_json(&snap), "entries": list });
        serde_json::to_writer_pretty(&mut ctx.out, &v)?;
        writeln!(ctx.out)?;
    } else {
        // One line per entry, for scripts: the snapshot's labels are in
        // `list` and in `ls --json`.
        for (p, e) in &entries {
            print_entry(&mut ctx.out, p, e)?;
        }
    }
    Ok(0)
}
