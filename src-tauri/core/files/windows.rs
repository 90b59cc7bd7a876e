//! Windows' side of this program's own files: what mode 0700/0600 and a rename are on Unix.
//!
//! - **Owner-only**: `tray/` is created with a protected DACL that grants this user alone full
//!   control (inherited by everything created in it), and every file this program writes
//!   atomically gets the same before any byte goes in. [`access`] reads a file's owner and DACL
//!   back and names who else may read or write it, so that a start refuses a token or a `tray/`
//!   that others may open. SYSTEM and the Administrators group count as this user's own (they
//!   can take any file anyway); so does an ACE that only children inherit.
//! - **Replacing a file others hold open**: `ReplaceFileW` replaces a file that a reader holds
//!   open when the reader allowed deletion (`FILE_SHARE_DELETE`: Rust's own default, so every
//!   open in this program), and keeps the replaced file's DACL. A reader that did not allow it
//!   (most C runtimes, Python's `open`) makes Windows refuse with a sharing violation: the
//!   replacement is tried again until that reader closes the file, for at most [`PATIENCE`],
//!   saying once what it waits for. A rename (moving a damaged file aside) waits the same way.
//!
//! Under Wine, security descriptors are not kept as such: Wine maps a DACL onto the Unix mode
//! bits of the file and back (others' read becomes an `Everyone` ACE), and does not apply
//! inheritance, so files created in `tray/` by plain `std::fs` read back as readable by
//! `Everyone` there (never on Windows, where they inherit `tray/`'s DACL); nor can a DACL set on a
//! file in a directory that everyone may read take that right away under Wine.
#![allow(unsafe_code)]

use std::ffi::{c_void, OsStr};
use std::fs::File;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::AsRawHandle;
use std::path::Path;
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::{
    LocalFree, ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_LOCK_VIOLATION,
    ERROR_SHARING_VIOLATION, ERROR_UNABLE_TO_MOVE_REPLACEMENT, ERROR_UNABLE_TO_REMOVE_REPLACED,
    HANDLE,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, GetSecurityInfo,
    SetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{
    EqualSid, GetAce, GetSecurityDescriptorDacl, GetTokenInformation, IsWellKnownSid,
    LookupAccountSidW, TokenUser, WinBuiltinAdministratorsSid, WinCreatorOwnerRightsSid,
    WinCreatorOwnerSid, WinLocalSystemSid, ACCESS_ALLOWED_ACE, ACE_HEADER, ACL,
    DACL_SECURITY_INFORMATION, INHERIT_ONLY_ACE, OWNER_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES,
    SID_NAME_USE, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateDirectoryW, ReplaceFileW, FILE_FLAG_BACKUP_SEMANTICS, READ_CONTROL,
    REPLACEFILE_IGNORE_ACL_ERRORS, REPLACEFILE_IGNORE_MERGE_ERRORS,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// How long a replacement or rename waits for another program to close the file.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// `ACCESS_ALLOWED_ACE_TYPE`.
const ACCESS_ALLOWED: u8 = 0;
/// Rights that read what a file holds (or list a directory).
const READ_RIGHTS: u32 = 0x0001 /* FILE_READ_DATA */ | 0x8000_0000 /* GENERIC_READ */
    | 0x1000_0000 /* GENERIC_ALL */;
/// Rights that change a file (or a directory's entries) or who may.
const WRITE_RIGHTS: u32 = 0x0002 /* FILE_WRITE_DATA, FILE_ADD_FILE */
    | 0x0004 /* FILE_APPEND_DATA, FILE_ADD_SUBDIRECTORY */
    | 0x0040 /* FILE_DELETE_CHILD */
    | 0x0001_0000 /* DELETE */
    | 0x0004_0000 /* WRITE_DAC */
    | 0x0008_0000 /* WRITE_OWNER */
    | 0x4000_0000 /* GENERIC_WRITE */
    | 0x1000_0000 /* GENERIC_ALL */;

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(Some(0)).collect()
}

/// Memory Windows allocated for the caller (`LocalAlloc`), freed on drop.
struct Local(*mut c_void);

impl Drop for Local {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from an API that hands out LocalAlloc'd memory.
            unsafe { LocalFree(self.0) };
        }
    }
}

/// A UTF-16 string Windows allocated, as a Rust string.
fn take_wide(p: *mut u16) -> String {
    let owned = Local(p.cast());
    if p.is_null() {
        return String::new();
    }
    // SAFETY: `p` is a NUL-terminated string allocated by Windows, alive until `owned` drops.
    let text = unsafe {
        let len = (0..).take_while(|&i| *p.add(i) != 0).count();
        String::from_utf16_lossy(std::slice::from_raw_parts(p, len))
    };
    drop(owned);
    text
}

