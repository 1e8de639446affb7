//! Binding the Unix socket safely. Its directory is made if missing and
//! checked first ([`socket_dir`](super::socket_dir)). A socket file left
//! behind by a crash is replaced; one that a live process still answers on
//! is not stolen; a path that is not a socket is never deleted.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{path}: another process is serving on this socket; stop it or choose another path")]
    InUse { path: String },
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: String },
    #[error(transparent)]
    Directory(#[from] super::socket_dir::SocketDirError),
    #[error("{path}: {action}: {source}")]
    Io {
        path: String,
        action: &'static str,
        source: io::Error,
    },
}

/// Binds `path` with the socket file mode `mode`; a missing directory is
/// made with `dir_mode`.
pub async fn bind_uds(path: &Path, mode: u32, dir_mode: u32) -> Result<UnixListener, BindError> {
    let shown = path.display().to_string();
    let io_error = |action: &'static str| {
        let path = shown.clone();
        move |source| BindError::Io {
            path,
            action,
            source,
        }
    };
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    super::socket_dir::prepare(parent, dir_mode, super::socket_dir::Purpose::Socket)?;
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.file_type().is_socket() => {
            return Err(BindError::NotASocket { path: shown });
        }
        Ok(_) => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(BindError::InUse { path: shown });
            }
            // Nobody answers: the file is stale, left by a process that died.
            std::fs::remove_file(path).map_err(io_error("cannot remove the stale socket"))?;
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error("cannot inspect the socket path")(error)),
    }
    let listener = UnixListener::bind(path).map_err(io_error("cannot bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_error("cannot set the socket mode"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_is_not_stolen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = bind_uds(&path, 0o600, 0o700).await.unwrap();
        assert!(matches!(
            bind_uds(&path, 0o600, 0o700).await,
            Err(BindError::InUse { .. })
        ));
        drop(live); // the file stays behind, like after a crash
        assert!(path.exists());
        let _again = bind_uds(&path, 0o600, 0o700).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn a_regular_file_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, "data").unwrap();
        assert!(matches!(
            bind_uds(&path, 0o600, 0o700).await,
            Err(BindError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }
}
