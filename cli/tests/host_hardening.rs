//! The built `patronusc` against a hostile or odd host: interface names
//! that are paths, readers without root, a read-only bpffs at unload, a
//! private mount namespace at apply, and loopback. Each runs the binary
//! in a network namespace of its own (`lo` there is the interface), with
//! pin and state roots unique to the test.

use std::path::PathBuf;
use std::process::Command;

use patronus_runtime::testing::kernel_or_skip;

const BIN: &str = env!("CARGO_BIN_EXE_patronusc");

fn web() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/web.pf").to_owned()
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        format!(
            "exit {:?}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run(program: &str, args: &[&str]) -> Out {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A named network namespace with `lo` up, and pin and state roots;
/// all removed on drop (pins first, so nothing stays attached).
struct Host {
    ns: String,
    pin_root: PathBuf,
    state_root: PathBuf,
}

impl Host {
    fn new(label: &str) -> Host {
        let id = format!("{label}-{}", std::process::id());
        let host = Host {
            ns: format!("pt-hh-{id}"),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/patronus-test-hh-{id}")),
            state_root: std::env::temp_dir().join(format!("patronus-test-hh-{id}")),
        };
        let added = run("ip", &["netns", "add", &host.ns]);
        assert_eq!(added.code, Some(0), "{}", added.text());
        let up = run("ip", &["-n", &host.ns, "link", "set", "lo", "up"]);
        assert_eq!(up.code, Some(0), "{}", up.text());
        host
    }

    fn netns(&self) -> String {
        format!("--net=/run/netns/{}", self.ns)
    }

    fn roots(&self) -> [String; 4] {
        [
            "--pin-root".into(),
            self.pin_root.display().to_string(),
            "--state-root".into(),
            self.state_root.display().to_string(),
        ]
    }

    /// `patronusc ARGS --pin-root .. --state-root ..` in the namespace.
    fn patronusc(&self, args: &[&str]) -> Out {
        let netns = self.netns();
        let roots = self.roots();
        let mut argv: Vec<&str> = vec![&netns, BIN];
        argv.extend(args);
        argv.extend(roots.iter().map(String::as_str));
        run("nsenter", &argv)
    }

    /// `sh -c SCRIPT` in the namespace, with `$P` the patronusc binary and
    /// `$ROOTS` the root options, in a mount namespace of its own.
    fn in_private_mounts(&self, script: &str) -> Out {
        let roots = self.roots().join(" ");
        let script = format!("P={BIN}; ROOTS='{roots}'; {script}");
        run(
            "nsenter",
            &[&self.netns(), "unshare", "-m", "sh", "-c", &script],
        )
    }

    fn apply_lo(&self) {
        let out = self.patronusc(&["apply", &web(), "-i", "lo", "--force"]);
        assert_eq!(out.code, Some(0), "{}", out.text());
    }

    fn lo_pins(&self) -> PathBuf {
        self.pin_root.join("lo")
    }

    fn meta(&self) -> PathBuf {
        self.state_root.join("lo/meta.json")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_root);
        let _ = std::fs::remove_dir_all(&self.state_root);
        let _ = run("ip", &["netns", "del", &self.ns]);
    }
}

fn assert_still_attached(host: &Host, after: &str) {
    assert!(
        host.lo_pins().join("link_xdp").exists(),
        "{after}: the policy's pins are gone"
    );
    let status = host.patronusc(&["status", "-i", "lo"]);
    assert_eq!(status.code, Some(0), "{after}: {}", status.text());
    assert!(
        status.stdout.contains("lo: XDP program"),
        "{after}: {}",
        status.text()
    );
}

