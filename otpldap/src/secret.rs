//! The search account's password file.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use zeroize::Zeroizing;

/// The most a password file may hold, newline included.
const MAX_LEN: u64 = 1024;

/// Reads the password in `path`: a regular file that only its owner may
/// read or write, UTF-8, not empty; one trailing newline (`\n` or `\r\n`)
/// is not part of it. The error says what is wrong, never what the file
/// holds. A FIFO at the path is refused without waiting for a writer.
pub(crate) fn read_password(path: &Path) -> Result<Zeroizing<String>, String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "has mode {mode:04o}; only its owner may read it (chmod 600)"
        ));
    }
    if meta.len() > MAX_LEN {
        return Err(format!("holds more than {MAX_LEN} bytes"));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_LEN as usize + 1));
    file.by_ref()
        .take(MAX_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_LEN {
        return Err(format!("holds more than {MAX_LEN} bytes"));
    }
    let mut end = bytes.len();
    if bytes.get(..end).is_some_and(|b| b.ends_with(b"\n")) {
        end -= 1;
        if bytes.get(..end).is_some_and(|b| b.ends_with(b"\r")) {
            end -= 1;
        }
    }
    let text = bytes.get(..end).unwrap_or_default();
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    let text = std::str::from_utf8(text).map_err(|_| "is not UTF-8 text".to_owned())?;
    if text.contains(['\0', '\n']) {
        return Err("holds more than one line".to_owned());
    }
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with(dir: &Path, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.join(format!("password-{mode:o}-{}", bytes.len()));
        std::fs::write(&path, bytes).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn one_trailing_newline_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (bytes, password) in [
            (&b"s3cret\n"[..], "s3cret"),
            (b"s3cret\r\n", "s3cret"),
            (b"s3cret", "s3cret"),
            (b" spaced s3cret \n", " spaced s3cret "),
        ] {
            let path = file_with(dir.path(), bytes, 0o600);
            assert_eq!(read_password(&path).expect("read").as_str(), password);
            std::fs::remove_file(path).expect("rm");
        }
        let read_only = file_with(dir.path(), b"s3cret\n", 0o400);
        assert_eq!(read_password(&read_only).expect("0400").as_str(), "s3cret");
    }

    #[test]
    fn loose_empty_or_odd_files_are_refused_without_their_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (bytes, mode, reason) in [
            (&b"xq7-secret\n"[..], 0o640, "has mode 0640; only its owner"),
            (b"xq7-secret\n", 0o604, "has mode 0604"),
            (b"\n", 0o600, "is empty"),
            (b"", 0o600, "is empty"),
            (b"xq7-secret\n\n", 0o600, "more than one line"),
            (b"xq7\0secret", 0o600, "more than one line"),
            (b"xq7-\xff\n", 0o600, "not UTF-8"),
            (&[b'x'; 1025][..], 0o600, "more than 1024 bytes"),
        ] {
            let path = file_with(dir.path(), bytes, mode);
            let message = read_password(&path).expect_err(reason);
            assert!(message.contains(reason), "{message}");
            assert!(!message.contains("xq7"), "{message}");
            std::fs::remove_file(path).expect("rm");
        }
        let missing = read_password(&dir.path().join("missing")).expect_err("missing");
        assert!(missing.contains("cannot open it"), "{missing}");
        let directory = read_password(dir.path()).expect_err("a directory");
        assert!(directory.contains("not a regular file"), "{directory}");
    }

    #[test]
    fn a_fifo_is_refused_without_waiting() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("fifo");
        let mkfifo = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&fifo)
            .status();
        assert!(
            mkfifo.is_ok_and(|s| s.success()),
            "mkfifo {}",
            fifo.display()
        );
        let message = read_password(&fifo).expect_err("a FIFO");
        assert!(message.contains("not a regular file"), "{message}");
    }
}
