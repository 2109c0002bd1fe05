//! The backlog file's life around the engine: the lock that makes one writer, temporary
//! files created beside the backlog and renamed into place, and directory syncs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::Geometry;
use crate::region::{Access, MapMedium, preallocate};

/// How the writer holds the backlog exclusively.
#[derive(Debug)]
pub(crate) enum Lock {
    /// Held only for the `flock` it carries.
    File(#[allow(dead_code)] File),
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimDisk),
}

impl Drop for Lock {
    fn drop(&mut self) {
        #[cfg(feature = "sim")]
        if let Lock::Sim(d) = self {
            d.unlock();
        }
    }
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tag: u32 = rand::random();
    path.with_file_name(format!(".{name}.tmp.{}.{tag:08x}", std::process::id()))
}

/// Removes temporary files a killed `create` or resize of this backlog left beside it: named
/// like [`tmp_path`]'s, made by a process that no longer exists, and not locked (a live
/// creator locks its temporary file right after creating it). Best effort: errors are ignored.
pub(crate) fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.tmp.");
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let tmp = entry.path();
        if let Ok(f) = File::open(&tmp)
            && f.try_lock().is_ok()
        {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing the directory", Some(&dir), e))
}

pub(crate) fn lock_file(file: &File, path: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::AlreadyOpen {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io("locking the backlog file", Some(path), e))
        }
    }
}

/// Whether `file` is the file `path` names now. A resize replaces the file at the path while
/// holding the old one's lock until the new one is in place: an opener that opened the old
/// file just before that and locked it just after holds a lock on a file no longer at the
/// path, and must open again.
pub(crate) fn is_at_path(file: &File, path: &Path) -> Result<bool> {
    let here = file
        .metadata()
        .map_err(|e| Error::io("reading the backlog file's metadata", Some(path), e))?;
    Ok(std::fs::metadata(path).is_ok_and(|m| m.dev() == here.dev() && m.ino() == here.ino()))
}

/// A fresh, fully allocated, locked temporary file beside `path`, mapped.
pub(crate) fn new_file(path: &Path, geo: &Geometry) -> Result<(File, PathBuf, MapMedium)> {
    let tmp = tmp_path(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("creating the backlog file", Some(&tmp), e))?;
    let cleanup = |e: Error| {
        let _ = std::fs::remove_file(&tmp);
        e
    };
    lock_file(&file, &tmp).map_err(cleanup)?;
    preallocate(&file, geo.file_len)
        .map_err(|e| cleanup(Error::io("allocating the backlog file", Some(&tmp), e)))?;
    let map = MapMedium::map(&file, geo.file_len, Access::ReadWrite)
        .map_err(|e| cleanup(Error::io("mapping the backlog file", Some(&tmp), e)))?;
    Ok((file, tmp, map))
}
