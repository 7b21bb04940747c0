//! `snap copy ID... --to REPO`: snapshots copied to another repository.

use crate::cli::{CopyArgs, count, human_bytes};
use crate::*;

pub fn run(
    cli_repo: &Option<PathBuf>,
    args: CopyArgs,
    progress: &TermProgress,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let src = open_repo_read_only(cli_repo, Some(LockMode::Shared))?;
    let snapshots = if args.all {
        src.snapshots()?
    } else {
        args.ids
            .iter()
            .map(|spec| src.find_snapshot(spec))
            .collect::<snap::Result<Vec<_>>>()?
    };
    let dst = open_destination(&src, &args.to, args.to_password_file.as_deref())?;
    let report = snap::copy(&src, &dst, &snapshots, progress)?;
    progress.finish();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &with_requests(&dst, json!(report)))?;
        writeln!(out)?;
        return Ok(0);
    }
    let by_id: std::collections::HashMap<_, _> = snapshots.iter().map(|s| (s.id, s)).collect();
    for c in &report.snapshots {
        let s = by_id[&c.source];
        let what = if c.already_there {
            "already there"
        } else {
            "copied"
        };
        let id = if c.copy == c.source {
            c.copy.short()
        } else {
            format!("{} as {}", c.source.short(), c.copy.short())
        };
        writeln!(
            out,
            "{what}: {id}  {}  {}",
            snap::snapshot::format_time_local(s.time_ns),
            source_text(s)
        )?;
    }
    let st = &report.stats;
    writeln!(
        out,
        "{} copied, {} already there; sent {} ({} stored) in {}; {} already there{}",
        count(st.snapshots_copied, "snapshot"),
        st.snapshots_already_there,
        count(st.chunks_sent, "chunk"),
        human_bytes(st.stored_bytes_sent),
        count(st.packs_sent, "pack"),
        count(st.chunks_already_there, "chunk"),
        if st.ids_kept {
            ""
        } else {
            "; ids differ: the repositories name content with different keys"
        }
    )?;
    Ok(0)
}

/// The repository `--to` names, which must exist (its format, encryption
/// and key are chosen once, by `snap init`), locked for writing.
fn open_destination(
    src: &Repository,
    to: &Path,
    password_file: Option<&Path>,
) -> anyhow::Result<Repository> {
    // Asked before locking it: the source's lock would make it wait.
    let src_place = src.storage().describe("");
    let same = match remote_of(to)? {
        Some(r) => r.storage.describe("") == src_place,
        None => to.canonicalize().ok() == Path::new(&src_place).canonicalize().ok(),
    };
    if same {
        anyhow::bail!(
            "{}: the destination is the repository copied from",
            to.display()
        );
    }
    let hint = || {
        format!(
            "{}: not a snap repository; create it first with `snap init {}` (add --encrypt to encrypt it)",
            to.display(),
            shell_quote(to)
        )
    };
    if let Some(r) = remote_of(to)? {
        if snap::objects::read_config_if_exists(&*r.storage)?.is_none() {
            anyhow::bail!(hint());
        }
        let r = r.unlocked_with(|repo| cmd::password::destination(repo, password_file))?;
        return open_unlocked_remote(r, Some(LockMode::Exclusive), false);
    }
    if !snap::repo::is_repository(to) {
        anyhow::bail!(hint());
    }
    Ok(Repository::open(to, Some(LockMode::Exclusive))?)
}
