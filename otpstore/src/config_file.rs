//! Reading `otpd.toml` from disk: the file's mode is checked before its
//! text is parsed (by [`Config::parse`], which does no I/O).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use otpcore::config::{Config, ConfigError};
use zeroize::Zeroizing;

/// Reads and checks the configuration at `path`. A file that others may
/// write is refused whatever it holds (anyone could point otpd elsewhere);
/// one that others may read is refused when it holds secrets (RADIUS
/// secrets, a database password in the URL).
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mode = file.metadata().map_err(read)?.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            message: format!(
                "the file is world-writable, so any local user could change it; \
                 chmod o-w {}",
                path.display()
            ),
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(read)?;
    Config::parse(&text, path, mode & 0o004 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED_EXAMPLE: &str = include_str!("../../conf/otpd.toml");

    #[test]
    fn world_writable_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let minimal = "service_id = \"X\"\nissuer = \"I\"\nstate_dir = \"/tmp/x\"\n";
        for (text, mode) in [(minimal, 0o666), (minimal, 0o602), (SHIPPED_EXAMPLE, 0o602)] {
            let path = dir.path().join("otpd.toml");
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let message = load_config(&path)
                .expect_err(&format!("mode {mode:o}"))
                .to_string();
            assert!(message.contains("world-writable"), "{message}");
            assert!(
                message.contains(&format!("chmod o-w {}", path.display())),
                "{message}"
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
            assert!(load_config(&path).is_ok(), "mode 640");
        }
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let message = load_config(Path::new("/nonexistent/otpd.toml"))
            .expect_err("missing")
            .to_string();
        assert!(message.contains("/nonexistent/otpd.toml"), "{message}");
    }
}
