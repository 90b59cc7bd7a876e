//! How this program creates, opens and replaces its own files (`$SERENA_HOME/tray/`, and the
//! registry's writes): private directories (0700), files created 0600 and opened without following
//! a symbolic link, the check that a directory or file is the user's alone, atomic replacement
//! (a temporary file in the same directory, renamed over the old one) and moving a damaged file
//! aside. On Windows the same with its own means (`windows`): owner-only DACLs for 0700 and
//! 0600, `ReplaceFileW` for the rename, waiting for a reader that holds the file without
//! allowing it to be replaced. Every helper is small and blocking; async callers run them in
//! `spawn_blocking`.
//!
//! Deliberately not here: what the files contain, cross-process locking (the registry's), log
//! rotation (`timeline`), and fsync: a crash may leave a short or empty file, which each reader
//! treats as damage (moved aside or replaced), never as a reason to trust someone else's file.

#[cfg(windows)]
pub mod windows;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A directory or file that is not the user's alone.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Owned by someone else (`owner` and `me` as the platform names users).
    #[error("{what} {path} belongs to another user ({owner}, not {me}): {fix}")]
    Foreign {
        what: String,
        path: PathBuf,
        owner: String,
        me: String,
        fix: String,
    },
    /// Others may open it (`open` says who and how, `fix` how to make it private).
    #[error("{what} {path} is {open}: {fix}")]
    Open {
        what: String,
        path: PathBuf,
        open: String,
        fix: String,
    },
}

/// Creates the directory `path` with mode 0700 (Windows: an owner-only DACL) if it is missing
/// (its missing parents get the usual mode). An existing directory of this user that others may
/// only read (0755 from an older version) is narrowed to 0700 (Windows: to the owner-only DACL);
/// one that others may write to is left for [`check_private`] to refuse, never silently
/// repaired.
pub fn private_dir(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match create_private_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(path)?;
            if !meta.is_dir() {
                return Err(io::ErrorKind::NotADirectory.into());
            }
            narrow_readable_dir(path, &meta)
        }
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(path)
}

#[cfg(windows)]
fn create_private_dir(path: &Path) -> io::Result<()> {
    windows::create_private_dir(path)
}

#[cfg(not(any(unix, windows)))]
fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)
}

#[cfg(unix)]
fn narrow_readable_dir(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if meta.uid() == my_uid() && meta.mode() & 0o077 != 0 && meta.mode() & 0o022 == 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(windows)]
fn narrow_readable_dir(path: &Path, _meta: &fs::Metadata) -> io::Result<()> {
    let access = windows::access_of_path(path)?;
    if access.foreign_owner.is_none() && !access.readers.is_empty() && access.writers.is_empty() {
        windows::make_owner_only(path, true)?;
    }
    Ok(())
}

#[cfg(not(any(unix, windows)))]
fn narrow_readable_dir(_path: &Path, _meta: &fs::Metadata) -> io::Result<()> {
    Ok(())
}

/// Refuses `path` (a link is judged by what it points to) when another user owns it or others
/// may write to it (Unix: group or others; Windows: anyone but this user, SYSTEM and the
/// Administrators); `what` names it in the one-line message, which also says how to fix it. A
/// missing path is an [`FilesError::Io`] error.
pub fn check_private(path: &Path, what: &str) -> Result<(), FilesError> {
    let io_err = |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io_err)?;
    #[cfg(windows)]
    {
        let access = windows::access_of_path(path).map_err(io_err)?;
        judge_windows(&access, meta.is_dir(), path, what)
    }
    #[cfg(not(windows))]
    judge(&meta, path, what)
}

/// [`check_private`] on a file already open (no window between the check and the use). On
/// Windows a file that others may read is refused too: no version of this program ever made
/// one there, so someone opened it up, and what it holds may be known.
pub fn check_file(file: &File, path: &Path, what: &str) -> Result<(), FilesError> {
    let io_err = |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    };
    #[cfg(windows)]
    {
        // Readers are refused here as writers are.
        let mut access = windows::access_of_file(file).map_err(io_err)?;
        access.writers.append(&mut access.readers);
        judge_windows(&access, false, path, what)
    }
    #[cfg(not(windows))]
    {
        let meta = file.metadata().map_err(io_err)?;
        judge(&meta, path, what)
    }
}

