//! The access token of the HTTP API: `$SERENA_HOME/tray/token`, 32 random bytes as hex, created
//! on first start (mode 600, inside a 0700 `tray/`) and reused after. Before using it, start
//! refuses a `tray/` or token that belongs to another user or that group or others may write to.
//! An empty token file (a crash between creating and writing it) is replaced by a fresh token; a
//! damaged non-empty one is an error, never silently replaced. Also the random IDs of sessions.
//! Deliberately not here: checking requests (the API's security layer does that).

use super::files::{self, FilesError};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Creating `tray/` or writing the token failed (a full disk, a read-only home).
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no secure random source: {0}")]
    Random(#[source] getrandom::Error),
    #[error("{0} holds no usable token (delete it to have a new one made)")]
    Bad(PathBuf),
    /// `tray/` or the token is another user's, or open to group or others.
    #[error(transparent)]
    NotPrivate(#[from] FilesError),
}

impl super::writes::WriteError for TokenError {
    fn io(&self) -> Option<(&Path, &std::io::Error)> {
        match self {
            TokenError::Write { path, source } => Some((path, source)),
            _ => None,
        }
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> Result<String, TokenError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where the token lives under a Serena home.
pub fn token_path(serena_home: &Path) -> PathBuf {
    serena_home.join("tray").join("token")
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> TokenError {
    let path = path.to_path_buf();
    move |source| TokenError::Io {
        path: path.clone(),
        source,
    }
}

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> TokenError {
    let path = path.to_path_buf();
    move |source| TokenError::Write {
        path: path.clone(),
        source,
    }
}

/// The token's path, once `tray/` is there (made if missing) and checked to be the user's alone.
fn private_token_path(serena_home: &Path) -> Result<PathBuf, TokenError> {
    let dir = serena_home.join("tray");
    files::private_dir(&dir).map_err(write_error(&dir))?;
    files::check_private(&dir, "Serena Tray's directory")?;
    Ok(token_path(serena_home))
}

/// Reads the token, creating it (and `tray/`) if there is none, after checking that both are
/// the user's alone. A failure to write them is a [`TokenError::Write`]: the caller may go on
/// with a token held in memory and [`save`] it later.
pub fn load_or_create(serena_home: &Path) -> Result<String, TokenError> {
    let path = private_token_path(serena_home)?;
    if let Some(token) = existing(&path)? {
        return Ok(token);
    }
    let token = random_hex(32)?;
    match files::create_atomic(&path, token.as_bytes()) {
        Ok(()) => Ok(token),
        // Another process created it a moment ago: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            existing(&path)?.ok_or(TokenError::Bad(path))
        }
        Err(e) => Err(write_error(&path)(e)),
    }
}

/// Writes `token` as the token file, which must not exist (a token that could not be written
/// at the start, written once the disk takes it). A file that appeared meanwhile is kept, and
/// is an error: its token is not the one this program answers to.
pub fn save(serena_home: &Path, token: &str) -> Result<(), TokenError> {
    let path = private_token_path(serena_home)?;
    match files::create_atomic(&path, token.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(TokenError::Bad(path)),
        other => other.map_err(write_error(&path)),
    }
}

/// The token in an existing file (`None` if there is none), checked to be the user's alone; an
/// empty file is replaced by a fresh token.
fn existing(path: &Path) -> Result<Option<String>, TokenError> {
    let mut file = match files::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    files::check_file(&file, path, "the API token")?;
    files::tighten(&file, 0o600).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error(path))?;
    // Closed before it may be replaced below.
    drop(file);
    let text = String::from_utf8_lossy(&bytes);
    if !text.trim().is_empty() {
        return valid(path, &text).map(Some);
    }
    tracing::warn!(
        "{} is empty (an interrupted first start?): making a new token",
        path.display()
    );
    let token = random_hex(32)?;
    files::write_atomic(path, token.as_bytes()).map_err(write_error(path))?;
    Ok(Some(token))
}

/// Reads an existing token without creating one (the CLI's way).
pub fn read(serena_home: &Path) -> Option<String> {
    let path = token_path(serena_home);
    let bytes = files::read(&path).ok()?;
    valid(&path, &String::from_utf8_lossy(&bytes)).ok()
}

fn valid(path: &Path, text: &str) -> Result<String, TokenError> {
    let t = text.trim().to_string();
    if t.len() >= 16 && t.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(t)
    } else {
        Err(TokenError::Bad(path.to_path_buf()))
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn created_once_with_mode_600_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path()).expect("create");
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create(dir.path()).expect("reuse"), a);
        assert_eq!(read(dir.path()).as_deref(), Some(a.as_str()));
        #[cfg(unix)]
        {
            assert_eq!(mode(&token_path(dir.path())), 0o600);
            assert_eq!(mode(&dir.path().join("tray")), 0o700);
        }
    }

    /// The leftover of a first start interrupted between creating the token and writing it,
    /// made as this program makes its files (private: on Windows a readable one is refused).
    #[test]
    fn an_empty_token_file_is_replaced() {
        for leftover in ["", " \n"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let p = token_path(dir.path());
            files::private_dir(p.parent().expect("parent")).expect("mkdir");
            files::write_atomic(&p, leftover.as_bytes()).expect("write");
            let t = load_or_create(dir.path()).expect("replaced");
            assert_eq!(t.len(), 64);
            assert_eq!(fs::read_to_string(&p).expect("read"), t);
            assert_eq!(load_or_create(dir.path()).expect("reuse"), t);
            #[cfg(unix)]
            assert_eq!(mode(&p), 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_tray_dir_or_token_open_to_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tray = dir.path().join("tray");
        let token = load_or_create(dir.path()).expect("create");
        chmod(&tray, 0o770);
        let err = load_or_create(dir.path()).expect_err("group-writable tray/");
        assert!(matches!(err, TokenError::NotPrivate(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&tray.display().to_string()), "{msg}");
        assert!(msg.contains("chmod 700"), "{msg}");

        chmod(&tray, 0o700);
        let p = token_path(dir.path());
        chmod(&p, 0o666);
        let msg = load_or_create(dir.path())
            .expect_err("world-writable token")
            .to_string();
        assert!(msg.contains("chmod 600"), "{msg}");

        chmod(&p, 0o644);
        assert_eq!(load_or_create(dir.path()).expect("readable only"), token);
        assert_eq!(mode(&p), 0o600, "narrowed");
    }

    #[cfg(unix)]
    #[test]
    fn a_token_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let theirs = load_or_create(other.path()).expect("create");
        fs::create_dir_all(dir.path().join("tray")).expect("mkdir");
        std::os::unix::fs::symlink(token_path(other.path()), token_path(dir.path()))
            .expect("symlink");
        let err = load_or_create(dir.path()).expect_err("a link");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(read(dir.path()).is_none());
        assert_eq!(read(other.path()), Some(theirs));
    }

    /// Needs root to give the file to another user (uid 65534, `nobody`); checks nothing
    /// otherwise.
    #[cfg(unix)]
    #[test]
    fn a_token_of_another_user_is_refused() {
        if rustix::process::geteuid().as_raw() != 0 {
            // CI runs as root and must exercise it; a developer's run says it was skipped.
            assert!(std::env::var_os("CI").is_none(), "CI must run this as root");
            eprintln!("not root: cannot give a file to another user, skipped");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create(dir.path()).expect("create");
        let p = token_path(dir.path());
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).expect("chown");
        let err = load_or_create(dir.path()).expect_err("foreign");
        assert!(
            matches!(err, TokenError::NotPrivate(FilesError::Foreign { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("another user"), "{err}");
    }

    #[test]
    fn a_damaged_token_is_an_error_not_a_silent_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = token_path(dir.path());
        files::private_dir(p.parent().expect("parent")).expect("mkdir");
        files::write_atomic(&p, b"a b").expect("write");
        assert!(matches!(
            load_or_create(dir.path()),
            Err(TokenError::Bad(_))
        ));
        assert!(read(dir.path()).is_none());
    }

    /// Windows: `tray/` and the token are made owner-only, as read back from their DACLs (Wine
    /// keeps a DACL as the file's Unix mode bits, and reads it back from them).
    #[cfg(windows)]
    #[test]
    fn the_tray_dir_and_the_token_are_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create(dir.path()).expect("create");
        for p in [dir.path().join("tray"), token_path(dir.path())] {
            let access = files::windows::access_of_path(&p).expect("DACL");
            assert_eq!(access, files::windows::Access::default(), "{}", p.display());
        }
    }

    /// Windows: a token others may read is refused (no version ever made one: someone opened
    /// it up), and so is a `tray/` others may write to; each message says how to fix it.
    #[cfg(windows)]
    #[test]
    fn a_token_others_can_read_or_a_tray_dir_they_can_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = load_or_create(dir.path()).expect("create");
        let p = token_path(dir.path());
        files::windows::grant_everyone(&p, "FR").expect("open it up");
        let err = load_or_create(dir.path()).expect_err("a readable token");
        assert!(matches!(err, TokenError::NotPrivate(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("Everyone"), "{msg}");
        assert!(msg.contains("icacls"), "{msg}");
        assert!(
            read(dir.path()).is_some(),
            "the CLI still reads its own token"
        );

        files::windows::make_owner_only(&p, false).expect("private again");
        assert_eq!(load_or_create(dir.path()).expect("accepted"), token);
        let tray = dir.path().join("tray");
        files::windows::grant_everyone(&tray, "FA").expect("open it up");
        let msg = load_or_create(dir.path())
            .expect_err("a tray dir others may write to")
            .to_string();
        assert!(msg.contains(&tray.display().to_string()), "{msg}");
        assert!(msg.contains("(OI)(CI)F"), "{msg}");
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
