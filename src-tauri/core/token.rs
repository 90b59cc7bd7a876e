//! The access token of the HTTP API: `$SERENA_HOME/tray/token`, 32 random bytes as hex, created
//! on first start with mode 600 and reused after. Also the random IDs of sessions. Deliberately
//! not here: checking requests (the API's security layer does that).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no secure random source: {0}")]
    Random(String),
    #[error("{0} holds no usable token (delete it to have a new one made)")]
    Bad(PathBuf),
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> Result<String, TokenError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where the token lives under a Serena home.
pub fn token_path(serena_home: &Path) -> PathBuf {
    serena_home.join("tray").join("token")
}

/// Reads the token, creating it (mode 600) if there is none.
pub fn load_or_create(serena_home: &Path) -> Result<String, TokenError> {
    let path = token_path(serena_home);
    let io = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(t) => return valid(&path, t),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let token = random_hex(32)?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(&path) {
        Ok(mut f) => {
            f.write_all(token.as_bytes()).map_err(io)?;
            Ok(token)
        }
        // Another process created it a moment ago: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            valid(&path, fs::read_to_string(&path).map_err(io)?)
        }
        Err(e) => Err(io(e)),
    }
}

/// Reads an existing token without creating one (the CLI's way).
pub fn read(serena_home: &Path) -> Option<String> {
    let path = token_path(serena_home);
    fs::read_to_string(&path)
        .ok()
        .and_then(|t| valid(&path, t).ok())
}

fn valid(path: &Path, text: String) -> Result<String, TokenError> {
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

    #[test]
    fn created_once_with_mode_600_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path()).expect("create");
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create(dir.path()).expect("reuse"), a);
        assert_eq!(read(dir.path()).as_deref(), Some(a.as_str()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(token_path(dir.path()))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_token_is_an_error_not_a_silent_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = token_path(dir.path());
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, "a b").expect("write");
        assert!(matches!(
            load_or_create(dir.path()),
            Err(TokenError::Bad(_))
        ));
        assert!(read(dir.path()).is_none());
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
