//! The token files the sidecar writes itself when none is configured: a
//! random token, made once and kept, so the quickstart stays one command
//! and the app (or `llm-sidecar chat`, `llm-sidecar token`) reads it from
//! beside the socket.

use crate::server::socket_dir::{Purpose, prepare};
use base64::Engine as _;
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

/// What a generated token starts with, so that secret scanners and people
/// recognise one.
pub const TOKEN_PREFIX: &str = "llm-sidecar-";
/// Random bytes in a generated token (256 bits).
const TOKEN_BYTES: usize = 32;

/// The caller token file's mode: the pod's app may run as another uid in
/// the sidecar's group (Kubernetes `fsGroup`), so the group may read it.
pub const CALLER_TOKEN_MODE: u32 = 0o640;
/// The admin token file's mode: the operator is this uid.
pub const ADMIN_TOKEN_MODE: u32 = 0o600;

/// Why a token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("{0}")]
    Directory(#[from] crate::server::socket_dir::SocketDirError),
    /// Not a `#[source]`: the message says it already, and a report that
    /// walks the chain would say it twice.
    #[error("cannot read or create the token file {path}: {cause}")]
    Io { path: String, cause: io::Error },
    #[error(
        "refusing the token file {path} (mode {mode:04o}, owner uid {owner}): it must be a \
         regular file of this uid ({uid}) that others cannot read or change, or anyone who can \
         may spend the provider keys. Fix it with `chmod {want:04o} {path}` and \
         `chown {uid} {path}`, or remove it to have a new one made"
    )]
    Unsafe {
        path: String,
        mode: u32,
        owner: u32,
        want: u32,
        uid: u32,
    },
    #[error("the token file {path} is empty: remove it to have a new one made")]
    Empty { path: String },
}

/// The token in `path`, made (random, mode `mode`, its directory made and
/// checked like the socket's with `dir_mode`) when the file is missing.
/// An existing file must be a regular file (not a symlink, not a FIFO)
/// of this uid and give others no access, nor group more than `mode` does.
pub fn ensure(path: &Path, mode: u32, dir_mode: u32) -> Result<String, TokenFileError> {
    let shown = || path.display().to_string();
    let io_error = |cause| TokenFileError::Io {
        path: shown(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        prepare(dir, dir_mode, Purpose::Token)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(mut file) => {
            let token = new_token();
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io_error)?;
            return Ok(token);
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(io_error(error)),
    }
    // Opened without following a symlink and without blocking (a FIFO
    // planted at the path), then judged by what was opened: in a sticky
    // shared directory another user may create the name first.
    use rustix::fs::{Mode, OFlags};
    let opened = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| io_error(io::Error::from(errno)))?;
    let file = std::fs::File::from(opened);
    let metadata = file.metadata().map_err(io_error)?;
    let uid = rustix::process::geteuid().as_raw();
    let file_mode = metadata.mode() & 0o777;
    if !metadata.is_file() || metadata.uid() != uid || file_mode & !mode & 0o077 != 0 {
        return Err(TokenFileError::Unsafe {
            path: shown(),
            mode: file_mode,
            owner: metadata.uid(),
            want: mode,
            uid,
        });
    }
    let mut text = String::new();
    io::Read::read_to_string(&mut &file, &mut text).map_err(io_error)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty { path: shown() });
    }
    Ok(token.to_owned())
}

/// A fresh token: [`TOKEN_PREFIX`] and 256 random bits from the operating
/// system, base64url without padding (43 characters).
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    let mut token = String::from(TOKEN_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_missing_file_is_made_private_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/token");
        let made = ensure(&path, CALLER_TOKEN_MODE, 0o700).unwrap();
        assert!(made.starts_with(TOKEN_PREFIX) && made.len() == TOKEN_PREFIX.len() + 43);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, CALLER_TOKEN_MODE);
        assert_eq!(ensure(&path, CALLER_TOKEN_MODE, 0o700).unwrap(), made);
        assert_ne!(new_token(), made, "each new token is random");
    }

    #[test]
    fn a_file_others_may_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "llm-sidecar-abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = ensure(&path, CALLER_TOKEN_MODE, 0o700)
            .unwrap_err()
            .to_string();
        assert!(error.contains("chmod 0640"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            ensure(&path, CALLER_TOKEN_MODE, 0o700).unwrap(),
            "llm-sidecar-abc"
        );
        // The admin token's file may not be read by the group either.
        let error = ensure(&path, ADMIN_TOKEN_MODE, 0o700)
            .unwrap_err()
            .to_string();
        assert!(error.contains("chmod 0600"), "{error}");
    }

    #[test]
    fn a_planted_symlink_or_fifo_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("known");
        std::fs::write(&target, "00000000\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("token");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let error = ensure(&path, CALLER_TOKEN_MODE, 0o700).unwrap_err();
        assert!(matches!(error, TokenFileError::Io { .. }), "{error}");
        std::fs::remove_file(&path).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let error = ensure(&path, CALLER_TOKEN_MODE, 0o700).unwrap_err();
        assert!(matches!(error, TokenFileError::Unsafe { .. }), "{error}");
    }

    #[test]
    fn an_empty_file_is_an_error_not_an_empty_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = ensure(&path, CALLER_TOKEN_MODE, 0o700).unwrap_err();
        assert!(matches!(error, TokenFileError::Empty { .. }), "{error}");
    }
}
