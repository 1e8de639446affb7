use super::*;
use std::time::SystemTime;

/// Sets a file's modification time, so that a rewrite shows even within
/// one tick of the file clock.
fn touch(path: &Path, seconds_after_epoch: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds_after_epoch))
        .unwrap();
}

/// Waits out the file clock's tick (a jiffy, at most 10 ms): times the
/// kernel sets itself (a directory's when an entry is added, a `chmod`'s
/// change time) are taken from a clock that moves only that often.
fn after_a_clock_tick() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Looks until one finds a change, at most one scan's worth.
fn looks_until_changed(watched: &mut Watched) -> Option<u32> {
    (1..=LOOKS_PER_ENTRY_SCAN).find(|_| watched.changed().is_some())
}

fn quiet_for_two_scans(watched: &mut Watched) -> bool {
    (0..2 * LOOKS_PER_ENTRY_SCAN).all(|_| watched.changed().is_none())
}

#[test]
fn a_certificate_added_to_a_watched_directory_shows_at_the_next_look() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.pem"), "first").unwrap();
    let mut watched = Watched::new(vec![dir.path().to_owned()]);
    assert_eq!(watched.changed(), None);
    after_a_clock_tick();
    std::fs::write(dir.path().join("b.pem"), "second").unwrap();
    assert_eq!(watched.changed().as_deref(), Some(dir.path()), "added");
    // One change, one reload: the scans that follow find nothing new.
    assert!(quiet_for_two_scans(&mut watched), "seen once");
    after_a_clock_tick();
    std::fs::remove_file(dir.path().join("a.pem")).unwrap();
    assert!(watched.changed().is_some(), "removed");
}

#[test]
fn a_certificate_written_just_after_it_appeared_shows_at_the_look_after() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = dir.path().join("a.pem");
    let mut watched = Watched::new(vec![dir.path().to_owned()]);
    after_a_clock_tick();
    std::fs::write(&certificate, "").unwrap();
    touch(&certificate, 1_000);
    assert!(watched.changed().is_some(), "appeared, empty");
    // Written after that look: the directory's own times stay the same.
    std::fs::write(&certificate, "the certificate").unwrap();
    touch(&certificate, 2_000);
    assert!(watched.changed().is_some(), "written");
}

/// A directory holding a certificate, watched, and the certificate
/// rewritten in place since (same name, so the directory's own times stay).
fn watched_directory_with_a_rewritten_certificate() -> (tempfile::TempDir, Watched) {
    let dir = tempfile::tempdir().unwrap();
    let certificate = dir.path().join("a.pem");
    std::fs::write(&certificate, "first").unwrap();
    touch(&certificate, 1_000);
    let watched = Watched::new(vec![dir.path().to_owned()]);
    std::fs::write(&certificate, "again").unwrap();
    touch(&certificate, 2_000);
    (dir, watched)
}

#[test]
fn a_certificate_rewritten_in_place_shows_within_one_scan_of_the_entries() {
    let (_dir, mut watched) = watched_directory_with_a_rewritten_certificate();
    looks_until_changed(&mut watched).expect("the rewrite is seen by the scan");
    assert!(quiet_for_two_scans(&mut watched), "seen once");
}

#[test]
fn a_certificate_made_readable_again_shows_within_one_scan() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let certificate = dir.path().join("a.pem");
    std::fs::write(&certificate, "the certificate").unwrap();
    let mode = |mode| std::fs::set_permissions(&certificate, std::fs::Permissions::from_mode(mode));
    mode(0o000).unwrap();
    let mut watched = Watched::new(vec![dir.path().to_owned()]);
    after_a_clock_tick();
    // Only the change time moves.
    mode(0o644).unwrap();
    looks_until_changed(&mut watched).expect("the chmod is seen by the scan");
}

#[test]
fn a_change_made_while_a_reload_loads_shows_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-one").unwrap();
    let mut watched = Watched::new(vec![key.clone()]);
    std::fs::write(&key, "sk-two").unwrap();
    assert_eq!(watched.changed(), Some(key.clone()));
    // The reload reads the files now; meanwhile the key changes again.
    std::fs::write(&key, "sk-three").unwrap();
    watched.rewatch(vec![key.clone()]);
    assert_eq!(watched.changed(), Some(key), "the change during the load");
    assert_eq!(watched.changed(), None);
}

#[test]
fn a_path_the_new_config_names_is_watched_from_the_reload_on() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::write(&old, "sk-old").unwrap();
    std::fs::write(&new, "sk-new").unwrap();
    let mut watched = Watched::new(vec![old.clone()]);
    watched.rewatch(vec![new.clone()]);
    assert_eq!(
        watched.changed(),
        None,
        "the new file as the reload found it"
    );
    std::fs::write(&old, "sk-old, changed").unwrap();
    assert_eq!(watched.changed(), None, "no longer watched");
    std::fs::write(&new, "sk-new, changed").unwrap();
    assert_eq!(watched.changed(), Some(new));
}

#[test]
fn a_small_file_counts_by_its_contents_and_a_missing_one_by_its_absence() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-one").unwrap();
    touch(&key, 1_000);
    let mut watched = Watched::new(vec![key.clone()]);
    assert_eq!(watched.changed(), None);
    // Same size, same time: only the contents differ.
    std::fs::write(&key, "sk-two").unwrap();
    touch(&key, 1_000);
    assert_eq!(watched.changed(), Some(key.clone()), "rewritten");
    std::fs::remove_file(&key).unwrap();
    assert_eq!(watched.changed(), Some(key.clone()), "removed");
    assert_eq!(watched.changed(), None, "still missing");
}

#[test]
fn sighup_takes_the_entries_as_they_are_before_it_loads() {
    let (_dir, mut watched) = watched_directory_with_a_rewritten_certificate();
    // SIGHUP reloads with the rewrite; the scan must not reload again.
    watched.refresh();
    assert!(quiet_for_two_scans(&mut watched));
}