/// The user this process runs as: its `TOKEN_USER` (the SID lives inside the buffer).
struct User {
    buf: Vec<u64>,
}

impl User {
    fn current() -> io::Result<User> {
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: plain calls on this process's own token, closed below; the buffer is sized
        // by the first call and aligned for TOKEN_USER (u64 elements).
        unsafe {
            if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
                return Err(io::Error::last_os_error());
            }
            let mut len = 0u32;
            GetTokenInformation(token, TokenUser, std::ptr::null_mut(), 0, &mut len);
            let mut buf = vec![0u64; (len as usize).div_ceil(8).max(1)];
            let ok = GetTokenInformation(
                token,
                TokenUser,
                buf.as_mut_ptr().cast(),
                (buf.len() * 8) as u32,
                &mut len,
            );
            let err = io::Error::last_os_error();
            windows_sys::Win32::Foundation::CloseHandle(token);
            if ok == 0 {
                return Err(err);
            }
            Ok(User { buf })
        }
    }

    fn sid(&self) -> PSID {
        // SAFETY: the buffer holds a TOKEN_USER filled in by GetTokenInformation.
        unsafe { (*(self.buf.as_ptr() as *const TOKEN_USER)).User.Sid }
    }

    fn sid_string(&self) -> io::Result<String> {
        sid_string(self.sid())
    }
}

