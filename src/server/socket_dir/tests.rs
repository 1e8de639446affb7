//! The rule on its own, then real directories with real owners and modes
//! (`chown` to another uid needs root, as the tests run in CI).

use super::*;
use std::process::Command;

const NOBODY: u32 = 65534;

fn facts(owner: u32, mode: u32, mount_point: bool) -> DirFacts {
    DirFacts {
        owner,
        mode,
        mount_point,
    }
}

#[test]
fn the_rule() {
    let me = 1000;
    assert_eq!(judge(facts(me, 0o700, false), me), Ok(()));
    assert_eq!(judge(facts(0, 0o755, false), me), Ok(()));
    assert_eq!(judge(facts(0, 0o1777, false), me), Ok(()), "/tmp");
    assert_eq!(
        judge(facts(NOBODY, 0o700, false), me),
        Err(Problem::OwnedByAnotherUser)
    );
    assert_eq!(
        judge(facts(me, 0o770, false), me),
        Err(Problem::WritableByOthers)
    );
    assert_eq!(
        judge(facts(0, 0o777, false), me),
        Err(Problem::WritableByOthers),
        "a plain world-writable directory lets anyone swap the socket"
    );
    // A Kubernetes emptyDir, without and with an fsGroup.
    assert_eq!(judge(facts(0, 0o777, true), me), Ok(()));
    assert_eq!(judge(facts(0, 0o2777, true), me), Ok(()));
    // A volume owned by someone else is still someone else's.
    assert_eq!(
        judge(facts(NOBODY, 0o777, true), me),
        Err(Problem::OwnedByAnotherUser)
    );
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn unsafe_dir(result: Result<(), SocketDirError>) -> UnsafeDir {
    match result {
        Err(SocketDirError::Unsafe(found)) => *found,
        other => panic!("expected an unsafe directory, got {other:?}"),
    }
}

#[test]
fn a_directory_of_another_user_is_refused_naming_owner_mode_and_fix() {
    if !is_root() {
        eprintln!("skipped: giving a directory to another uid needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("theirs");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    chown(&dir, NOBODY);
    let found = unsafe_dir(prepare(&dir, 0o700, Purpose::Socket));
    assert_eq!(found.problem, Problem::OwnedByAnotherUser);
    let real = dir.canonicalize().unwrap();
    let shown = real.display();
    assert_eq!(
        found.to_string(),
        format!(
            "refusing the socket directory {shown} (owner uid 65534, mode 0755): it belongs to \
             another user (this process runs as uid 0), who could replace the socket and receive \
             the app's prompts. Use a directory owned by uid 0 or by root (`chown 0 {shown}`), \
             or choose another socket path (--uds, [server] uds)",
        )
    );
}

#[test]
fn a_directory_above_that_belongs_to_another_user_is_refused_too() {
    if !is_root() {
        eprintln!("skipped: giving a directory to another uid needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let theirs = root.path().join("theirs");
    let mine = theirs.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    chown(&theirs, NOBODY);
    let found = unsafe_dir(prepare(&mine, 0o700, Purpose::Socket));
    assert_eq!(found.dir, theirs.canonicalize().unwrap());
    assert_eq!(found.socket_dir, mine);
    let message = found.to_string();
    let expected = format!(
        "refusing the socket directory {}: {} above it (owner uid 65534, mode ",
        mine.display(),
        found.dir.display()
    );
    assert!(message.starts_with(&expected), "{message}");
}

#[test]
fn writable_by_others_needs_the_sticky_bit() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("open");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let found = unsafe_dir(prepare(&dir, 0o700, Purpose::Socket));
    assert_eq!(found.problem, Problem::WritableByOthers);
    let message = found.to_string();
    assert!(message.contains("mode 0777"), "{message}");
    assert!(
        message.contains(&format!(
            "`chmod go-w {}`",
            dir.canonicalize().unwrap().display()
        )),
        "{message}"
    );
    chmod(&dir, 0o1777);
    prepare(&dir, 0o700, Purpose::Socket).unwrap();
}

#[test]
fn a_directory_it_makes_gets_the_configured_mode() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a").join("b");
    prepare(&dir, 0o700, Purpose::Socket).unwrap();
    assert_eq!(facts_of(&dir).unwrap().mode, 0o700);
    let shared = root.path().join("shared");
    prepare(&shared, 0o750, Purpose::Socket).unwrap();
    assert_eq!(facts_of(&shared).unwrap().mode, 0o750);
    // An existing directory keeps its mode.
    chmod(&shared, 0o755);
    prepare(&shared, 0o700, Purpose::Socket).unwrap();
    assert_eq!(facts_of(&shared).unwrap().mode, 0o755);
}

#[test]
fn mount_points_are_seen() {
    assert!(facts_of(Path::new("/")).unwrap().mount_point);
    let root = tempfile::tempdir().unwrap();
    assert!(!facts_of(root.path()).unwrap().mount_point);
}

/// Unmounts on drop, also when an assertion fails.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn an_empty_dir_volume_is_accepted_and_the_same_plain_directory_is_not() {
    if !is_root() {
        eprintln!("skipped: shaping a directory as a root-owned volume needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("llm-socket");
    std::fs::create_dir(&dir).unwrap();
    // What kubelet leaves for an emptyDir with an fsGroup: root, 02777.
    chown(&dir, 0);
    chmod(&dir, 0o2777);
    assert_eq!(
        unsafe_dir(prepare(&dir, 0o700, Purpose::Socket)).problem,
        Problem::WritableByOthers
    );
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=2777,size=1m", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        eprintln!("skipped the volume half: mounting a tmpfs is not permitted here");
        return;
    }
    let _unmount = Mounted(&dir);
    let facts = facts_of(&dir).unwrap();
    assert_eq!(
        facts,
        DirFacts {
            owner: 0,
            mode: 0o2777,
            mount_point: true
        }
    );
    prepare(&dir, 0o700, Purpose::Socket).unwrap();
}
