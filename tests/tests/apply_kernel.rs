//! `patronusc apply | status | stats | unload | load` against the real
//! kernel: two network namespaces joined by a veth pair (documentation
//! addresses), the policy applied on the server side, TCP connections from
//! the client side that succeed or fail as the policy says. The commands
//! run in-process (parsed by the real command line) on a thread that has
//! entered the server namespace with setns(2), which keeps bpffs visible.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use clap::Parser as _;
use patronus_cli::cli::{Cli, Command};
use patronus_cli::cmd_apply;
use patronus_cli::common::Status;
use patronus_runtime::install::{self, Pins};
use patronus_runtime::testing::kernel_or_skip;

const SERVER: &str = "192.0.2.80";
const CLIENT: &str = "192.0.2.20";
const BLOCKED_WAIT: Duration = Duration::from_millis(700);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn run(program: &str, args: &[&str]) {
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
struct Setup {
    server: String,
    client: String,
    iface: String,
    pin_root: PathBuf,
    state_root: PathBuf,
}

impl Setup {
    fn new(label: &str) -> Setup {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let setup = Setup {
            server: format!("pt-{label}-s-{id}"),
            client: format!("pt-{label}-c-{id}"),
            iface: format!("pts{n}"),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/patronus-test-{label}-{id}")),
            state_root: std::env::temp_dir().join(format!("patronus-test-{label}-{id}")),
        };
        let (s, c) = (setup.server.as_str(), setup.client.as_str());
        run("ip", &["netns", "add", s]);
        run("ip", &["netns", "add", c]);
        let peer = format!("ptc{n}");
        run(
            "ip",
            &[
                "link",
                "add",
                &setup.iface,
                "netns",
                s,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                c,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                s,
                "addr",
                "add",
                &format!("{SERVER}/24"),
                "dev",
                &setup.iface,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                c,
                "addr",
                "add",
                &format!("{CLIENT}/24"),
                "dev",
                &peer,
            ],
        );
        for (ns, dev) in [
            (s, setup.iface.as_str()),
            (c, peer.as_str()),
            (s, "lo"),
            (c, "lo"),
        ] {
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        setup
    }

    fn roots(&self) -> Vec<String> {
        vec![
            "--pin-root".into(),
            self.pin_root.display().to_string(),
            "--state-root".into(),
            self.state_root.display().to_string(),
        ]
    }

    fn pins(&self) -> Pins {
        Pins::new(self.pin_root.join(&self.iface))
    }

    /// Runs `patronusc ARGS... --pin-root .. --state-root ..` in the
    /// server namespace.
    fn patronusc(&self, args: &[&str]) -> Status {
        let mut argv: Vec<String> = std::iter::once("patronusc".to_owned())
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect();
        argv.extend(self.roots());
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        in_netns(&self.server, move || {
            let result = match &cli.command {
                Command::Apply(a) => cmd_apply::run_apply(a),
                Command::Status(a) => cmd_apply::run_status(a),
                Command::Stats(a) => cmd_apply::run_stats(a),
                Command::Unload(a) => cmd_apply::run_unload(a),
                other => panic!("not an apply command: {other:?}"),
            };
            result.unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        })
    }

    /// Conntrack entries of the installed policy (both families).
    fn conntrack_entries(&self) -> usize {
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

    fn xdp_prog_id(&self) -> Option<u32> {
        install::pinned_link(&self.pins().xdp_link()).map(|l| l.prog_id)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        install::uninstall(&self.pins());
        let _ = std::fs::remove_dir(&self.pin_root);
        let _ = std::fs::remove_dir_all(&self.state_root);
        for ns in [&self.server, &self.client] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
    }
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
    .join()
    .expect("the namespace thread panicked")
}

fn enter(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on a descriptor we own; only this thread moves.
    let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(ret, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// A listener in `ns` on `port` that echoes what each connection sends,
/// for as long as the test runs (the thread dies with the namespace's
/// sockets closing or the process ending).
fn echo_server(ns: &str, addr: &str, port: u16) {
    let path = format!("/var/run/netns/{ns}");
    let addr: SocketAddr = format!("{addr}:{port}").parse().expect("a socket address");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        enter(&path);
        let listener = TcpListener::bind(addr).expect("binding the listener");
        let _ = ready_tx.send(());
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
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

/// Connects from `ns` to `addr:port`; `true` when the handshake completes.
fn connects(ns: &str, addr: &str, port: u16) -> bool {
    let target: SocketAddr = format!("{addr}:{port}").parse().expect("a socket address");
    in_netns(ns, move || {
        TcpStream::connect_timeout(&target, BLOCKED_WAIT).is_ok()
    })
}

/// An open connection made from `ns` (its socket keeps working after the
/// thread that made it ends).
fn open_connection(ns: &str, addr: &str, port: u16) -> TcpStream {
    let target: SocketAddr = format!("{addr}:{port}").parse().expect("a socket address");
    let stream = in_netns(ns, move || {
        TcpStream::connect_timeout(&target, BLOCKED_WAIT)
    })
    .expect("the connection opens");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("setting a read timeout");
    stream
}

fn echo_works(stream: &mut TcpStream, message: &[u8]) -> bool {
    if stream.write_all(message).is_err() {
        return false;
    }
    let mut buf = vec![0u8; message.len()];
    stream.read_exact(&mut buf).is_ok() && buf == message
}

/// Server-only policy 2: SSH only. Connections the server opened stay
/// established through conntrack.
const SSH_ONLY: &str = "\
options {
  default   = deny
  conntrack = on
}

allow tcp to port 22 label \"ssh\"
";

#[test]
fn apply_enforces_swaps_keeping_flows_and_unloads() {
    if !kernel_or_skip("apply_enforces_swaps_keeping_flows_and_unloads") {
        return;
    }
    let setup = Setup::new("apply");
    let web = repo_root().join("policies/web.pf");
    let web = web.to_str().expect("a UTF-8 path");
    let dir = tempdir(&setup);
    let ssh_only = dir.join("ssh-only.pf");
    std::fs::write(&ssh_only, SSH_ONLY).expect("writing the policy");
    let broken = dir.join("broken.pf");
    std::fs::write(&broken, "allow tcp to port 99999\n").expect("writing the policy");

    for port in [80, 8080] {
        echo_server(&setup.server, SERVER, port);
    }
    echo_server(&setup.client, CLIENT, 7000);
    assert!(
        connects(&setup.client, SERVER, 8080),
        "no policy yet: 8080 is open"
    );

    // web.pf: 80 open, 8080 closed.
    assert_eq!(
        setup.patronusc(&["apply", web, "-i", &setup.iface]),
        Status::Success
    );
    assert!(setup.pins().installed());
    assert!(connects(&setup.client, SERVER, 80), "web.pf allows port 80");
    assert!(
        !connects(&setup.client, SERVER, 8080),
        "web.pf drops port 8080"
    );

    // A flow the server opens: recorded by the egress program.
    let mut outbound = open_connection(&setup.server, CLIENT, 7000);
    assert!(
        echo_works(&mut outbound, b"before"),
        "the server's own flow works"
    );
    let entries_before = setup.conntrack_entries();
    assert!(entries_before >= 1, "conntrack holds the server's flow");
    let first_prog = setup.xdp_prog_id().expect("the XDP link is pinned");

    // Swap to SSH-only: port 80 closes, the established flow keeps working.
    assert_eq!(
        setup.patronusc(&[
            "apply",
            ssh_only.to_str().expect("UTF-8"),
            "-i",
            &setup.iface
        ]),
        Status::Success
    );
    let second_prog = setup.xdp_prog_id().expect("the XDP link is still pinned");
    assert_ne!(first_prog, second_prog, "the link runs the new program");
    assert!(
        setup.conntrack_entries() >= entries_before,
        "the swap kept the conntrack entries"
    );
    assert!(
        echo_works(&mut outbound, b"after"),
        "the established flow survives the swap"
    );
    assert!(
        !connects(&setup.client, SERVER, 80),
        "SSH-only drops port 80"
    );

    // A policy that does not compile changes nothing.
    assert_eq!(
        setup.patronusc(&["apply", broken.to_str().expect("UTF-8"), "-i", &setup.iface]),
        Status::Failure
    );
    assert_eq!(
        setup.xdp_prog_id(),
        Some(second_prog),
        "the running policy stays"
    );
    assert!(
        !connects(&setup.client, SERVER, 80),
        "still enforcing SSH-only"
    );

    assert_eq!(
        setup.patronusc(&["status", "-i", &setup.iface]),
        Status::Success
    );
    assert_eq!(
        setup.patronusc(&["stats", "-i", &setup.iface, "--json"]),
        Status::Success
    );
    let stats = counters_by_name(&setup);
    assert!(
        stats.get("default").copied().unwrap_or(0) >= 1,
        "the dropped SYNs count as default: {stats:?}"
    );
    assert!(
        stats.get("established").copied().unwrap_or(0) >= 1,
        "the echo reply counts as established: {stats:?}"
    );

    // Concurrent applies queue on the lock; both succeed, one policy runs.
    let ssh_only = ssh_only.to_str().expect("UTF-8");
    let statuses: Vec<Status> = std::thread::scope(|scope| {
        let runs: Vec<_> = [web, ssh_only]
            .into_iter()
            .map(|policy| scope.spawn(|| setup.patronusc(&["apply", policy, "-i", &setup.iface])))
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("an apply thread panicked"))
            .collect()
    });
    assert_eq!(statuses, [Status::Success, Status::Success]);
    assert!(setup.pins().installed());
    assert!(
        !setup.pins().dir.join("maps_new").exists(),
        "no staging pins are left behind"
    );

    // Unload: pins gone, traffic flows again.
    assert_eq!(
        setup.patronusc(&["unload", "-i", &setup.iface]),
        Status::Success
    );
    assert!(!setup.pins().dir.exists(), "unload removes the pins");
    assert!(
        connects(&setup.client, SERVER, 80),
        "no policy: port 80 is open"
    );
    assert_eq!(
        setup.patronusc(&["unload", "-i", &setup.iface]),
        Status::Failure
    );
}

/// Phase counter packets by phase name, read as `stats` reads them.
fn counters_by_name(setup: &Setup) -> std::collections::HashMap<String, u64> {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(setup.state_root.join(&setup.iface).join("meta.json"))
            .expect("the metadata file"),
    )
    .expect("the metadata is JSON");
    let fd = install::open_map(&setup.pins().map("stats")).expect("the stats map is pinned");
    let values = install::read_counters(std::os::fd::AsFd::as_fd(&fd)).expect("reading stats");
    let counters = meta["counters"].as_array().expect("a counters list");
    assert_eq!(counters.len(), values.len(), "the layout matches the map");
    counters
        .iter()
        .zip(values)
        .filter(|(c, _)| c["kind"] == "phase")
        .map(|(c, v)| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                v.first().copied().unwrap_or(0),
            )
        })
        .collect()
}

fn tempdir(setup: &Setup) -> PathBuf {
    let dir = setup.state_root.join("policies");
    std::fs::create_dir_all(&dir).expect("creating the policy directory");
    dir
}

#[test]
fn load_pins_without_attaching_and_records_out_flows() {
    if !kernel_or_skip("load_pins_without_attaching_and_records_out_flows") {
        return;
    }
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/patronus-test-load-{}",
        std::process::id()
    ));
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            install::uninstall(&Pins::new(&self.0));
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let web = repo_root().join("policies/web.pf");
    let argv = [
        "patronusc",
        "load",
        web.to_str().expect("UTF-8"),
        "--pin-dir",
        dir.to_str().expect("UTF-8"),
        "--out",
        "tcp 192.0.2.80:40000 -> 198.51.100.7:443",
        "--out",
        "udp [2001:db8::80]:5000 -> [2001:db8:5::1]:53",
    ];
    let cli = Cli::try_parse_from(argv).expect("the command line parses");
    let Command::Load(args) = &cli.command else {
        panic!("not a load command")
    };
    assert_eq!(
        cmd_apply::run_load(args).expect("load runs"),
        Status::Success
    );
    assert!(dir.join("prog").exists(), "the XDP program is pinned");
    let pins = Pins::new(&dir);
    assert!(!pins.installed(), "nothing is attached");
    for (map, expected) in [("ct_v4", 1), ("ct_v6", 1)] {
        let fd = install::open_map(&pins.map(map)).expect("the map is pinned");
        assert_eq!(
            install::count_entries(std::os::fd::AsFd::as_fd(&fd)).expect("counting"),
            expected,
            "{map} holds the --out flow"
        );
    }
}
