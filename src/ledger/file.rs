//! The ledger file as the writer holds it: both connections (the writer's
//! and the queries'), and which file under the configured path they have
//! open, so that a file deleted or replaced under the sidecar (`rm`, or a
//! logrotate-style `mv` and a new file) is noticed before the next batch
//! and the path is opened again, its schema created, instead of rows going
//! on into a file nobody can find.

use super::counters::Counters;
use super::{LedgerError, schema};
use rusqlite::Connection;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The queries' connection, shared with `Ledger`; `None` while the file is
/// being opened again, or when it could not be.
pub(super) type SharedReader = Arc<Mutex<Option<Connection>>>;

/// A file's identity on its filesystem: the same path naming another
/// `(device, inode)` is another file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &Path) -> Option<FileId> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileId {
        dev: metadata.dev(),
        ino: metadata.ino(),
    })
}

/// SQLite's file beside the database: `-wal` or `-shm`.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The files the connections have open.
#[derive(Debug, Clone, Copy, Default)]
struct Opened {
    db: Option<FileId>,
    wal: Option<FileId>,
    shm: Option<FileId>,
}

impl Opened {
    /// What `path` and its `-wal` and `-shm` name now.
    fn at(path: &Path) -> Opened {
        Opened {
            db: file_id(path),
            wal: file_id(&beside(path, "-wal")),
            shm: file_id(&beside(path, "-shm")),
        }
    }
}

pub(super) struct LedgerFile {
    path: PathBuf,
    /// `None` after the file went away and could not be opened again; each
    /// batch tries once more.
    writer: Option<Connection>,
    reader: SharedReader,
    /// What the path (and its `-wal`, `-shm`) named when the connections
    /// were opened.
    opened: Opened,
}

impl LedgerFile {
    /// Opens the writer's connection (creating the file and its schema if
    /// needed), then the queries' one.
    pub(super) fn open(path: &Path) -> Result<LedgerFile, LedgerError> {
        let writer = schema::open_writer(path)?;
        let reader = schema::open_reader(path)?;
        let opened = Opened::at(path);
        Ok(LedgerFile {
            path: path.to_owned(),
            writer: Some(writer),
            reader: Arc::new(Mutex::new(Some(reader))),
            opened,
        })
    }

    pub(super) fn reader(&self) -> SharedReader {
        Arc::clone(&self.reader)
    }

    /// The writer's connection as it is, for the idle retention pass.
    pub(super) fn current(&self) -> Option<&Connection> {
        self.writer.as_ref()
    }

    /// The writer's connection to the file the path names now: opened
    /// again first when that file was deleted or replaced since. `Err` says
    /// why there is none (the rows of this batch are then lost, and
    /// counted).
    pub(super) fn connection(&mut self, counters: &Counters) -> Result<&mut Connection, String> {
        let now = file_id(&self.path);
        if self.writer.is_none() || now.is_none() || now != self.opened.db {
            self.reopen(now.is_some(), counters)?;
        }
        self.writer
            .as_mut()
            .ok_or_else(|| "the ledger file is not open".to_owned())
    }

    /// Closes the connection to a file moved or deleted under it. Its last
    /// commits are in the WAL, which is still at the path: checkpointed
    /// first, they land in the file they belong to (the rotated one).
    /// SQLite leaves the `-wal` and `-shm` of a moved file where they are
    /// when it closes; a connection opened at the path would read them as
    /// its own, so they go too, when they are still the ones it had open.
    fn close_moved(&mut self, writer: Connection) {
        if let Err(error) = writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(
                path = %self.path.display(),
                "ledger: cannot checkpoint the old file's last rows into it: {error}"
            );
        }
        drop(writer);
        for (suffix, opened) in [("-wal", self.opened.wal), ("-shm", self.opened.shm)] {
            let side = beside(&self.path, suffix);
            if opened.is_some() && file_id(&side) == opened {
                let _ = std::fs::remove_file(&side);
            }
        }
        self.opened = Opened::default();
    }

    fn reopen(&mut self, replaced: bool, counters: &Counters) -> Result<(), String> {
        let was_open = self.writer.is_some();
        // Queries wait (or fail, see `Ledger::read`) until both are open.
        let shared = Arc::clone(&self.reader);
        let mut reader = shared.lock().unwrap_or_else(PoisonError::into_inner);
        drop(reader.take());
        if let Some(writer) = self.writer.take() {
            self.close_moved(writer);
        }
        let writer = schema::open_writer(&self.path).map_err(|error| error.to_string())?;
        *reader = Some(schema::open_reader(&self.path).map_err(|error| error.to_string())?);
        self.opened = Opened::at(&self.path);
        self.writer = Some(writer);
        counters.add_reopened();
        if was_open {
            tracing::warn!(
                path = %self.path.display(),
                "ledger: the file was {} while open; opened the path again (schema created if \
                 new), the next rows go there",
                if replaced { "replaced" } else { "deleted" }
            );
        } else {
            tracing::info!(path = %self.path.display(), "ledger: the file is open again");
        }
        Ok(())
    }
}
