use super::*;
use std::time::SystemTime;

fn watching(files: Vec<PathBuf>) -> Watched {
    Watched {
        fingerprint: fingerprint(&files),
        entries_fingerprint: entries_fingerprint(&files),
        files,
        looks_since_scan: 0,
    }
}

/// Sets a file's modification time, so that a rewrite shows even within
/// one tick of the file clock.
fn touch(path: &std::path::Path, seconds_after_epoch: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds_after_epoch))
        .unwrap();
}

#[test]
fn a_certificate_added_to_a_watched_directory_shows_at_the_next_look() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.pem"), "first").unwrap();
    let mut watched = watching(vec![dir.path().to_owned()]);
    assert!(!watched.changed());
    std::fs::write(dir.path().join("b.pem"), "second").unwrap();
    assert!(watched.changed(), "added");
    assert!(!watched.changed(), "seen once");
    std::fs::remove_file(dir.path().join("a.pem")).unwrap();
    assert!(watched.changed(), "removed");
}

#[test]
fn a_certificate_rewritten_in_place_shows_within_one_scan_of_the_entries() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = dir.path().join("a.pem");
    std::fs::write(&certificate, "first").unwrap();
    touch(&certificate, 1_000);
    let mut watched = watching(vec![dir.path().to_owned()]);
    std::fs::write(&certificate, "again").unwrap();
    touch(&certificate, 2_000);
    (1..=LOOKS_PER_ENTRY_SCAN)
        .find(|_| watched.changed())
        .expect("the rewrite is seen by the scan");
    assert!(
        (0..2 * LOOKS_PER_ENTRY_SCAN).all(|_| !watched.changed()),
        "seen once"
    );
}

#[test]
fn a_small_file_counts_by_its_contents_and_a_missing_one_by_its_absence() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-one").unwrap();
    touch(&key, 1_000);
    let mut watched = watching(vec![key.clone()]);
    assert!(!watched.changed());
    // Same size, same time: only the contents differ.
    std::fs::write(&key, "sk-two").unwrap();
    touch(&key, 1_000);
    assert!(watched.changed(), "rewritten");
    std::fs::remove_file(&key).unwrap();
    assert!(watched.changed(), "removed");
    assert!(!watched.changed(), "still missing");
}
