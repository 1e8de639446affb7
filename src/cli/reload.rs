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
use std::path::PathBuf;
use std::time::Duration;

/// What a reload watches and what it saw last.
struct Watched {
    files: Vec<PathBuf>,
    /// Of every file's contents or metadata, and of each directory's own
    /// metadata: taken at every look.
    fingerprint: u64,
    /// Of the entries of the directories among `files`: taken at every
    /// [`LOOKS_PER_ENTRY_SCAN`]th look only.
    entries_fingerprint: u64,
    /// Looks since the entries were last scanned.
    looks_since_scan: u32,
}

impl Watched {
    fn new(config_file: Option<&PathBuf>, config: &Config, env: Env<'_>) -> Watched {
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
        Watched {
            fingerprint: fingerprint(&files),
            entries_fingerprint: entries_fingerprint(&files),
            files,
            looks_since_scan: 0,
        }
    }

    /// Whether any file differs from the last look (and remember this one).
    fn changed(&mut self) -> bool {
        let now = fingerprint(&self.files);
        let mut changed = std::mem::replace(&mut self.fingerprint, now) != now;
        self.looks_since_scan += 1;
        if self.looks_since_scan >= LOOKS_PER_ENTRY_SCAN {
            self.looks_since_scan = 0;
            let entries = entries_fingerprint(&self.files);
            changed |= std::mem::replace(&mut self.entries_fingerprint, entries) != entries;
        }
        changed
    }
}

/// How often the entries of a watched directory (`SSL_CERT_DIR`) are
/// looked at one by one, in looks: at the default 2 s a look, every
/// minute. The directory's own times, taken at every look, change when an
/// entry is added, removed or renamed over, which is how certificates are
/// rotated (`update-ca-certificates`, `openssl rehash`, the `..data`
/// swap of a mounted ConfigMap); only a certificate rewritten in place
/// waits for the scan (or SIGHUP). Scanning at every look cost a `stat`
/// per certificate (some 300 on a distribution's `/etc/ssl/certs`, about
/// a millisecond) on the thread that serves calls, every two seconds.
const LOOKS_PER_ENTRY_SCAN: u32 = 30;

/// Above this size a file counts by its metadata, not its contents.
const READ_WHOLE_BELOW: u64 = 64 * 1024;

/// The files' contents (or why they cannot be read), hashed. A directory
/// (`SSL_CERT_DIR`) counts by its own inode and times here, and by its
/// entries in [`entries_fingerprint`]: it may hold hundreds of
/// certificates, too many to read every few seconds. A large file (a CA bundle in `SSL_CERT_FILE`, ~200 KiB) counts by its
/// inode, size and times: hashing it every look cost more than every
/// other idle task together. The small ones (the config, keys, tokens)
/// are read whole, since two writes within one tick of the file clock
/// (a few ms) leave the same times.
fn fingerprint(files: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        // Through symlinks: a mounted Secret swaps the link to new files.
        let metadata = std::fs::metadata(file);
        if let Ok(metadata) = &metadata
            && (metadata.is_dir() || metadata.len() >= READ_WHOLE_BELOW)
        {
            (
                metadata.ino(),
                metadata.len(),
                metadata.mtime(),
                metadata.mtime_nsec(),
            )
                .hash(&mut hasher);
            (metadata.ctime(), metadata.ctime_nsec()).hash(&mut hasher);
            continue;
        }
        match std::fs::read(file) {
            Ok(bytes) => bytes.hash(&mut hasher),
            Err(error) => error.kind().hash(&mut hasher),
        }
    }
    hasher.finish()
}

/// The names, sizes and modification times of the entries of the
/// directories among `files`, hashed.
fn entries_fingerprint(files: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for dir in files.iter().filter(|file| file.is_dir()) {
        dir.hash(&mut hasher);
        directory_fingerprint(dir, &mut hasher);
    }
    hasher.finish()
}

fn directory_fingerprint(dir: &std::path::Path, hasher: &mut DefaultHasher) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut seen: Vec<(std::ffi::OsString, u64, Option<std::time::SystemTime>)> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            // Through symlinks, as the certificates are read.
            let metadata = std::fs::metadata(entry.path()).ok();
            (
                entry.file_name(),
                metadata.as_ref().map_or(0, std::fs::Metadata::len),
                metadata.and_then(|metadata| metadata.modified().ok()),
            )
        })
        .collect();
    seen.sort();
    seen.hash(hasher);
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
    let mut watched = Watched::new(config_file.as_ref(), first, &process_env);
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
            } => "SIGHUP",
            _ = tick.tick(), if interval.is_some() => {
                if !watched.changed() {
                    continue;
                }
                "a watched file changed"
            }
        };
        let config = match load() {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(
                    reason,
                    "config reload rejected, still serving the previous config: {error:#}"
                );
                continue;
            }
        };
        match running.reload(&config, &process_env) {
            Ok(()) => {
                tracing::info!(
                    reason,
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
                watched = Watched::new(config_file.as_ref(), &config, &process_env);
            }
            Err(error) => {
                tracing::error!(
                    reason,
                    "config reload rejected, still serving the previous config: {error:#}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