fn sid_string(sid: PSID) -> io::Result<String> {
    let mut out: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` is a valid SID; the string is freed by `take_wide`.
    if unsafe { ConvertSidToStringSidW(sid, &mut out) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(take_wide(out))
}

/// `DOMAIN\name` of a SID (its string form when it cannot be looked up).
fn account_name(sid: PSID) -> String {
    let (mut name, mut domain) = ([0u16; 256], [0u16; 256]);
    let (mut name_len, mut domain_len) = (256u32, 256u32);
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: the buffers and their lengths match.
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            sid,
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return sid_string(sid).unwrap_or_else(|_| "an unknown account".into());
    }
    let name = String::from_utf16_lossy(&name[..name_len as usize]);
    let domain = String::from_utf16_lossy(&domain[..domain_len as usize]);
    if domain.is_empty() {
        name
    } else {
        format!("{domain}\\{name}")
    }
}

/// The name of the user this process runs as.
pub fn my_name() -> String {
    User::current().map_or_else(|_| "you".into(), |u| account_name(u.sid()))
}

/// A security descriptor owned by this user whose protected DACL grants this user alone full
/// control (for a directory, inherited by files and subdirectories).
fn owner_only(dir: bool) -> io::Result<Local> {
    let sid = User::current()?.sid_string()?;
    let inherit = if dir { "OICI" } else { "" };
    descriptor(&format!("O:{sid}D:P(A;{inherit};FA;;;{sid})"))
}

/// The security descriptor an SDDL string describes.
fn descriptor(sddl: &str) -> io::Result<Local> {
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a NUL-terminated SDDL string; the descriptor is freed by `Local`.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            wide(OsStr::new(sddl)).as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Local(sd))
}

/// Creates the directory `path` with an owner-only DACL.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    let sd = owner_only(true)?;
    let attrs = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.0,
        bInheritHandle: 0,
    };
    // SAFETY: a NUL-terminated path and a valid security descriptor, alive for the call.
    if unsafe { CreateDirectoryW(wide(path.as_os_str()).as_ptr(), &attrs) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Replaces the DACL of `path` by an owner-only one that inherits nothing.
pub fn make_owner_only(path: &Path, dir: bool) -> io::Result<()> {
    set_dacl(path, &owner_only(dir)?)
}

/// Tests: gives `path` a DACL granting this user full control and `Everyone` the SDDL rights
/// `rights` (`FR` read, `FA` all).
#[cfg(test)]
pub fn grant_everyone(path: &Path, rights: &str) -> io::Result<()> {
    let sid = User::current()?.sid_string()?;
    set_dacl(
        path,
        &descriptor(&format!("D:P(A;;FA;;;{sid})(A;;{rights};;;WD)"))?,
    )
}

fn set_dacl(path: &Path, sd: &Local) -> io::Result<()> {
    let (mut present, mut defaulted) = (0, 0);
    let mut dacl: *mut ACL = std::ptr::null_mut();
    // SAFETY: `sd` is a valid descriptor; `dacl` points into it and lives as long as it.
    let status = unsafe {
        if GetSecurityDescriptorDacl(sd.0, &mut present, &mut dacl, &mut defaulted) == 0 {
            return Err(io::Error::last_os_error());
        }
        SetNamedSecurityInfoW(
            wide(path.as_os_str()).as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            dacl,
            std::ptr::null(),
        )
    };
    if status != 0 {
        return Err(io::Error::from_raw_os_error(status as i32));
    }
    Ok(())
}

/// Who may do what with a file or directory, as far as its owner and DACL tell.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Access {
    /// The owner, when it is not this user (nor SYSTEM or the Administrators group).
    pub foreign_owner: Option<String>,
    /// Others who may read it (list it, for a directory).
    pub readers: Vec<String>,
    /// Others who may change it, or change who may.
    pub writers: Vec<String>,
}

/// The [`Access`] of an open file (opened with read access, which includes `READ_CONTROL`).
pub fn access_of_file(file: &File) -> io::Result<Access> {
    read_access(file.as_raw_handle() as HANDLE)
}

/// The [`Access`] of the file or directory at `path` (a link: what it points to).
pub fn access_of_path(path: &Path) -> io::Result<Access> {
    use std::os::windows::fs::OpenOptionsExt;
    // READ_CONTROL only (no right to the data); a directory opens with backup semantics.
    let file = std::fs::OpenOptions::new()
        .access_mode(READ_CONTROL)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?;
    access_of_file(&file)
}

/// Who besides this user (and the system's own accounts) owns, reads or writes what `handle`
/// opens. One function of about 80 lines because the owner and DACL pointers point into a
/// security descriptor that lives only as long as it does: splitting it would hand raw pointers
/// across functions.
fn read_access(handle: HANDLE) -> io::Result<Access> {
    let me = User::current()?;
    let mut owner: PSID = std::ptr::null_mut();
    let mut dacl: *mut ACL = std::ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a valid handle with READ_CONTROL; the out-pointers are valid.
    let status = unsafe {
        GetSecurityInfo(
            handle,
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            &mut dacl,
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if status != 0 {
        return Err(io::Error::from_raw_os_error(status as i32));
    }
    // Owner and DACL point into the descriptor, which lives until the end of this function.
    let _sd = Local(sd);
    let trusted = |sid: PSID| {
        // SAFETY: both are valid SIDs.
        unsafe {
            EqualSid(sid, me.sid()) != 0
                || [
                    WinLocalSystemSid,
                    WinBuiltinAdministratorsSid,
                    WinCreatorOwnerRightsSid,
                    WinCreatorOwnerSid,
                ]
                .into_iter()
                .any(|kind| IsWellKnownSid(sid, kind) != 0)
        }
    };
    let mut access = Access::default();
    if !owner.is_null() && !trusted(owner) {
        access.foreign_owner = Some(account_name(owner));
    }
    if dacl.is_null() {
        // No DACL at all: everyone may do anything.
        access
            .readers
            .push("Everyone (the file has no DACL)".into());
        access
            .writers
            .push("Everyone (the file has no DACL)".into());
        return Ok(access);
    }
    // SAFETY: `dacl` is a valid ACL; each ACE GetAce hands out lies inside it, and an
    // ACCESS_ALLOWED_ACE's SID starts at its SidStart field.
    unsafe {
        for i in 0..u32::from((*dacl).AceCount) {
            let mut ace: *mut c_void = std::ptr::null_mut();
            if GetAce(dacl, i, &mut ace) == 0 {
                continue;
            }
            let header = &*(ace as *const ACE_HEADER);
            if header.AceType != ACCESS_ALLOWED
                || u32::from(header.AceFlags) & INHERIT_ONLY_ACE != 0
            {
                continue;
            }
            let allowed = &*(ace as *const ACCESS_ALLOWED_ACE);
            let sid: PSID = std::ptr::addr_of!(allowed.SidStart) as PSID;
            if trusted(sid) {
                continue;
            }
            let name = account_name(sid);
            if allowed.Mask & READ_RIGHTS != 0 && !access.readers.contains(&name) {
                access.readers.push(name.clone());
            }
            if allowed.Mask & WRITE_RIGHTS != 0 && !access.writers.contains(&name) {
                access.writers.push(name);
            }
        }
    }
    Ok(access)
}

/// The commands that make `path` this user's alone, for a message.
pub fn fix_command(path: &Path, dir: bool, others: &[String]) -> String {
    let grant = if dir { "(OI)(CI)F" } else { "F" };
    let mut fix = format!(
        "run `icacls \"{}\" /inheritance:r /grant:r \"%USERNAME%:{grant}\"`",
        path.display()
    );
    if !others.is_empty() {
        let names: Vec<String> = others.iter().map(|n| format!("\"{n}\"")).collect();
        fix.push_str(&format!(
            " and `icacls \"{}\" /remove {}`",
            path.display(),
            names.join(" ")
        ));
    }
    fix
}