#[cfg(unix)]
fn judge(meta: &fs::Metadata, path: &Path, what: &str) -> Result<(), FilesError> {
    use std::os::unix::fs::MetadataExt;
    let me = my_uid();
    if meta.uid() != me {
        return Err(FilesError::Foreign {
            what: what.to_string(),
            path: path.to_path_buf(),
            owner: format!("uid {}", meta.uid()),
            me: format!("uid {me}"),
            fix: format!(
                "remove it, or give it back with `sudo chown {me} {}`",
                path.display()
            ),
        });
    }
    if meta.mode() & 0o022 != 0 {
        let fix = if meta.is_dir() { 0o700 } else { 0o600 };
        return Err(FilesError::Open {
            what: what.to_string(),
            path: path.to_path_buf(),
            open: format!(
                "writable by group or others (mode {:03o})",
                meta.mode() & 0o7777
            ),
            fix: format!("run `chmod {fix:o} {}`", path.display()),
        });
    }
    Ok(())
}

#[cfg(not(any(unix, windows)))]
fn judge(_meta: &fs::Metadata, _path: &Path, _what: &str) -> Result<(), FilesError> {
    Ok(())
}

/// Refuses a foreign owner, and anyone else in `access.writers` (the caller puts whom it
/// refuses there).
#[cfg(windows)]
fn judge_windows(
    access: &windows::Access,
    dir: bool,
    path: &Path,
    what: &str,
) -> Result<(), FilesError> {
    if let Some(owner) = &access.foreign_owner {
        return Err(FilesError::Foreign {
            what: what.to_string(),
            path: path.to_path_buf(),
            owner: owner.clone(),
            me: windows::my_name(),
            fix: format!(
                "remove it, or take it back with `takeown /f \"{}\"` as an administrator",
                path.display()
            ),
        });
    }
    if !access.writers.is_empty() {
        return Err(FilesError::Open {
            what: what.to_string(),
            path: path.to_path_buf(),
            open: format!("open to others ({})", access.writers.join(", ")),
            fix: windows::fix_command(path, dir, &access.writers),
        });
    }
    Ok(())
}

#[cfg(unix)]
fn my_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Narrows an open file of this user to `mode` if it grants more (never widens; a file of
/// another user is left as it is).
pub fn tighten(file: &File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = file.metadata()?;
        if meta.uid() == my_uid() && meta.mode() & 0o777 & !mode != 0 {
            file.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o777 & mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (file, mode);
    Ok(())
}

/// Opens `opts` on `path` without following a symbolic link in its last component; a link is
/// refused with an error that says so.
fn open_nofollow(opts: &mut OpenOptions, path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    opts.open(path).map_err(|e| {
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a symbolic link (this program does not follow links to its own files)",
            )
        } else {
            e
        }
    })
}

/// Opens an existing file for reading, refusing a symbolic link.
pub fn open_read(path: &Path) -> io::Result<File> {
    open_nofollow(OpenOptions::new().read(true), path)
}

/// The whole file, read without following a symbolic link.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_read(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Opens `path` for appending, creating it with mode 0600 (an existing file of this user is
/// narrowed to 0600), refusing a symbolic link.
pub fn open_append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = open_nofollow(&mut opts, path)?;
    tighten(&file, 0o600)?;
    Ok(file)
}

/// A temporary file (mode 0600) next to `path` holding `bytes`, named `.<name>.XXXXXX.tmp`, so
/// that a leftover is recognisable; it is deleted if dropped before being persisted.
fn staged(path: &Path, bytes: &[u8]) -> io::Result<tempfile::NamedTempFile> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(without_temp_path)?;
    // Private before the first byte goes in (tempfile makes it 0600 on Unix).
    #[cfg(windows)]
    windows::make_owner_only(tmp.path(), false)?;
    tmp.write_all(bytes).map_err(without_temp_path)?;
    Ok(tmp)
}

