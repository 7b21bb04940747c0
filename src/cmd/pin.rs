//! `snap forget`, `snap pin`, `snap unpin`: one snapshot record each.

use crate::*;

pub fn forget_command(ctx: &mut Ctx, ids: Vec<String>) -> anyhow::Result<u8> {
    let repo = open_repo(&ctx.repo, Some(LockMode::Exclusive))?;
    let mut resolved = Vec::new();
    for id in &ids {
        resolved.push(repo.find_snapshot(id)?.id);
    }
    forget(&repo, &resolved)?;
    for id in &resolved {
        writeln!(ctx.out, "forgot snapshot {id}")?;
    }
    Ok(0)
}

pub fn pin_command(ctx: &mut Ctx, id: String) -> anyhow::Result<u8> {
    let repo = open_repo(&ctx.repo, Some(LockMode::Exclusive))?;
    let s = repo.find_snapshot(&id)?;
    set_pinned(&repo, &s.id, true)?;
    writeln!(ctx.out, "pinned snapshot {}", s.id)?;
    Ok(0)
}

pub fn unpin_command(ctx: &mut Ctx, id: String) -> anyhow::Result<u8> {
    let repo = open_repo(&ctx.repo, Some(LockMode::Exclusive))?;
    let s = repo.find_snapshot(&id)?;
    set_pinned(&repo, &s.id, false)?;
    writeln!(ctx.out, "unpinned snapshot {}", s.id)?;
    Ok(0)
}
