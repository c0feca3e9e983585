//! A Unix socket's file on disk, for the control socket and `unix:` listeners: a
//! stale file left by a dead process is replaced, a live one is refused, and at exit
//! the file is removed only if it is still the one we made (after a master upgrade it
//! belongs to the new master, which renamed its own over it or inherited ours).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Makes way for a socket at `path`: nothing there is fine, a socket nobody accepts
/// on is removed, a socket someone answers on is refused (`AddrInUse`: "`who` is
/// answering on PATH (`advice`)"), and anything else is an error naming it.
pub fn clear_stale(path: &Path, who: &str, advice: &str) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    // connect(2) on a plain file is refused just as on a dead socket: look first.
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket: not replacing it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{who} is answering on {} ({advice})", path.display()),
        )),
        // Nobody accepts on it: a dead process's leftover.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{} exists and is not a socket ferry can replace: {e}",
                path.display()
            ),
        )),
    }
}

/// A socket file we made, by its identity on disk.
#[derive(Debug, Clone)]
pub struct Owned {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Owned {
    /// Remembers the file now at `path` (just bound, or inherited with ownership).
    pub fn at(path: &Path) -> io::Result<Owned> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Owned {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it is still ours; whatever replaced it stays.
    pub fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferry-sockfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_stale_socket_is_cleared_a_live_one_refused_a_file_kept() {
        let d = dir("stale");
        let stale = d.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        clear_stale(&stale, "x", "y").unwrap();
        assert!(!stale.exists());

        let live = d.join("live.sock");
        let _l = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let e = clear_stale(&live, "another ferry", "choose another").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("another ferry is answering"), "{e}");
        assert!(live.exists());

        let plain = d.join("plain");
        std::fs::write(&plain, b"x").unwrap();
        assert!(clear_stale(&plain, "", "").is_err());
        assert!(plain.exists());
        clear_stale(&d.join("absent"), "", "").unwrap();
    }

    #[test]
    fn only_our_own_file_is_removed() {
        let d = dir("owned");
        let path = d.join("s.sock");
        let first = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let ours = Owned::at(&path).unwrap();
        // Another socket renamed over ours (what a new master does) stays.
        let other = d.join("new.sock");
        let _second = std::os::unix::net::UnixListener::bind(&other).unwrap();
        std::fs::rename(&other, &path).unwrap();
        ours.remove();
        assert!(path.exists());
        drop(first);
        let now = Owned::at(&path).unwrap();
        now.remove();
        assert!(!path.exists());
    }
}
