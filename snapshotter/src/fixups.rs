//! Rootfs fixups applied into the upper of a composed root: layermount's [`Fixups`], through the merged root so
//! that changes land in the upper, owned by the map's root.

use std::path::Path;

use layermount::{Fixups, IdMap};

use crate::error::Result;

/// Apply the fixups to the composed root mounted at `root`; problems left alone are logged.
pub(crate) fn apply(root: &Path, uid: &IdMap, gid: &IdMap) -> Result<()> {
    let report = Fixups::new().idmap(uid, gid).apply(root)?;
    for problem in &report.problems {
        eprintln!("layermount-snapshotter: fixup left alone in {}: {problem}", root.display());
    }
    Ok(())
}
