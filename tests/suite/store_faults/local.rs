//! The local store's failures: a full disk gives one clear error naming the object and leaves
//! no temp file; a failed read wraps a `StoreError`, like the S3 store's.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgkeep::store::{LocalStore, ObjectStore, StoreError, store_error_of};
use tokio::io::AsyncReadExt;

use crate::common::s3::report;
use crate::suite::store_conformance::{data, reader};

/// A small tmpfs, unmounted on drop.
pub struct SmallDisk {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl SmallDisk {
    /// A 2 MiB one; `None` (after printing why) when not root: mounting needs it; CI runs as
    /// root.
    fn mount() -> Option<SmallDisk> {
        SmallDisk::mount_sized("2m")
    }

    /// One of `size` (`mount -o size=`).
    pub fn mount_sized(size: &str) -> Option<SmallDisk> {
        crate::common::tools::required(
            nix::unistd::geteuid().is_root().then_some(()),
            "mounting a tmpfs (a full disk) needs root",
        )?;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("running mount");
        assert!(status.success(), "mount -t tmpfs failed as root: {status}");
        Some(SmallDisk { _dir: dir, path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Every file below `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_the_put_naming_the_path_and_leaves_nothing() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let root = disk.path.join("backups");
    let store = LocalStore::new(root.to_str().unwrap());
    store
        .put("job/old/kept", reader(b"an earlier object".to_vec()))
        .await
        .unwrap();

    let err = store
        .put("job/run/dump", reader(data(3 * 1024 * 1024, 8)))
        .await
        .expect_err("3 MiB into a 2 MiB disk");
    let text = report(&err);
    assert!(text.contains("No space left on device"), "{text}");
    let target = root.join("job/run/dump");
    assert!(
        text.contains(target.to_str().unwrap()),
        "names the object's path: {text}"
    );
    match &err {
        StoreError::Io { source, .. } => assert_eq!(source.kind(), io::ErrorKind::StorageFull),
        other => panic!("expected Io, got {}", report(other)),
    }
    assert!(!err.is_retryable(), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");

    // No temp file, no partial object; the earlier object is untouched.
    assert_eq!(files(&disk.path), [root.join("job/old/kept")]);
    assert_eq!(
        store.list("").await.unwrap().len(),
        1,
        "only the earlier object is listed"
    );
    // The disk is usable again once the failed upload is gone.
    store
        .put("job/run/small", reader(b"fits".to_vec()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_local_read_wraps_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("backups");
    std::fs::create_dir_all(root.join("job/run")).unwrap();
    // Reading /proc/self/mem at offset 0 fails with EIO: a disk that cannot deliver its bytes.
    std::os::unix::fs::symlink("/proc/self/mem", root.join("job/run/object")).unwrap();
    let store = LocalStore::new(root.to_str().unwrap());
    let mut reader = store.get("job/run/object").await.unwrap();
    let mut out = Vec::new();
    let err = reader
        .read_to_end(&mut out)
        .await
        .expect_err("reading /proc/self/mem from 0 fails");
    match store_error_of(&err) {
        Some(StoreError::Io { location, source }) => {
            assert!(location.ends_with("job/run/object"), "{location}");
            assert_eq!(source.raw_os_error(), Some(5), "{source}");
        }
        other => panic!("expected a wrapped StoreError::Io, got {other:?} from {err:?}"),
    }
    assert!(matches!(
        StoreError::from_read("job/run/object", err),
        StoreError::Io { .. }
    ));
}