#[test]
fn interface_names_that_are_paths_are_refused_by_every_command() {
    if !kernel_or_skip("interface_names_that_are_paths_are_refused_by_every_command") {
        return;
    }
    let host = Host::new("names");
    host.apply_lo();
    // A file beside the state root that `..` would reach.
    let outside = host.state_root.with_extension("outside");
    std::fs::write(&outside, "keep").expect("writing the bystander file");
    for name in ["", ".", "..", "../x", "lo/..", "a b", "abcdefghijklmnop"] {
        for command in [
            vec!["unload", "-i", name],
            vec!["confirm", "-i", name],
            vec!["status", "-i", name],
            vec!["stats", "-i", name],
            vec!["log", "-i", name],
            vec!["table", "list", "-i", name],
            vec!["table", "add", "-i", name, "t", "192.0.2.1"],
            vec!["apply", &web(), "-i", name],
            vec!["doctor", "-i", name],
        ] {
            let out = host.patronusc(&command);
            assert_eq!(out.code, Some(2), "{command:?}: {}", out.text());
            assert!(
                out.stderr.contains("is not an interface name"),
                "{command:?}: {}",
                out.text()
            );
        }
        assert_still_attached(&host, &format!("unload -i {name:?}"));
    }
    assert_eq!(
        std::fs::read_to_string(&outside).ok().as_deref(),
        Some("keep")
    );
    let _ = std::fs::remove_file(&outside);
    assert!(
        !host.state_root.join("../x").exists() && host.state_root.exists(),
        "nothing was created outside the state root"
    );
}

#[test]
fn readers_without_root_say_permission_denied() {
    if !kernel_or_skip("readers_without_root_say_permission_denied") {
        return;
    }
    let host = Host::new("nonroot");
    host.apply_lo();
    let roots = host.roots();
    for command in [
        vec!["status"],
        vec!["status", "-i", "lo"],
        vec!["stats"],
        vec!["stats", "-i", "lo"],
        vec!["log", "-i", "lo", "--count", "1", "--timeout", "1s"],
    ] {
        let mut argv = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
        ];
        argv.extend(&command);
        argv.extend(roots.iter().map(String::as_str));
        let out = run("setpriv", &argv);
        assert_eq!(out.code, Some(2), "{command:?}: {}", out.text());
        assert!(
            out.stderr.contains("permission denied: run as root"),
            "{command:?}: {}",
            out.text()
        );
        assert!(
            !out.stdout.contains("no policy"),
            "{command:?}: {}",
            out.text()
        );
    }
}

