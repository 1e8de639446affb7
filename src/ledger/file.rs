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

pub(super) struct LedgerFile {
    path: PathBuf,
    /// `None` after the file went away and could not be opened again; each
    /// batch tries once more.
    writer: Option<Connection>,
    reader: SharedReader,
    /// What `path` named when the connections were opened.
    opened: Option<FileId>,
}

impl LedgerFile {
    /// Opens the writer's connection (creating the file and its schema if
    /// needed), then the queries' one.
    pub(super) fn open(path: &Path) -> Result<LedgerFile, LedgerError> {
        let writer = schema::open_writer(path)?;
        let opened = file_id(path);
        let reader = schema::open_reader(path)?;
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
        if self.writer.is_none() || now.is_none() || now != self.opened {
            self.reopen(now.is_some(), counters)?;
        }
        self.writer
            .as_mut()
            .ok_or_else(|| "the ledger file is not open".to_owned())
    }

    fn reopen(&mut self, replaced: bool, counters: &Counters) -> Result<(), String> {
        let was_open = self.writer.is_some();
        // Both old connections close before the path is opened again: the
        // last one to close checkpoints its WAL into the file it had open
        // (moved or deleted) and removes the `-wal` and `-shm` files at the
        // path, which a new connection would otherwise read as its own.
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        drop(reader.take());
        drop(self.writer.take());
        self.opened = None;
        let writer = schema::open_writer(&self.path).map_err(|error| error.to_string())?;
        self.opened = file_id(&self.path);
        *reader = Some(schema::open_reader(&self.path).map_err(|error| error.to_string())?);
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
