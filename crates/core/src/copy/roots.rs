//! Root records (format-spec §15) copied beside snapshots: a second site can recover a
//! database to an instant only with its WAL archive, which lives in root records.
//!
//! A root record is named by a keyed hash of what it records, so its name differs from
//! one repository to another; which source records were copied is remembered in the
//! destination's cache by source name and listing time. An hourly copy therefore reads
//! only the records written (or rewritten) since the last one, and a record the
//! destination's own retention removed is not copied back (as with snapshots, `--all`
//! does).

use super::*;
use crate::backend::FileKind;
use crate::repo::root::{Root, MAX_ROOT_FILE};

/// A source root record to copy.
#[derive(Debug)]
pub struct RootToCopy {
    /// Its file name in the source.
    pub name: String,
    /// Its listing time there (0 where the store gives none).
    pub stamp: i64,
    /// The record.
    pub root: Root,
}

/// Which root records a copy takes, and what it found.
#[derive(Debug, Default)]
pub struct RootPlan {
    /// To copy.
    pub copy: Vec<RootToCopy>,
    /// Copied before, or there already.
    pub present: usize,
    /// Source records that could not be read: name and why.
    pub unreadable: Vec<(String, String)>,
}

/// The source's root records the destination is to get: those not copied before (or, with
/// [`Selection::Missing`], every one the destination lacks by name). Reads only the
/// records it has not copied before, unless `selection` asks for all.
pub fn plan_roots(src: &Repository, dst: &Repository, selection: Selection) -> Result<RootPlan> {
    let mut plan = RootPlan::default();
    if !src.has_roots() {
        return Ok(plan);
    }
    let source = src.config().id;
    let copied = dst.copied_roots(&source)?;
    let copied_names: HashSet<&str> = copied.iter().map(|(n, _)| n.as_str()).collect();
    // The destination's records, listed only once one is needed (an hourly copy with
    // nothing new needs none).
    let mut there: Option<HashSet<String>> = None;
    let listed = src.files().list(FileKind::Root)?;
    for f in listed {
        if !crate::files::is_file_name(&f.name) {
            continue;
        }
        let stamp = f.modified.unwrap_or(0);
        if selection == Selection::SinceLast && copied.contains(&(f.name.clone(), stamp)) {
            plan.present += 1;
            continue;
        }
        let read = match f.size > MAX_ROOT_FILE {
            true => Err(Error::corrupt(
                format!("root record {}", f.name),
                format!("{} bytes: more than a root record can be", f.size),
            )),
            false => src.checked_root(&f.name),
        };
        match read {
            Ok(Some(root)) if dst.has_roots() => {
                let there = match &mut there {
                    Some(t) => t,
                    None => there.insert(
                        (dst.files().list(FileKind::Root)?.into_iter())
                            .map(|f| f.name)
                            .collect(),
                    ),
                };
                if there.contains(&dst.root_file(&root.namespace, &root.key))
                    && (selection == Selection::Missing || !copied_names.contains(f.name.as_str()))
                {
                    // There already (a copy whose record the cache forgot, or --all).
                    dst.put_copied_root(&source, &f.name, stamp)?;
                    plan.present += 1;
                } else {
                    plan.copy.push(RootToCopy {
                        name: f.name,
                        stamp,
                        root,
                    });
                }
            }
            Ok(Some(root)) => plan.unreadable.push((
                format!("{}/{}", root.namespace, root.key),
                format!(
                    "the destination is of format version {}: root records need version 4",
                    dst.config().version
                ),
            )),
            // Removed since the listing.
            Ok(None) | Err(Error::NotFound { .. }) => {}
            Err(e @ (Error::Corrupt { .. } | Error::BadInput { .. })) => {
                plan.unreadable.push((f.name, e.to_string()))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(plan)
}

/// The data blobs of the planned records, for [`lacking_blobs`] to sort out.
pub(super) fn root_blobs(plan: &RootPlan) -> Vec<BlobId> {
    let mut seen = HashSet::new();
    (plan.copy.iter())
        .flat_map(|r| r.root.blobs.iter().copied())
        .filter(|b| seen.insert(*b))
        .collect()
}

/// Writes the planned records into the destination once their blobs are durable there
/// (write order: packs, index, then the record). Returns how many were written and, per
/// record the source could not give whole, why.
pub(super) fn write_roots(
    src: &Repository,
    dst: &Repository,
    plan: RootPlan,
    ids: &IdMap<'_>,
    lost: &Lost,
) -> Result<(usize, Vec<(String, String)>)> {
    let source = src.config().id;
    let mut written = 0;
    let mut failed = plan.unreadable;
    for RootToCopy { name, stamp, root } in plan.copy {
        let what = format!("{}/{}", root.namespace, root.key);
        let mapped = ids.get(&root.blobs)?;
        let mut blobs = Vec::with_capacity(mapped.len());
        let mut missing = None;
        for (d, s) in mapped.into_iter().zip(&root.blobs) {
            match (d, lost.get(s)) {
                (Some(d), _) => blobs.push(d),
                (None, Some(why)) => {
                    missing = Some(why.clone());
                    break;
                }
                (None, None) => return Err(Error::Internal(format!("blob {s} was not copied"))),
            }
        }
        if let Some(why) = missing {
            failed.push((what, why));
            continue;
        }
        let copy = Root { blobs, ..root };
        // Never over other content: whoever holds the source (without the destination's
        // password) would rewrite the second site's history (hostile pass 9). A record
        // there that does not open holds nothing, and takes the copy.
        let file = dst.root_file(&copy.namespace, &copy.key);
        match dst.checked_root(&file) {
            Ok(Some(there)) if (there.blobs != copy.blobs || there.payload != copy.payload) => {
                let why = format!(
                    "the destination holds another record under this name (written {} by \
                     {}); it is kept: a copy never replaces one",
                    there.time, there.host
                );
                failed.push((what, why));
                continue;
            }
            Ok(_) | Err(Error::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
        dst.write_root(&copy)?;
        dst.put_copied_root(&source, &name, stamp)?;
        written += 1;
    }
    Ok((written, failed))
}
