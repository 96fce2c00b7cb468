//! The state directory and the key file: private, created on first run,
//! refused when others could read or replace them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::{Result, StoreError};
use crate::seal::KEY_LEN;

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn unsafe_file(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Unsafe {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Creates `dir` (0700) when missing, refuses one that others can write.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error(dir, e))?;
    }
    let mode = fs::metadata(dir)
        .map_err(|e| io_error(dir, e))?
        .permissions()
        .mode();
    if mode & 0o002 != 0 {
        return Err(unsafe_file(
            dir,
            "state directory is world-writable; chmod o-w it",
        ));
    }
    Ok(())
}

/// Reads the key file, refusing one that others can read.
pub(crate) fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mode = fs::metadata(path)
        .map_err(|e| io_error(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(unsafe_file(
            path,
            format!("key file has mode {:04o}; it must be 0600", mode & 0o777),
        ));
    }
    let key = Zeroizing::new(fs::read(path).map_err(|e| io_error(path, e))?);
    if key.len() != KEY_LEN {
        return Err(unsafe_file(
            path,
            format!("key file must hold {KEY_LEN} bytes"),
        ));
    }
    Ok(key)
}

/// Writes a fresh random key to a new file (0600) at `path`.
pub(crate) fn write_new_key(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut key = Zeroizing::new(vec![0u8; KEY_LEN]);
    OsRng.fill_bytes(&mut key);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))?;
    Ok(key)
}

/// Reads a password file (the database's), refusing one that others can
/// read; one trailing newline is not part of the password.
pub(crate) fn read_password(path: &Path) -> Result<Zeroizing<String>> {
    let mode = fs::metadata(path)
        .map_err(|e| io_error(path, e))?
        .permissions()
        .mode();
    if mode & 0o007 != 0 {
        return Err(unsafe_file(
            path,
            format!(
                "password file has mode {:04o}; others must not read it (chmod o-rwx)",
                mode & 0o777
            ),
        ));
    }
    let mut text = Zeroizing::new(fs::read_to_string(path).map_err(|e| io_error(path, e))?);
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(unsafe_file(path, "password file is empty"));
    }
    Ok(text)
}