#[test]
fn unload_on_a_read_only_bpffs_fails_and_keeps_the_state() {
    if !kernel_or_skip("unload_on_a_read_only_bpffs_fails_and_keeps_the_state") {
        return;
    }
    let host = Host::new("rofs");
    host.apply_lo();
    // Read-only in a mount namespace of its own: the host's bpffs stays
    // writable.
    let out = host.in_private_mounts(
        "mount -o remount,bind,ro /sys/fs/bpf || exit 99; exec $P unload -i lo $ROOTS",
    );
    assert_ne!(out.code, Some(99), "remounting read-only: {}", out.text());
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(
        out.stderr.contains("cannot remove the pins") && out.stderr.contains("link_xdp"),
        "{}",
        out.text()
    );
    assert!(!out.stdout.contains("unloaded"), "{}", out.text());
    assert!(
        host.meta().exists(),
        "the metadata of a running policy was deleted"
    );
    assert!(host.state_root.join("lo/snapshot.json").exists());
    assert_still_attached(&host, "a refused unload");
    let out = host.patronusc(&["unload", "-i", "lo"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert!(!host.lo_pins().exists() && !host.meta().exists());
}

#[test]
fn apply_refuses_a_bpffs_private_to_its_mount_namespace() {
    if !kernel_or_skip("apply_refuses_a_bpffs_private_to_its_mount_namespace") {
        return;
    }
    let host = Host::new("privmnt");
    // Without the host's bpffs, patronusc mounts one, private to this
    // mount namespace. (An unnamed network namespace: in a named one,
    // the `ip netns exec` check would answer first.)
    let script = format!(
        "ip link set lo up && umount -l /sys/fs/bpf || exit 99; exec {BIN} apply {} -i lo \
         --force {}",
        web(),
        host.roots().join(" ")
    );
    let out = run("unshare", &["-m", "-n", "sh", "-c", &script]);
    assert_ne!(out.code, Some(99), "unmounting: {}", out.text());
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(
        out.stderr.contains("private to this mount namespace"),
        "{}",
        out.text()
    );
    assert!(!out.stdout.contains("applied"), "{}", out.text());
}

#[test]
fn loopback_needs_force() {
    if !kernel_or_skip("loopback_needs_force") {
        return;
    }
    let host = Host::new("lo");
    let out = host.patronusc(&["apply", &web(), "-i", "lo"]);
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(
        out.stderr.contains("loopback")
            && out.stderr.contains("land")
            && out.stderr.contains("--force"),
        "{}",
        out.text()
    );
    assert!(!host.lo_pins().exists(), "nothing was pinned");
    host.apply_lo();
    assert_still_attached(&host, "apply --force");
}

#[test]
fn unload_removes_nothing_off_bpffs() {
    if !kernel_or_skip("unload_removes_nothing_off_bpffs") {
        return;
    }
    // Root's own 0700 directories, but a plain file system: what looks
    // like pins there is not ours to delete.
    let base = std::env::temp_dir().join(format!("patronus-test-hh-nobpf-{}", std::process::id()));
    let pins = base.join("pins/lo");
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&pins)
        .expect("creating the directories");
    std::fs::write(pins.join("link_xdp"), "precious").expect("writing a file");
    let out = run(
        BIN,
        &[
            "unload",
            "-i",
            "lo",
            "--pin-root",
            base.join("pins").to_str().expect("UTF-8"),
            "--state-root",
            base.join("state").to_str().expect("UTF-8"),
        ],
    );
    let kept = std::fs::read_to_string(pins.join("link_xdp")).ok();
    let _ = std::fs::remove_dir_all(&base);
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(out.stderr.contains("not on a bpffs"), "{}", out.text());
    assert_eq!(kept.as_deref(), Some("precious"));
}

#[test]
fn status_says_not_attached_once_the_interface_is_gone() {
    if !kernel_or_skip("status_says_not_attached_once_the_interface_is_gone") {
        return;
    }
    let host = Host::new("gone");
    let dummy = format!("ptd{}", std::process::id() % 100_000);
    let peer = format!("ptp{}", std::process::id() % 100_000);
    let link = |args: &[&str]| {
        let mut argv = vec!["-n", host.ns.as_str(), "link"];
        argv.extend(args);
        let out = run("ip", &argv);
        assert_eq!(out.code, Some(0), "ip {argv:?}: {}", out.text());
    };
    link(&["add", &dummy, "type", "veth", "peer", "name", &peer]);
    link(&["set", &dummy, "up"]);
    let out = host.patronusc(&["apply", &web(), "-i", &dummy, "--mode", "generic"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let out = host.patronusc(&["status", "-i", &dummy, "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert!(out.stdout.contains("\"attached\": true"), "{}", out.text());

    link(&["del", &dummy]);
    let out = host.patronusc(&["status", "-i", &dummy]);
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stdout.contains(&format!("{dummy}: NOT ATTACHED")) && out.stdout.contains("deleted"),
        "{}",
        out.text()
    );
    let out = host.patronusc(&["status", "--json"]);
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stdout.contains("\"attached\": false") && out.stdout.contains("\"problem\""),
        "{}",
        out.text()
    );

    link(&["add", &dummy, "type", "veth", "peer", "name", &peer]);
    let out = host.patronusc(&["status", "-i", &dummy]);
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(out.stdout.contains("NOT filtered"), "{}", out.text());
    let out = host.patronusc(&["unload", "-i", &dummy]);
    assert_eq!(out.code, Some(0), "{}", out.text());
}
