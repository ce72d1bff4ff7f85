//! Private files, the one place that writes and checks them: keys, tokens, the
//! configuration, the signer's last checkpoint, a terminal's key. A secret another local
//! user could read is a secret lifted for good, so every such file is created 0600, and a
//! secret file group or others may read is refused with the `chmod` that fixes it.
//!
//! Every error names the file (never its contents).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A file operation that failed, with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operation failed.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        /// What was being done ("creating", "writing", "reading"...).
        doing: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A secret file group or others may read.
    #[error("{} is readable by group or others (mode {mode:03o}); run `chmod 600 {}`", path.display(), path.display())]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret file with nothing on its first line.
    #[error("{} is empty: it must hold the secret on its first line", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

fn io<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Io { doing, path: path.to_owned(), source }
}

/// Creates `path` (it must not exist) with mode 0600 and writes `contents`, then syncs it.
///
/// # Errors
/// [`FileError::Io`], e.g. when the file exists already.
pub fn create_private(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating", path))?;
    file.write_all(contents).map_err(io("writing", path))?;
    file.sync_all().map_err(io("syncing", path))
}

/// Replaces `path` with `contents` so that a crash leaves the old file or the new one,
/// never a mix: a private temporary file in the same directory, fsync, rename, fsync the
/// directory. The new file is 0600.
///
/// # Errors
/// [`FileError::Io`].
pub fn replace_private(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    file.write_all(contents).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("syncing", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("renaming into", path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing", dir))
}

/// Sets `path`'s permission bits.
///
/// # Errors
/// [`FileError::Io`].
pub fn set_mode(path: &Path, mode: u32) -> Result<(), FileError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("setting the mode of", path))
}

/// Refuses a secret file that anyone but its owner may read.
///
/// # Errors
/// [`FileError::NotPrivate`], or [`FileError::Io`] when it cannot be read.
pub fn check_private(path: &Path) -> Result<(), FileError> {
    let mode = std::fs::metadata(path).map_err(io("reading", path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(FileError::NotPrivate { path: path.to_owned(), mode });
    }
    Ok(())
}

/// The first line of a private secret file (a token), trimmed.
///
/// # Errors
/// [`FileError::NotPrivate`], [`FileError::Empty`] or [`FileError::Io`].
pub fn read_secret_line(path: &Path) -> Result<String, FileError> {
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if line.is_empty() {
        return Err(FileError::Empty { path: path.to_owned() });
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn created_and_replaced_files_are_private() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        create_private(&path, b"kt_secret\n").expect("create");
        assert_eq!(mode(&path), 0o600);
        let again = create_private(&path, b"other").expect_err("create_new");
        assert!(again.to_string().starts_with(&format!("creating {}", path.display())), "{again}");
        assert_eq!(read_secret_line(&path).expect("read"), "kt_secret");
        replace_private(&path, b"  kt_new \nsecond line").expect("replace");
        assert_eq!((mode(&path), read_secret_line(&path).expect("read").as_str()), (0o600, "kt_new"));
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }

    #[test]
    fn secrets_others_may_read_are_refused_without_their_contents() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        create_private(&path, b"kt_secret").expect("create");
        for (bits, refused) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true), (0o660, true)] {
            set_mode(&path, bits).expect("chmod");
            let got = read_secret_line(&path);
            assert_eq!(got.is_err(), refused, "mode {bits:o}");
            if let Err(e) = got {
                let text = e.to_string();
                assert!(text.contains("chmod 600") && !text.contains("kt_secret"), "{text}");
            }
        }
        set_mode(&path, 0o600).expect("chmod");
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(read_secret_line(&path), Err(FileError::Empty { .. })));
        assert!(matches!(read_secret_line(&dir.path().join("none")), Err(FileError::Io { .. })));
    }
}
