//! The directory a Unix socket is bound in (or the ledger is kept in),
//! made if missing and checked before use: whoever may replace the socket
//! file receives the app's prompts.
//!
//! The rule, for the socket's directory and every directory above it
//! (symbolic links resolved):
//! - its owner is root or this process's effective uid; any other owner
//!   could swap the socket;
//! - if group or others may write in it, it needs the sticky bit (as
//!   `/tmp` has: others may add entries but not remove or rename ours), or
//!   must be a mount point. A Kubernetes `emptyDir` is root-owned, mode
//!   0777 (02777 with an `fsGroup`) without the sticky bit, and mounted:
//!   only the pod's containers that mount the volume can write in it, the
//!   app among them, so it is accepted as it is. The same mode on a plain
//!   directory of a shared machine lets every local user swap the socket,
//!   and is refused.
//!
//! A directory the sidecar makes gets the configured mode (0700 by
//! default: only this uid may connect), whatever the umask.

use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Owner, mode and mount of one directory on the way to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirFacts {
    pub owner: u32,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// The root of a mounted filesystem (a volume).
    pub mount_point: bool,
}

/// What makes a directory unsafe for the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    OwnedByAnotherUser,
    WritableByOthers,
}

/// The rule of the module doc for one directory, for a process running
/// as `uid`.
pub fn judge(facts: DirFacts, uid: u32) -> Result<(), Problem> {
    if facts.owner != 0 && facts.owner != uid {
        return Err(Problem::OwnedByAnotherUser);
    }
    let writable_by_others = facts.mode & 0o022 != 0;
    let sticky = facts.mode & 0o1000 != 0;
    if writable_by_others && !sticky && !facts.mount_point {
        return Err(Problem::WritableByOthers);
    }
    Ok(())
}

/// What the directory holds: the same rule keeps both from another user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A Unix socket the app connects to.
    Socket,
    /// The usage ledger (who called, which models, what it cost).
    Ledger,
    /// The caller and admin tokens the sidecar writes itself.
    Token,
}

impl Purpose {
    fn noun(self) -> &'static str {
        match self {
            Purpose::Socket => "socket directory",
            Purpose::Ledger => "ledger directory",
            Purpose::Token => "token directory",
        }
    }

    fn harm(self) -> &'static str {
        match self {
            Purpose::Socket => "replace the socket and receive the app's prompts",
            Purpose::Ledger => "replace or read the usage ledger",
            Purpose::Token => "replace the caller token and spend the provider keys",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Purpose::Socket => "another socket path (--uds, [server] uds)",
            Purpose::Ledger => "another ledger path (--ledger, [ledger] path)",
            Purpose::Token => {
                "another token path ([auth] token_file) or a token of your own ([auth.tokens], LLM_SIDECAR_TOKEN)"
            }
        }
    }
}

/// Why the directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SocketDirError {
    #[error("cannot create the {} {}: {source}", purpose.noun(), dir.display())]
    Create {
        purpose: Purpose,
        dir: PathBuf,
        source: io::Error,
    },
    #[error("cannot inspect {}, on the way to the {}: {source}", dir.display(), purpose.noun())]
    Inspect {
        purpose: Purpose,
        dir: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Unsafe(Box<UnsafeDir>),
}

/// A directory that fails [`judge`], with what to do about it.
#[derive(Debug)]
pub struct UnsafeDir {
    /// The directory that failed: the socket's own (`above` false) or one
    /// above it.
    pub dir: PathBuf,
    pub above: bool,
    /// The socket's (or ledger's) directory.
    pub socket_dir: PathBuf,
    pub purpose: Purpose,
    pub facts: DirFacts,
    pub problem: Problem,
    pub uid: u32,
}

impl fmt::Display for UnsafeDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = self.dir.display();
        let (owner, mode) = (self.facts.owner, self.facts.mode);
        write!(f, "refusing the {} ", self.purpose.noun())?;
        if self.above {
            write!(
                f,
                "{}: {dir} above it (owner uid {owner}, mode {mode:04o}) ",
                self.socket_dir.display()
            )?;
        } else {
            write!(f, "{dir} (owner uid {owner}, mode {mode:04o}): it ")?;
        }
        match self.problem {
            Problem::OwnedByAnotherUser => write!(
                f,
                "belongs to another user (this process runs as uid {uid}), who could {harm}. \
                 Use a directory owned by uid {uid} or by root (`chown {uid} {dir}`)",
                uid = self.uid,
                harm = self.purpose.harm(),
            )?,
            Problem::WritableByOthers => write!(
                f,
                "is writable by group or others without the sticky bit, so any of them could \
                 {harm}. Fix it with `chmod go-w {dir}` (or `chmod +t {dir}`)",
                harm = self.purpose.harm(),
            )?,
        }
        write!(f, ", or choose {}", self.purpose.setting())
    }
}

/// Makes `dir` (and missing parents) with `create_mode` if it is missing,
/// then checks it and every directory above it by [`judge`].
pub fn prepare(dir: &Path, create_mode: u32, purpose: Purpose) -> Result<(), SocketDirError> {
    create(dir, create_mode, purpose)?;
    let inspect = |dir: &Path| {
        let dir = dir.to_owned();
        move |source| SocketDirError::Inspect {
            purpose,
            dir,
            source,
        }
    };
    let real = dir.canonicalize().map_err(inspect(dir))?;
    let uid = rustix::process::geteuid().as_raw();
    for (depth, ancestor) in real.ancestors().enumerate() {
        let facts = facts_of(ancestor).map_err(inspect(ancestor))?;
        if let Err(problem) = judge(facts, uid) {
            return Err(SocketDirError::Unsafe(Box::new(UnsafeDir {
                dir: ancestor.to_owned(),
                above: depth > 0,
                socket_dir: dir.to_owned(),
                purpose,
                facts,
                problem,
                uid,
            })));
        }
    }
    Ok(())
}

fn create(dir: &Path, mode: u32, purpose: Purpose) -> Result<(), SocketDirError> {
    if dir.is_dir() {
        return Ok(());
    }
    let error = |source| SocketDirError::Create {
        purpose,
        dir: dir.to_owned(),
        source,
    };
    // Not `recursive`: an existing directory here (made by someone else
    // since the look above) must fail, not be taken as ours; the check
    // that follows judges whatever is there.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        create(parent, mode, purpose)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            // The umask may have taken bits the configuration asked for.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(error)
        }
        Err(source) if source.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(error(source)),
    }
}

/// Owner, mode and whether `dir` is a mount point: `statx`'s mount-root
/// attribute where the kernel reports it (Linux 5.8), else a device
/// different from the parent's.
pub fn facts_of(dir: &Path) -> io::Result<DirFacts> {
    let metadata = std::fs::metadata(dir)?;
    Ok(DirFacts {
        owner: metadata.uid(),
        mode: metadata.mode() & 0o7777,
        mount_point: is_mount_point(dir, &metadata)?,
    })
}

fn is_mount_point(dir: &Path, metadata: &std::fs::Metadata) -> io::Result<bool> {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    if let Ok(stat) = statx(CWD, dir, AtFlags::empty(), StatxFlags::BASIC_STATS)
        && stat
            .stx_attributes_mask
            .contains(StatxAttributes::MOUNT_ROOT)
    {
        return Ok(stat.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
    }
    match dir.parent() {
        Some(parent) => Ok(std::fs::metadata(parent)?.dev() != metadata.dev()),
        None => Ok(true),
    }
}

#[cfg(test)]
mod tests;