/// `tempfile`'s error without the ` at path ".name.XXXXXX.tmp"` it adds (the system's error
/// is kept only as text there): the caller names the file it was replacing, and a temporary
/// name means nothing to a user. Any other error is left as it is.
fn without_temp_path(e: io::Error) -> io::Error {
    let text = e.to_string();
    match text.split_once(" at path \"") {
        Some((system, _)) if e.get_ref().is_some() => io::Error::new(e.kind(), system),
        _ => e,
    }
}

/// Replaces `path` with `bytes` atomically (a reader sees the old or the new file, never half of
/// one); the new file has mode 0600 (Windows: an owner-only DACL; a file replaced there keeps its
/// own). A symbolic link at `path` is replaced, not written through. On Windows a reader that
/// holds `path` open without allowing it to be replaced is waited for (see `windows`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = staged(path, bytes)?;
    #[cfg(windows)]
    {
        // Closed and kept (no longer deleted on drop), then put in place; removed on failure.
        let kept = tmp.into_temp_path().keep().map_err(|e| e.error)?;
        windows::replace(&kept, path).inspect_err(|_| {
            let _ = fs::remove_file(&kept);
        })
    }
    #[cfg(not(windows))]
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

/// Like [`write_atomic`], but fails with [`io::ErrorKind::AlreadyExists`] (leaving it untouched)
/// when `path` exists: for a file that must be created exactly once, whole or not at all.
pub fn create_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    staged(path, bytes)?
        .persist_noclobber(path)
        .map(drop)
        .map_err(|e| e.error)
}

/// Renames a damaged file to `<name>.corrupt-<millis>` (`-1`, `-2`, ... appended if that name is
/// taken) next to it, and returns where it went. Never deletes anything.
pub fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    move_aside_at(path, millis)
}

