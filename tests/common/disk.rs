//! A small disk of a test's own: a tmpfs mounted (as root) on a directory, typically a home's
//! `SERENA_HOME`, that the test fills up or makes read-only while the program runs, and frees
//! again. Unmounted when dropped. The real kernel answers each write (`No space left on
//! device`, `Read-only file system`), nothing is faked.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a directory for one test.
pub struct SmallDisk {
    path: PathBuf,
    filler: PathBuf,
    /// A read-only bind mount stacked on it (see [`SmallDisk::read_only`]).
    read_only: std::cell::Cell<bool>,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB on `path` (created if missing; what it held is hidden until
    /// the unmount). `Err` says why it cannot (not root, no `mount`).
    pub fn mount(path: &Path, mib: u32) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mib}m,mode=0700"),
            "tmpfs",
            path.to_str().ok_or("not UTF-8")?,
        ])?;
        Ok(SmallDisk {
            path: path.to_path_buf(),
            filler: path.join("filler"),
            read_only: false.into(),
        })
    }

    /// Fills the disk: a file that takes every free byte, written until the kernel says no
    /// space is left.
    pub fn fill(&self) {
        let mut f = std::fs::File::create(&self.filler).expect("filler");
        let block = vec![0x5a_u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", self.filler.display()),
            }
        }
        // Whatever a partly filled last page still takes.
        while f.write(&[0x5a]).is_ok_and(|n| n == 1) {}
    }

    /// Frees what [`SmallDisk::fill`] took.
    pub fn free(&self) {
        std::fs::remove_file(&self.filler).expect("remove the filler");
    }

    /// Makes the directory read-only (`true`) or writable again. A remount of the tmpfs itself
    /// is refused while a file there is open for writing (a log), so a read-only bind mount of
    /// it is stacked on top: every path through it is read-only, as on a disk remounted so;
    /// files already open keep being written.
    pub fn read_only(&self, ro: bool) {
        let path = self.path.to_str().expect("utf8");
        if ro == self.read_only.get() {
            return;
        }
        if ro {
            run(&["mount", "--bind", path, path]).expect("bind");
            run(&["mount", "-o", "remount,bind,ro", path]).expect("read-only");
        } else {
            run(&["umount", "-l", path]).expect("unbind");
        }
        self.read_only.set(ro);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a process of the test may still hold a file there.
        let path = self.path.to_str().unwrap_or_default();
        if self.read_only.get() {
            let _ = run(&["umount", "-l", path]);
        }
        let _ = run(&["umount", "-l", path]);
    }
}

fn run(argv: &[&str]) -> Result<(), String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
