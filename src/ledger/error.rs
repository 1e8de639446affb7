//! Why the ledger could not open or answer, said so an operator can act:
//! every message names the file and what to do about it.

use rusqlite::ErrorCode;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "cannot open the ledger file {}: its directory does not exist or is not writable \
         (create the directory, or point the ledger at a writable path): {source}",
        path.display()
    )]
    CannotOpen {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error(
        "the ledger file {} is not a SQLite database: move it aside or point the ledger at \
         another path ({source})",
        path.display()
    )]
    NotADatabase {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error(
        "the ledger file {} is corrupt: move it aside so a new one is created ({source})",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error(
        "the ledger file {} is read-only: make it and its directory writable ({source})",
        path.display()
    )]
    ReadOnly {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error(
        "the ledger file {} has schema version {found}, newer than version {known} that this \
         llm-sidecar knows: upgrade llm-sidecar or point the ledger at another path",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    #[error("the ledger file {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error("cannot start the ledger writer thread: {0}")]
    WriterThread(std::io::Error),

    #[error("the ledger is unavailable: {reason}")]
    Unavailable { reason: String },

    /// The fleet ledger could not answer; `target` and `reason` never hold
    /// the password.
    #[error(
        "the fleet ledger (PostgreSQL at {target}) cannot be read: {reason}. Each pod's rows \
         wait in its own ledger file and reach PostgreSQL when it is back"
    )]
    Fleet { target: String, reason: String },

    #[error("a ledger query stopped before it finished: {0}")]
    QueryTask(tokio::task::JoinError),
}

impl LedgerError {
    /// Sorts a SQLite failure on `path` into what the operator has to fix.
    pub(super) fn from_sqlite(path: &Path, source: rusqlite::Error) -> LedgerError {
        let path = path.to_owned();
        match source.sqlite_error_code() {
            Some(ErrorCode::CannotOpen) => LedgerError::CannotOpen { path, source },
            Some(ErrorCode::NotADatabase) => LedgerError::NotADatabase { path, source },
            Some(ErrorCode::DatabaseCorrupt) => LedgerError::Corrupt { path, source },
            Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
                LedgerError::ReadOnly { path, source }
            }
            _ => LedgerError::Sqlite { path, source },
        }
    }
}