fn move_aside_at(path: &Path, millis: u128) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let candidate = |n: u32| {
        let mut s = name.to_os_string();
        s.push(format!(".corrupt-{millis}"));
        if n > 0 {
            s.push(format!("-{n}"));
        }
        path.with_file_name(s)
    };
    let mut n = 0;
    let mut aside = candidate(n);
    while fs::symlink_metadata(&aside).is_ok() {
        n += 1;
        aside = candidate(n);
    }
    #[cfg(windows)]
    windows::rename(path, &aside)?;
    #[cfg(not(windows))]
    fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("metadata").mode() & 0o777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_failed_replacement_is_the_system_error_without_the_temporary_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = write_atomic(&tmp.path().join("gone/file.json"), b"{}").expect_err("no dir");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!err.to_string().contains(".tmp"), "{err}");
    }

    #[test]
    fn private_dir_is_0700_and_narrows_but_never_repairs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b/tray");
        private_dir(&dir).expect("create");
        assert_eq!(mode(&dir), 0o700);
        private_dir(&dir).expect("again");
        assert_eq!(mode(&dir), 0o700);

        chmod(&dir, 0o755);
        private_dir(&dir).expect("narrow");
        assert_eq!(mode(&dir), 0o700, "only readable by others: narrowed");

        chmod(&dir, 0o777);
        private_dir(&dir).expect("leave");
        assert_eq!(mode(&dir), 0o777, "writable by others: left for the check");

        let file = tmp.path().join("f");
        fs::write(&file, "").expect("write");
        assert!(private_dir(&file).is_err());
    }

    #[test]
    fn check_private_refuses_group_writable_with_the_fix() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("tray");
        private_dir(&dir).expect("create");
        check_private(&dir, "the directory").expect("private");
        chmod(&dir, 0o775);
        let err = check_private(&dir, "the directory").expect_err("group-writable");
        let msg = err.to_string();
        assert!(matches!(err, FilesError::Open { .. }), "{msg}");
        assert!(msg.contains("mode 775"), "{msg}");
        assert!(
            msg.contains(&format!("chmod 700 {}", dir.display())),
            "{msg}"
        );
        assert!(!msg.contains('\n'));

        let file = dir.join("token");
        fs::write(&file, "x").expect("write");
        chmod(&file, 0o602);
        let msg = check_private(&file, "the token")
            .expect_err("world-writable")
            .to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(matches!(
            check_private(&dir.join("missing"), "x"),
            Err(FilesError::Io { .. })
        ));
    }

    /// Ownership by another user needs root to produce: as root (CI containers are) the file is
    /// really given to uid 65534 (`nobody`); as anyone else this test checks nothing.
    #[test]
    fn check_private_refuses_a_file_of_another_user() {
        if my_uid() != 0 {
            // CI runs as root and must exercise it; a developer's run says it was skipped.
            assert!(std::env::var_os("CI").is_none(), "CI must run this as root");
            eprintln!("not root: cannot give a file to another user, skipped");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("token");
        fs::write(&file, "x").expect("write");
        chmod(&file, 0o600);
        std::os::unix::fs::chown(&file, Some(65534), Some(65534)).expect("chown");
        let f = File::open(&file).expect("open");
        for err in [
            check_private(&file, "the token").expect_err("foreign"),
            check_file(&f, &file, "the token").expect_err("foreign"),
        ] {
            assert!(
                matches!(&err, FilesError::Foreign { owner, .. } if owner == "uid 65534"),
                "{err}"
            );
            assert!(err.to_string().contains("another user"), "{err}");
        }
        // Not narrowed behind its owner's back either.
        chmod(&file, 0o644);
        tighten(&f, 0o600).expect("tighten");
        assert_eq!(mode(&file), 0o644);
    }

    #[test]
    fn open_append_creates_0600_narrows_and_refuses_links() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("events.jsonl");
        open_append(&path)
            .and_then(|mut f| f.write_all(b"one\n"))
            .expect("append");
        open_append(&path)
            .and_then(|mut f| f.write_all(b"two\n"))
            .expect("append");
        assert_eq!(fs::read_to_string(&path).expect("read"), "one\ntwo\n");
        assert_eq!(mode(&path), 0o600);

        chmod(&path, 0o644);
        open_append(&path).expect("open");
        assert_eq!(mode(&path), 0o600, "an older file is narrowed");

        let target = tmp.path().join("elsewhere");
        fs::write(&target, "theirs").expect("write");
        let link = tmp.path().join("link");
        symlink(&target, &link).expect("symlink");
        let err = open_append(&link).expect_err("a link is refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(open_read(&link).is_err());
        assert!(read(&link).is_err());
        assert_eq!(fs::read_to_string(&target).expect("read"), "theirs");
        assert_eq!(mode(&target), 0o644);
    }

    #[test]
    fn write_atomic_replaces_whole_0600_and_replaces_a_link_not_its_target() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("sessions.json");
        write_atomic(&path, b"first").expect("write");
        assert_eq!(mode(&path), 0o600);
        write_atomic(&path, b"second").expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"second");

        let target = tmp.path().join("target");
        fs::write(&target, "theirs").expect("write");
        let link = tmp.path().join("link");
        symlink(&target, &link).expect("symlink");
        write_atomic(&link, b"ours").expect("replace the link");
        assert_eq!(fs::read_to_string(&target).expect("read"), "theirs");
        assert!(!fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink());

        let err = create_atomic(&path, b"third").expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let fresh = tmp.path().join("token");
        create_atomic(&fresh, b"new").expect("create");
        assert_eq!(mode(&fresh), 0o600);

        let names: Vec<String> = fs::read_dir(tmp.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "no temporary file left: {names:?}");
    }

    #[test]
    fn move_aside_keeps_every_byte_under_a_fresh_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("instances.json");
        let damaged: &[u8] = b"[{\"pid\": 1,,\xff\xfe";
        fs::write(&path, damaged).expect("write");
        let first = move_aside_at(&path, 42).expect("move");
        assert_eq!(first, tmp.path().join("instances.json.corrupt-42"));
        assert!(!path.exists());
        assert_eq!(fs::read(&first).expect("read"), damaged);

        fs::write(&path, b"again").expect("write");
        let second = move_aside_at(&path, 42).expect("move");
        assert_eq!(second, tmp.path().join("instances.json.corrupt-42-1"));
        assert_eq!(fs::read(&first).expect("read"), damaged, "never replaced");
        assert_eq!(fs::read(&second).expect("read"), b"again");

        fs::write(&path, b"now").expect("write");
        let third = move_aside(&path).expect("move");
        assert!(third.to_string_lossy().contains("instances.json.corrupt-"));
        assert_eq!(fs::read(&third).expect("read"), b"now");
    }
}
