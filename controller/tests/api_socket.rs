//! Binding the API socket on a real filesystem: only a socket is ever replaced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use banger_controller::api::server::bind;

#[tokio::test]
async fn bind_never_unlinks_what_is_not_a_socket() {
    let tmp = tempfile::tempdir().unwrap();

    let file = tmp.path().join("file.sock");
    std::fs::write(&file, b"precious").unwrap();
    let err = bind(&file).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        err.to_string(),
        format!(
            "{} exists and is a regular file, not a socket; remove it or choose another --socket",
            file.display()
        )
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");

    let dir = tmp.path().join("dir.sock");
    std::fs::create_dir(&dir).unwrap();
    let err = bind(&dir).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("exists and is a directory, not a socket"),
        "{err}"
    );
    assert!(dir.is_dir());

    // A symlink is not followed, even to a stale socket.
    let stale = tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let link = tmp.path().join("link.sock");
    std::os::unix::fs::symlink(&stale, &link).unwrap();
    let err = bind(&link).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("exists and is a symbolic link, not a socket"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("run/banger.sock");
    std::fs::create_dir(tmp.path().join("run")).unwrap();
    // A socket left by a daemon that died: nobody listens on it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let listener = bind(&socket).await.unwrap();
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "the daemon's user only"
    );

    // Now it is live: a second daemon is refused and the first keeps its socket.
    let err = bind(&socket).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    assert!(
        err.to_string().contains("another daemon is listening"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    tokio::net::UnixStream::connect(&socket).await.unwrap();
    drop(listener);
}
