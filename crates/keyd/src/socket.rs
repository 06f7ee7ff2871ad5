//! The local admin socket: `atrest keyd serve` also serves its API on a
//! Unix socket (`DATA_DIR/admin.sock`, or `--admin-socket`), which the
//! admin CLI on the same machine uses.
//!
//! Over HTTPS the CLI would have to name the server as its certificate
//! does (`keys.example`), which need not resolve to this machine, nor be
//! served on loopback (`--listen 0.0.0.0:7443` accepts 127.0.0.1, but the
//! certificate may not name it). A socket needs no name and no TLS: it is
//! reached through the file system, mode 0600 and owned by keyd's user, and
//! each connection's peer credentials (`SO_PEERCRED`) must be keyd's user or
//! root. The admin bearer token is still asked for, as over HTTPS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

/// The socket's file name in the data directory.
pub const ADMIN_SOCKET: &str = "admin.sock";

/// A bound admin socket that takes connections only from keyd's own user
/// and root, and removes its file when dropped.
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The user allowed besides root: the one keyd runs as.
    owner: u32,
}

impl AdminSocket {
    /// Binds `path` with mode 0600. A socket left there by a keyd that did
    /// not stop cleanly (nothing answers it) is removed first; a live one,
    /// or anything that is not a socket, is left alone and refused.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match std::fs::symlink_metadata(path) {
            // Answered: a keyd of another data directory given the same
            // path. Its socket is not stale; taking it would strand its CLI.
            Ok(meta)
                if meta.file_type().is_socket()
                    && std::os::unix::net::UnixStream::connect(path).is_ok() =>
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another keyd serves this socket; give each data directory its own \
                     admin socket (keyd.json \"admin_socket\")",
                ));
            }
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a socket; move it away or give another --admin-socket",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        // The data directory is 0700 already; this keeps a socket given
        // elsewhere (under /run) closed too, whatever the umask.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            owner: rustix::process::geteuid().as_raw(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn allowed(&self, stream: &UnixStream) -> Result<(), String> {
        let credentials = stream.peer_cred().map_err(|e| e.to_string())?;
        let uid = credentials.uid();
        if uid == self.owner || uid == 0 {
            Ok(())
        } else {
            Err(format!("uid {uid} is neither keyd's user nor root"))
        }
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl axum::serve::Listener for AdminSocket {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => match self.allowed(&stream) {
                    Ok(()) => return (stream, addr),
                    Err(reason) => {
                        tracing::warn!(%reason, "refused a connection to the admin socket");
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
