//! The pack writer thread: frames from the readers into data packs,
//! committed in order on a finisher thread.

use super::*;

/// The single pack writer: feeds new chunks to a [`Packer`], which seals
/// packs at the target size and commits them on its finisher thread, so
/// this thread never waits for the disk. After an error it drains its queue
/// so readers never block, and reports the error once.
pub(super) fn pack_writer(
    rx: Receiver<Vec<Frame>>,
    done: Sender<Result<FinishedPack>>,
    storage: Arc<dyn Storage>,
    target: u64,
) -> Result<()> {
    let mut packer = Some(Packer::new(storage, PackKind::Data, target, done.clone()));
    let mut failed: Option<String> = None;
    for batch in rx {
        let Some(p) = packer.as_mut() else { continue };
        if let Err(e) = batch.into_iter().try_for_each(|f| {
            f.parts()
                .into_iter()
                .try_for_each(|(blobs, data)| p.add_frame(blobs, data))
        }) {
            failed = Some(e.to_string());
            packer = None;
            let _ = done.send(Err(e));
        }
    }
    if let Some(p) = packer
        && let Err(e) = p.finish()
    {
        failed = Some(e.to_string());
        let _ = done.send(Err(e));
    }
    match failed {
        Some(msg) => Err(Error::internal(
            "create",
            format!("pack writer failed: {msg}"),
        )),
        None => Ok(()),
    }
}
