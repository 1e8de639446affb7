//! Hot reload. SIGHUP, or a change to the config file, to any API key,
//! header or TLS file it names, to a caller or admin token file, or to
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`, makes the sidecar load the config
//! again and serve new calls by it; calls under way finish as they began.
//! A config that does not load is rejected with a log line naming the key
//! and the file, and the one in force keeps serving.
//!
//! Files are polled (a small read or a `stat` every
//! `server.watch_interval_ms`, a directory's entries every 30th time)
//! rather than watched with inotify: Kubernetes updates mounted ConfigMaps
//! and Secrets by swapping a `..data` symlink in the directory, which a
//! watch on the file itself misses, and a poll of the path sees whatever
//! it resolves to now.

use crate::config::{Config, Env, HeaderValueSource, process_env};
use crate::server::Running;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a reload watches and what it saw last, path by path.
struct Watched {
    files: Vec<WatchedFile>,
    /// Looks since the directories' entries were last scanned.
    looks_since_scan: u32,
}

/// One watched path and what it looked like last.
struct WatchedFile {
    path: PathBuf,
    /// Its contents or metadata; a directory's own inode and times.
    seen: u64,
    /// A directory's entries one by one ([`LOOKS_PER_ENTRY_SCAN`]); `None`
    /// for a file.
    entries: Option<u64>,
}

impl WatchedFile {
    fn new(path: PathBuf) -> WatchedFile {
        WatchedFile {
            seen: look(&path).0,
            entries: entries_fingerprint(&path),
            path,
        }
    }
}

impl Watched {
    fn new(paths: Vec<PathBuf>) -> Watched {
        Watched {
            files: paths.into_iter().map(WatchedFile::new).collect(),
            looks_since_scan: 0,
        }
    }

    /// Watches `paths` (those a newly loaded config names), keeping what
    /// was last seen of the ones watched before: a file changed while that
    /// config was loading differs from it, and shows at the next look (a
    /// baseline taken after the reload would hide it for good).
    fn rewatch(&mut self, paths: Vec<PathBuf>) {
        let mut before = std::mem::take(&mut self.files);
        self.files = paths
            .into_iter()
            .map(
                |path| match before.iter().position(|file| file.path == path) {
                    Some(at) => before.swap_remove(at),
                    None => WatchedFile::new(path),
                },
            )
            .collect();
    }

    /// Looks at everything again, the directories' entries too: the
    /// baseline before a reload SIGHUP asked for.
    fn refresh(&mut self) {
        for file in &mut self.files {
            *file = WatchedFile::new(std::mem::take(&mut file.path));
        }
        self.looks_since_scan = 0;
    }

    /// The first path that differs from the last look, if any (and
    /// remember this look for every path).
    fn changed(&mut self) -> Option<PathBuf> {
        self.looks_since_scan += 1;
        let scan = self.looks_since_scan >= LOOKS_PER_ENTRY_SCAN;
        if scan {
            self.looks_since_scan = 0;
        }
        let mut first = None;
        let mut directory_changed = false;
        for file in &mut self.files {
            let (seen, is_dir) = look(&file.path);
            let mut changed = std::mem::replace(&mut file.seen, seen) != seen;
            directory_changed |= changed && is_dir;
            // A directory that changed is scanned now as well: the entries
            // this reload will read are the baseline of the next scan.
            if scan || (changed && is_dir) {
                let entries = entries_fingerprint(&file.path);
                changed |= std::mem::replace(&mut file.entries, entries) != entries;
            }
            if changed && first.is_none() {
                first = Some(file.path.clone());
            }
        }
        if directory_changed {
            // An entry that just appeared may be written after it
            // appeared (a copy in progress): scan at the next look.
            self.looks_since_scan = LOOKS_PER_ENTRY_SCAN - 1;
        }
        first
    }
}

/// Every file a reload depends on: the config file, the key, header, TLS
/// and token files the config names, and `SSL_CERT_FILE` / `SSL_CERT_DIR`.
fn watched_paths(config_file: Option<&PathBuf>, config: &Config, env: Env<'_>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = config_file.into_iter().cloned().collect();
    for provider in &config.providers {
        let sources = std::iter::once(&provider.api_key).chain(&provider.more_api_keys);
        files.extend(sources.filter_map(|source| source.file.clone()));
        let header_files = provider
            .headers
            .iter()
            .filter_map(|header| match &header.value {
                HeaderValueSource::Loaded(source) => source.file.clone(),
                HeaderValueSource::Inline(_) => None,
            });
        files.extend(header_files);
    }
    files.extend(config.tls_files());
    files.extend(crate::auth::token_files(config, env));
    files.extend(crate::upstream::tls_env_paths(env));
    files
}

/// How often the entries of a watched directory (`SSL_CERT_DIR`) are
/// looked at one by one, in looks: at the default 2 s a look, every
/// minute. The directory's own times, taken at every look, change when an
/// entry is added, removed or renamed over, which is how certificates are
/// rotated (`update-ca-certificates`, `openssl rehash`, the `..data`
/// swap of a ConfigMap mounted there); a certificate rewritten in place,
/// or one the directory links to elsewhere, waits for the scan (or
/// SIGHUP). Scanning at every look cost a `stat` per certificate (some
/// 300 on a distribution's `/etc/ssl/certs`, about a millisecond) on the
/// thread that serves calls, every two seconds.
const LOOKS_PER_ENTRY_SCAN: u32 = 30;

/// Above this size a file counts by its metadata, not its contents.
const READ_WHOLE_BELOW: u64 = 64 * 1024;

/// A file's contents (or why it cannot be read), hashed, and whether it is
/// a directory. A directory (`SSL_CERT_DIR`) counts by its own inode and
/// times here, and by its entries in [`entries_fingerprint`]: it may hold
/// hundreds of certificates, too many to read every few seconds. A large
/// file (a CA bundle in `SSL_CERT_FILE`, ~200 KiB) counts by its inode,
/// size and times: hashing it every look cost more than every other idle
/// task together. The small ones (the config, keys, tokens) are read
/// whole, since two writes within one tick of the file clock (a few ms)
/// leave the same times.
fn look(file: &Path) -> (u64, bool) {
    use std::os::unix::fs::MetadataExt;
    let mut hasher = DefaultHasher::new();
    // Through symlinks: a mounted Secret swaps the link to new files.
    if let Ok(metadata) = std::fs::metadata(file)
        && (metadata.is_dir() || metadata.len() >= READ_WHOLE_BELOW)
    {
        (
            metadata.ino(),
            metadata.len(),
            metadata.mtime(),
            metadata.mtime_nsec(),
            metadata.ctime(),
            metadata.ctime_nsec(),
        )
            .hash(&mut hasher);
        return (hasher.finish(), metadata.is_dir());
    }
    match std::fs::read(file) {
        Ok(bytes) => bytes.hash(&mut hasher),
        Err(error) => error.kind().hash(&mut hasher),
    }
    (hasher.finish(), false)
}

/// An entry's size, modification time and change time (seconds and
/// nanoseconds each).
type EntryFacts = (u64, i64, i64, i64, i64);

/// The names, sizes, and modification and change times of a directory's
/// entries (through symlinks, as the certificates are read), hashed;
/// `None` when `dir` is not a directory. The change time moves with a
/// `chmod`, so a certificate made readable again counts as changed.
fn entries_fingerprint(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let entries = std::fs::read_dir(dir).ok()?;
    let mut seen: Vec<(std::ffi::OsString, Option<EntryFacts>)> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            let metadata = std::fs::metadata(entry.path()).ok();
            let facts = metadata.map(|metadata| {
                (
                    metadata.len(),
                    metadata.mtime(),
                    metadata.mtime_nsec(),
                    metadata.ctime(),
                    metadata.ctime_nsec(),
                )
            });
            (entry.file_name(), facts)
        })
        .collect();
    seen.sort();
    let mut hasher = DefaultHasher::new();
    seen.hash(&mut hasher);
    Some(hasher.finish())
}

/// Reloads on SIGHUP (when `hangup` is listened for) and on file changes
/// until the returned future is dropped. `load` reads the config as `serve`
/// did (file plus flags).
pub async fn watch<L>(
    running: &Running,
    config_file: Option<PathBuf>,
    first: &Config,
    mut hangup: Option<tokio::signal::unix::Signal>,
    load: L,
) where
    L: Fn() -> anyhow::Result<Config>,
{
    let interval = first.server.watch_interval;
    let mut watched = Watched::new(watched_paths(config_file.as_ref(), first, &process_env));
    let mut server = first.server.clone();
    let mut tick = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reason = tokio::select! {
            Some(()) = async {
                match hangup.as_mut() {
                    Some(hangup) => hangup.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                watched.refresh();
                "SIGHUP".to_owned()
            }
            _ = tick.tick(), if interval.is_some() => {
                let Some(file) = watched.changed() else {
                    continue;
                };
                format!("{} changed", file.display())
            }
        };
        let config = match load() {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(
                    reason = reason.as_str(),
                    "config reload rejected, still serving the previous config: {error:#}"
                );
                continue;
            }
        };
        match running.reload(&config, &process_env) {
            Ok(()) => {
                tracing::info!(
                    reason = reason.as_str(),
                    config = %config.source,
                    providers = config.providers.len(),
                    routes = config.routes.len(),
                    "config reloaded"
                );
                if config.server != server {
                    tracing::warn!(
                        "[server] settings changed: they take effect at the next restart"
                    );
                }
                server = config.server.clone();
                watched.rewatch(watched_paths(config_file.as_ref(), &config, &process_env));
            }
            Err(error) => {
                tracing::error!(
                    reason = reason.as_str(),
                    "config reload rejected, still serving the previous config: {error:#}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
