//! Shared by the tests that apply policies to real interfaces
//! (`apply_kernel.rs`, `e2e_*.rs`): a server and a client network
//! namespace joined by a veth pair (documentation addresses, IPv4 and
//! IPv6), `patronusc` commands run in-process in the server namespace,
//! and TCP helpers that run on threads which entered a namespace with
//! setns(2) (sockets keep the namespace they were created in, and bpffs
//! stays visible because only the network namespace changes).

#![allow(dead_code)] // each test crate uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use clap::Parser as _;
use patronus_cli::cli::{Cli, Command};
use patronus_cli::common::{CliError, Status};
use patronus_cli::{cmd_apply, cmd_stats};
use patronus_runtime::install::{self, Pins};

pub const SERVER: &str = "192.0.2.80";
pub const CLIENT: &str = "192.0.2.20";
pub const SERVER6: &str = "2001:db8::80";
pub const CLIENT6: &str = "2001:db8::20";
/// How long a connection attempt the policy drops is given: long enough
/// for an allowed handshake on a veth, shorter than the first SYN
/// retransmission (1 s), so a dropped attempt sends exactly one SYN.
pub const BLOCKED_WAIT: Duration = Duration::from_millis(700);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub fn run(program: &str, args: &[&str]) {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Server and client namespaces, the veth pair, the pin and state
/// directories: all removed when dropped, whatever the test did.
pub struct Setup {
    pub server: String,
    pub client: String,
    /// The server's end of the veth pair (the filtered interface).
    pub iface: String,
    /// The client's end.
    pub peer: String,
    pub pin_root: PathBuf,
    pub state_root: PathBuf,
}

impl Setup {
    pub fn new(label: &str) -> Setup {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        // Interface names are at most 15 bytes: the label is not in them,
        // the process id keeps parallel test binaries apart (namespaces
        // differ, but a clear name helps when one is left behind).
        let short = format!("{}{n}", std::process::id() % 100_000);
        let setup = Setup {
            server: format!("pt-{label}-s-{id}"),
            client: format!("pt-{label}-c-{id}"),
            iface: format!("pts{short}"),
            peer: format!("ptc{short}"),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/patronus-test-{label}-{id}")),
            state_root: std::env::temp_dir().join(format!("patronus-test-{label}-{id}")),
        };
        // A state root must be root's, mode 0700 (`host::dirs`); the
        // tests keep their policy files in it too.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&setup.state_root)
            .expect("creating the state root");
        run("ip", &["netns", "add", &setup.server]);
        run("ip", &["netns", "add", &setup.client]);
        setup.create_veth();
        setup
    }

    /// The veth pair with its addresses, up. Also re-creates it after
    /// [`Setup::delete_veth`] (the same names, new interface indices).
    pub fn create_veth(&self) {
        let (s, c) = (self.server.as_str(), self.client.as_str());
        let peer = self.peer.as_str();
        run(
            "ip",
            &[
                "link",
                "add",
                &self.iface,
                "netns",
                s,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                c,
            ],
        );
        for (ns, addr, dev) in [
            (s, format!("{SERVER}/24"), self.iface.as_str()),
            (c, format!("{CLIENT}/24"), peer),
        ] {
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", dev]);
        }
        // nodad: the addresses are usable at once (no duplicate address
        // detection delay).
        for (ns, addr, dev) in [
            (s, format!("{SERVER6}/64"), self.iface.as_str()),
            (c, format!("{CLIENT6}/64"), peer),
        ] {
            run(
                "ip",
                &["-n", ns, "-6", "addr", "add", &addr, "dev", dev, "nodad"],
            );
        }
        for (ns, dev) in [(s, self.iface.as_str()), (c, peer), (s, "lo"), (c, "lo")] {
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
    }

    /// Deletes the veth pair (both ends go).
    pub fn delete_veth(&self) {
        run("ip", &["-n", &self.server, "link", "del", &self.iface]);
    }

    pub fn roots(&self) -> Vec<String> {
        vec![
            "--pin-root".into(),
            self.pin_root.display().to_string(),
            "--state-root".into(),
            self.state_root.display().to_string(),
        ]
    }

    pub fn pins(&self) -> Pins {
        Pins::new(self.pin_root.join(&self.iface))
    }

    /// Runs `patronusc ARGS... --pin-root .. --state-root ..` in the
    /// server namespace; an error (exit status 2) is returned.
    pub fn try_patronusc(&self, args: &[&str]) -> Result<Status, CliError> {
        let mut argv: Vec<String> = std::iter::once("patronusc".to_owned())
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect();
        if !args.contains(&"--pin-root") {
            argv.extend(self.roots());
        }
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        in_netns(&self.server, move || match &cli.command {
            Command::Apply(a) => cmd_apply::run_apply(a),
            Command::Status(a) => cmd_apply::run_status(a),
            Command::Stats(a) => cmd_stats::run_stats(a),
            Command::Unload(a) => cmd_apply::run_unload(a),
            other => panic!("not an apply command: {other:?}"),
        })
    }

    /// [`Setup::try_patronusc`] that fails the test on an error.
    pub fn patronusc(&self, args: &[&str]) -> Status {
        self.try_patronusc(args)
            .unwrap_or_else(|e| panic!("patronusc {args:?}: {e}"))
    }

    /// `patronusc apply POLICY -i IFACE` (the policy written to a file).
    pub fn apply_text(&self, name: &str, policy: &str) -> Result<Status, CliError> {
        let path = self.policy_file(name, policy);
        self.try_patronusc(&["apply", path.to_str().expect("UTF-8"), "-i", &self.iface])
    }

    /// Writes `text` to `STATE_ROOT/policies/NAME.pf`.
    pub fn policy_file(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.state_root.join("policies");
        std::fs::create_dir_all(&dir).expect("creating the policy directory");
        let path = dir.join(format!("{name}.pf"));
        std::fs::write(&path, text).expect("writing the policy");
        path
    }

    /// Conntrack entries of the installed policy (both families).
    pub fn conntrack_entries(&self) -> usize {
        ["ct_v4", "ct_v6"]
            .iter()
            .map(|name| {
                let fd = install::open_map(&self.pins().map(name))
                    .unwrap_or_else(|e| panic!("opening {name}: {e}"));
                install::count_entries(std::os::fd::AsFd::as_fd(&fd))
                    .unwrap_or_else(|e| panic!("counting {name}: {e}"))
            })
            .sum()
    }

    pub fn xdp_prog_id(&self) -> Option<u32> {
        install::pinned_link(&self.pins().xdp_link()).map(|l| l.prog_id)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        install::uninstall(&self.pins());
        // Whatever else a test pinned under its own root goes too.
        let _ = std::fs::remove_dir_all(&self.pin_root);
        let _ = std::fs::remove_dir_all(&self.state_root);
        for ns in [&self.server, &self.client] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
    }
}

/// Runs `f` on a thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
    .join()
    .expect("the namespace thread panicked")
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on a descriptor we own; only this thread moves.
    let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(ret, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// `addr:port` (IPv6 addresses bracketed).
pub fn socket_addr(addr: &str, port: u16) -> SocketAddr {
    let ip: std::net::IpAddr = addr.parse().expect("an IP address");
    SocketAddr::new(ip, port)
}

/// A listener in `ns` on `port` that echoes what each connection sends,
/// for as long as the test runs (the thread dies with the namespace's
/// sockets closing or the process ending).
pub fn echo_server(ns: &str, addr: &str, port: u16) {
    let path = format!("/var/run/netns/{ns}");
    let addr = socket_addr(addr, port);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        enter(&path);
        let listener = TcpListener::bind(addr).expect("binding the listener");
        let _ = ready_tx.send(());
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    ready_rx.recv().expect("the listener started");
}

/// Connects from `ns` to `addr:port` within [`BLOCKED_WAIT`].
pub fn try_connect(ns: &str, addr: &str, port: u16) -> std::io::Result<TcpStream> {
    let target = socket_addr(addr, port);
    in_netns(ns, move || {
        TcpStream::connect_timeout(&target, BLOCKED_WAIT)
    })
}

/// Connects from `ns` to `addr:port`; `true` when the handshake completes.
pub fn connects(ns: &str, addr: &str, port: u16) -> bool {
    try_connect(ns, addr, port).is_ok()
}

/// An open connection made from `ns` (its socket keeps working after the
/// thread that made it ends).
pub fn open_connection(ns: &str, addr: &str, port: u16) -> TcpStream {
    let stream = try_connect(ns, addr, port).expect("the connection opens");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("setting a read timeout");
    stream
}

pub fn echo_works(stream: &mut TcpStream, message: &[u8]) -> bool {
    if stream.write_all(message).is_err() {
        return false;
    }
    let mut buf = vec![0u8; message.len()];
    stream.read_exact(&mut buf).is_ok() && buf == message
}
