//! Settings of the core: where Serena's home is, the zombie grace, probe timeouts. Resolution of
//! `--serena-home` (flag, then `$SERENA_HOME`, then `~/.serena`). Deliberately not yet here:
//! reading `serena_config.yml` and `tray/config.toml` (the daemon's business).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default zombie grace (DESIGN: 10 s).
pub const DEFAULT_ZOMBIE_GRACE: Duration = Duration::from_secs(10);
/// The default timeout of one dashboard probe.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot find the home directory: set SERENA_HOME or pass --serena-home")]
    NoHome,
    #[error("--serena-home {0}: {1}")]
    BadHome(PathBuf, String),
    #[error("--zombie-grace must be a number of seconds >= 0, got {0}")]
    BadGrace(f64),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub serena_home: PathBuf,
    pub zombie_grace: Duration,
    pub probe_timeout: Duration,
    /// Which processes may be seen as instances (all, except in tests).
    pub scope: crate::core::procs::Scope,
}

impl Config {
    pub fn new(serena_home: PathBuf) -> Config {
        Config {
            serena_home,
            zombie_grace: DEFAULT_ZOMBIE_GRACE,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            scope: crate::core::procs::Scope::All,
        }
    }

    pub fn with_grace_secs(mut self, secs: f64) -> Result<Config, ConfigError> {
        if !secs.is_finite() || secs < 0.0 {
            return Err(ConfigError::BadGrace(secs));
        }
        self.zombie_grace = Duration::from_secs_f64(secs);
        Ok(self)
    }

    /// This program's own state directory, `$SERENA_HOME/tray`.
    pub fn tray_dir(&self) -> PathBuf {
        self.serena_home.join("tray")
    }
}

/// `--serena-home` if given, else `$SERENA_HOME`, else `~/.serena`; made absolute. It need not
/// exist yet (it is created on first write) but must not be a file.
pub fn resolve_serena_home(flag: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let chosen = match flag {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os("SERENA_HOME").filter(|v| !v.is_empty()) {
            Some(v) => PathBuf::from(v),
            None => home_dir().ok_or(ConfigError::NoHome)?.join(".serena"),
        },
    };
    if chosen.as_os_str().is_empty() {
        return Err(ConfigError::BadHome(chosen, "empty path".into()));
    }
    let abs = std::path::absolute(&chosen)
        .map_err(|e| ConfigError::BadHome(chosen.clone(), e.to_string()))?;
    if abs.exists() && !abs.is_dir() {
        return Err(ConfigError::BadHome(abs, "not a directory".into()));
    }
    Ok(abs)
}

fn home_dir() -> Option<PathBuf> {
    let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_and_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            resolve_serena_home(Some(dir.path())).expect("ok"),
            dir.path()
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "").expect("write");
        assert!(matches!(
            resolve_serena_home(Some(&file)),
            Err(ConfigError::BadHome(..))
        ));
        assert!(Config::new(dir.path().into())
            .with_grace_secs(-1.0)
            .is_err());
        assert!(Config::new(dir.path().into())
            .with_grace_secs(f64::NAN)
            .is_err());
    }
}
