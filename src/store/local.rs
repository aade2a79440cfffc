//! The local-directory store (`file://`): one file per object, made visible by an atomic rename.

use std::io;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::read::Located;
use super::{ByteReader, ObjectMeta, ObjectStore, StoreError};

/// Names of in-progress uploads start with this; `list` never reports them.
const TEMP_PREFIX: &str = ".tmp-";

/// Read buffer for `put`; large enough that syscalls don't dominate, small enough to not matter.
const COPY_BUFFER: usize = 256 * 1024;

/// Objects stored as files under one root directory; keys map to relative paths.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `path` (absolute or relative to the current directory).
    ///
    /// Nothing is touched until the first operation: the directory is created by the first `put`,
    /// and listing a missing directory yields nothing.
    pub fn new(path: &str) -> LocalStore {
        let path = Path::new(path);
        // Absolute, so messages name the real place even when the config said `./backups`.
        let root = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        LocalStore { root }
    }

    /// The directory objects are stored under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a key onto a path below the root, refusing anything that could escape it.
    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let invalid = |reason: &str| StoreError::Io {
            location: format!("{} (key '{key}')", self.describe()),
            source: io::Error::new(io::ErrorKind::InvalidInput, reason.to_string()),
        };
        if key.is_empty() || key.ends_with('/') {
            return Err(invalid("an object key must name a file"));
        }
        let relative = Path::new(key);
        for component in relative.components() {
            match component {
                Component::Normal(name) => {
                    if name.to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
                        return Err(invalid("key components may not start with '.tmp-'"));
                    }
                }
                Component::CurDir => {}
                _ => return Err(invalid("keys must be relative paths without '..'")),
            }
        }
        Ok(self.root.join(relative))
    }

    fn io_error(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            location: path.display().to_string(),
            source,
        }
    }

    /// Creates the temp file beside `target`, creating parent directories as needed.
    async fn create_temp(target: &Path) -> Result<(PathBuf, tokio::fs::File), StoreError> {
        let dir = target
            .parent()
            .expect("a key always has a parent below the root");
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{name}-{:016x}",
            rand::random::<u64>()
        ));
        // A concurrent delete may prune the directory we just created; try again a few times.
        let mut attempts = 0;
        loop {
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .await
            {
                Ok(file) => return Ok((temp, file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => {
                    attempts += 1;
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| Self::io_error(dir, e))?;
                }
                Err(e) => return Err(Self::io_error(&temp, e)),
            }
        }
    }

    /// Removes directories left empty by a delete, up to (not including) the root.
    fn prune_empty_dirs(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

/// Removes a half-written temp file, and the directories created for it, if `put` fails or its
/// future is dropped.
struct TempGuard<'a> {
    store: &'a LocalStore,
    temp: Option<PathBuf>,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.temp.take() {
            let _ = std::fs::remove_file(&path);
            self.store.prune_empty_dirs(&path);
        }
    }
}

/// Opens a directory and fsyncs it, so a rename inside it survives a crash.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

/// Collects every regular file below `dir` as a `/`-separated key relative to `root`.
fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(root, &path, prefix, out)?;
        } else if file_type.is_file() {
            let Some(key) = key_of(root, &path) else {
                continue;
            };
            if !key.starts_with(prefix) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Deleted between read_dir and stat: it is simply not there any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push(ObjectMeta {
                key,
                size: meta.len(),
                last_modified: meta.modified().ok().map(chrono::DateTime::from),
            });
        }
    }
    Ok(())
}

fn key_of(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = relative
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect();
    Some(parts?.join("/"))
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn preflight(&self) -> Result<(), StoreError> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| StoreError::Io {
                location: self.root.display().to_string(),
                source: e,
            })
    }

    async fn put(&self, key: &str, mut body: ByteReader) -> Result<u64, StoreError> {
        let target = self.path_of(key)?;
        let (temp, mut file) = Self::create_temp(&target).await?;
        let mut guard = TempGuard {
            store: self,
            temp: Some(temp.clone()),
        };
        // Write errors name the object being stored (a full disk, a read-only mount), not the
        // temp file, which is removed before the error is seen.
        let write_error = |e| Self::io_error(&target, e);

        let mut buf = vec![0u8; COPY_BUFFER];
        let mut written = 0u64;
        loop {
            let n = match body.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StoreError::Source {
                        key: key.to_string(),
                        source,
                    });
                }
            };
            file.write_all(&buf[..n]).await.map_err(write_error)?;
            written += n as u64;
        }
        file.flush().await.map_err(write_error)?;
        file.sync_all().await.map_err(write_error)?;
        drop(file);

        tokio::fs::rename(&temp, &target)
            .await
            .map_err(write_error)?;
        guard.temp = None;
        let dir = target
            .parent()
            .expect("a key always has a parent below the root");
        sync_dir(dir).await.map_err(|e| Self::io_error(dir, e))?;
        tracing::debug!(key, bytes = written, "stored object");
        Ok(written)
    }

    async fn get(&self, key: &str) -> Result<ByteReader, StoreError> {
        let path = self.path_of(key)?;
        let not_found = || StoreError::NotFound {
            key: key.to_string(),
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(Self::io_error(&path, e)),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| Self::io_error(&path, e))?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok(Box::pin(Located::new(file, path.display().to_string())))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: meta.len(),
                last_modified: meta.modified().ok().map(chrono::DateTime::from),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io_error(&path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Only the directory named by the prefix's complete components needs walking.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path_of(dir_part)?
        };
        let root = self.root.clone();
        let prefix_owned = prefix.to_string();
        let walked = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &start, &prefix_owned, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| Self::io_error(&self.root, io::Error::other(e)))?;
        let mut objects = walked.map_err(|e| Self::io_error(&self.root, e))?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Self::io_error(&path, e)),
        }
        self.prune_empty_dirs(&path);
        Ok(())
    }

    async fn remove_stale_uploads(
        &self,
        prefix: &str,
        older_than: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<usize>, StoreError> {
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path_of(dir_part)?
        };
        let cutoff = std::time::SystemTime::from(older_than);
        let store = self.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let mut stale = Vec::new();
            stale_temp_files(&start, cutoff, &mut stale);
            let mut removed = 0;
            for path in stale {
                if std::fs::remove_file(&path).is_ok() {
                    store.prune_empty_dirs(&path);
                    removed += 1;
                }
            }
            removed
        })
        .await
        .map_err(|e| Self::io_error(&self.root, io::Error::other(e)))?;
        Ok(Some(removed))
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

/// Temp files (of uploads a killed process left) below `dir` last written before `cutoff`.
fn stale_temp_files(dir: &Path, cutoff: std::time::SystemTime, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        if file_type.is_dir() {
            stale_temp_files(&entry.path(), cutoff, out);
        } else if is_temp
            && file_type.is_file()
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff)
        {
            out.push(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_escape_the_root_are_refused() {
        let store = LocalStore::new("/srv/backups");
        assert!(store.path_of("../etc/passwd").is_err());
        assert!(store.path_of("a/../../b").is_err());
        assert!(store.path_of("/etc/passwd").is_err());
        assert!(store.path_of("").is_err());
        assert!(store.path_of("a/.tmp-x").is_err());
        assert_eq!(
            store.path_of("job/id/manifest.json").unwrap(),
            Path::new("/srv/backups/job/id/manifest.json")
        );
    }

    #[test]
    fn relative_roots_are_made_absolute() {
        let store = LocalStore::new("./pgkeep-backups");
        assert!(store.root().is_absolute());
        assert!(store.describe().starts_with("file:///"));
    }
}
