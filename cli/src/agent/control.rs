//! The agent's control socket: a Unix stream socket (mode 0600, and the
//! peer must be root) taking one request a line and answering `ok` or
//! `error: MESSAGE` a line:
//!
//! ```text
//! table add IFACE TABLE PREFIX...
//! table del IFACE TABLE PREFIX...
//! ```
//!
//! Each request runs `patronusc table add|del -i IFACE TABLE PREFIX...` in
//! the agent's process: no process start-up, which dominates a one-off
//! `patronusc table add` (~2 ms), so one update costs the map write itself.
//! A client keeps its connection open for as many requests as it likes.

use std::io::{self, BufRead, BufReader, Read as _, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Shared;
use crate::common::Status;

/// Longest request line taken (a bulk add of a few thousand prefixes).
const MAX_LINE: usize = 1 << 20;

pub fn serve(path: &Path, shared: Arc<Shared>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a previous run is replaced; anything else is not.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let _ = handle(stream, &shared);
            });
        }
    });
    Ok(())
}

/// The uid of the process at the other end.
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket and a buffer of the size given.
    let ret = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

fn handle(stream: UnixStream, shared: &Shared) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    if peer_uid(&stream)? != 0 {
        writer.write_all(b"error: permission denied: the control socket is for root\n")?;
        return Ok(());
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut reader).take(MAX_LINE as u64).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        let answer = match request(line.trim(), shared) {
            Ok(()) => "ok\n".to_owned(),
            Err(error) => format!("error: {}\n", error.replace('\n', " ")),
        };
        writer.write_all(answer.as_bytes())?;
    }
}

/// Runs one request line.
pub fn request(line: &str, shared: &Shared) -> Result<(), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (action, iface, table, prefixes) = match words.as_slice() {
        [
            "table",
            action @ ("add" | "del"),
            iface,
            table,
            prefixes @ ..,
        ] if !prefixes.is_empty() => (*action, *iface, *table, prefixes),
        _ => {
            return Err(format!(
                "unknown request `{line}` (expected `table add|del IFACE TABLE PREFIX...`)"
            ));
        }
    };
    // Options are the agent's to set (its roots), not a request's.
    if words.iter().any(|w| w.starts_with('-')) {
        return Err(format!(
            "`{line}`: options are not taken on the control socket"
        ));
    }
    let mut args = vec!["table", action, "-i", iface, table];
    args.extend(prefixes.iter().copied());
    let outcome = {
        let _deploy = shared.deploy_lock();
        shared.run(&args)
    };
    let counter = match outcome {
        Ok(Status::Success) => &shared.table_updates_ok,
        _ => &shared.table_updates_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    match outcome {
        Ok(Status::Success) => Ok(()),
        Ok(Status::Failure) => Err("the change was refused (see the agent's log)".to_owned()),
        Err(error) => Err(error.message),
    }
}