/// Whether an error is another program holding the file in a way that forbids the change
/// (it goes away when that program closes the file).
fn held_by_another(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(|c| c as u32),
        Some(
            ERROR_SHARING_VIOLATION
                | ERROR_LOCK_VIOLATION
                | ERROR_ACCESS_DENIED
                | ERROR_UNABLE_TO_REMOVE_REPLACED
                | ERROR_UNABLE_TO_MOVE_REPLACEMENT
        )
    )
}

/// Runs `op` until it stops failing because another program holds `path`, for at most
/// [`PATIENCE`]; says once, in the log, what it waits for.
fn patiently(path: &Path, what: &str, mut op: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    let mut said = false;
    loop {
        match op() {
            Err(e) if held_by_another(&e) && start.elapsed() < PATIENCE => {
                if !said {
                    tracing::warn!(
                        "{}: another program holds it open and does not allow it to be {what} \
                         ({e}); waiting up to {} s for it to close the file",
                        path.display(),
                        PATIENCE.as_secs()
                    );
                    said = true;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) if held_by_another(&e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "another program still held it open after {} s, not allowing it to be \
                         {what} ({e})",
                        PATIENCE.as_secs()
                    ),
                ))
            }
            other => {
                if said {
                    tracing::info!("{}: {what} once the other program let go", path.display());
                }
                return other;
            }
        }
    }
}

/// Puts the file `from` in the place of `to` (see the module docs): `ReplaceFileW` when `to`
/// exists, a rename when it does not.
pub fn replace(from: &Path, to: &Path) -> io::Result<()> {
    let (from_w, to_w) = (wide(from.as_os_str()), wide(to.as_os_str()));
    patiently(to, "replaced", || {
        // SAFETY: NUL-terminated paths; no backup file, no reserved arguments.
        let ok = unsafe {
            ReplaceFileW(
                to_w.as_ptr(),
                from_w.as_ptr(),
                std::ptr::null(),
                REPLACEFILE_IGNORE_MERGE_ERRORS | REPLACEFILE_IGNORE_ACL_ERRORS,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if ok != 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(ERROR_FILE_NOT_FOUND as i32) && !to.exists() {
            // Nothing to replace yet.
            return std::fs::rename(from, to);
        }
        Err(e)
    })
}

/// Renames `from` to `to` (which does not exist), waiting while another program holds `from`.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    patiently(from, "renamed", || std::fs::rename(from, to))
}

#[cfg(test)]
mod tests {
    use super::super::{move_aside, write_atomic};
    use super::*;
    use std::io::Read;
    use std::os::windows::fs::OpenOptionsExt;

    /// `FILE_SHARE_READ | FILE_SHARE_WRITE`: how a C runtime (and Python's `open`) opens.
    const NO_SHARE_DELETE: u32 = 0x1 | 0x2;

    /// A temporary directory with a private `tray/` in it, where this program keeps its files
    /// (and where Wine, which applies a directory's readable-by-all mode to the files in it
    /// whatever their DACL says, shows them owner-only too).
    fn tray() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tray = dir.path().join("tray");
        create_private_dir(&tray).expect("tray/");
        (dir, tray)
    }

    fn held(path: &Path, share: u32) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .share_mode(share)
            .open(path)
            .expect("open")
    }

    #[test]
    fn a_file_held_by_a_reader_that_allows_it_is_replaced_at_once() {
        let (_dir, tray) = tray();
        let path = tray.join("sessions.json");
        write_atomic(&path, b"old").expect("write");
        // Rust's default share mode (read, write and delete), as every open in this program.
        let mut reader = File::open(&path).expect("open");
        let started = Instant::now();
        write_atomic(&path, b"new").expect("replaced while held");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let mut old = String::new();
        reader.read_to_string(&mut old).expect("read");
        assert_eq!(old, "old", "the reader keeps the file it opened");
        assert_eq!(access_of_path(&path).expect("DACL"), Access::default());
    }

    #[test]
    fn a_reader_that_forbids_it_is_waited_for_until_it_closes_the_file() {
        let (_dir, tray) = tray();
        let path = tray.join("instances.json");
        write_atomic(&path, b"old").expect("write");
        let reader = held(&path, NO_SHARE_DELETE);
        let hold = Duration::from_millis(400);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(hold);
            drop(reader);
        });
        let started = Instant::now();
        write_atomic(&path, b"new").expect("replaced once the reader let go");
        let waited = started.elapsed();
        closer.join().expect("closer");
        assert!(waited >= hold, "replaced while still held ({waited:?})");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");

        // A damaged file is moved aside the same way.
        let reader = held(&path, NO_SHARE_DELETE);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(hold);
            drop(reader);
        });
        let aside = move_aside(&path).expect("moved aside once the reader let go");
        closer.join().expect("closer");
        assert_eq!(std::fs::read(&aside).expect("read"), b"new");
        assert!(!path.exists());
    }
}
