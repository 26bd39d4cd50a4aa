//! `patronusc agent` as the Kubernetes DaemonSet of
//! `deploy/kubernetes/patronus.yaml` runs it: the container's command line,
//! the agent configuration and the policy taken from the manifest's
//! ConfigMaps, and its mounts laid out as directories (the ConfigMap
//! volumes, `/run/patronus`; bpffs is the host's). The agent runs as a
//! separate process in the server namespace of a veth pair (the "host
//! network" of the pod) and is checked from outside with real connections,
//! HTTP requests to /healthz and /metrics, and control-socket table
//! updates: it applies at start, re-applies on an edit, keeps the last
//! good policy when an edit fails, re-applies when the interface is
//! deleted and re-created, and a table update through the socket changes
//! what is dropped. It prints the control socket's update latency.

#[path = "../../tests/tests/netns/mod.rs"]
mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{CLIENT, SERVER, Setup, connects, echo_server, in_netns};
use patronus_runtime::testing::kernel_or_skip;

const MANIFEST: &str = "deploy/kubernetes/patronus.yaml";

/// The text of block scalar `KEY: |` in the manifest (the first one),
/// without its indentation.
fn block_scalar(manifest: &str, key: &str) -> String {
    let mut lines = manifest.lines();
    let header = format!("{key}: |");
    let start = lines
        .by_ref()
        .find(|line| line.trim() == header)
        .unwrap_or_else(|| panic!("{MANIFEST} has no `{header}`"));
    let indent = start.len() - start.trim_start().len() + 2;
    let mut text = String::new();
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        text.push_str(line.get(indent..).unwrap_or(""));
        text.push('\n');
    }
    text
}

/// The container's `command: [...]` (a YAML flow sequence of double-quoted
/// strings, which is JSON).
fn container_command(manifest: &str) -> Vec<String> {
    let line = manifest
        .lines()
        .find_map(|line| line.trim().strip_prefix("command: "))
        .unwrap_or_else(|| panic!("{MANIFEST} has no container command"));
    serde_json::from_str(line).expect("the command is a flow sequence of strings")
}

/// The agent process; killed when the test ends, however it ends.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on the agent's port, from inside the server namespace.
fn http_get(ns: &str, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    in_netns(ns, move || {
        let mut stream =
            TcpStream::connect_timeout(&"127.0.0.1:9560".parse().ok()?, Duration::from_secs(2))
                .ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split("\r\n\r\n").nth(1)?.to_owned();
        Some((code, body))
    })
}

/// Polls `check` every 100 ms for up to `secs` seconds.
fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

fn condition(ns: &str, iface: &str) -> Option<(u16, String)> {
    let (code, body) = http_get(ns, "/healthz")?;
    let health: serde_json::Value = serde_json::from_str(&body).ok()?;
    let state = health["interfaces"]
        .as_array()?
        .iter()
        .find(|s| s["iface"] == iface)?;
    Some((code, state["condition"].as_str()?.to_owned()))
}

/// The container's view of one host path, under the test's root.
fn host(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[test]
fn the_daemonset_agent_applies_reapplies_keeps_the_last_good_policy_and_takes_table_updates() {
    if !kernel_or_skip(
        "the_daemonset_agent_applies_reapplies_keeps_the_last_good_policy_and_takes_table_updates",
    ) {
        return;
    }
    let manifest =
        std::fs::read_to_string(netns::repo_root().join(MANIFEST)).expect("reading the manifest");
    let setup = Setup::new("agent");
    let root = setup.state_root.join("container");

    // The ConfigMap volumes as directories; the policy key is renamed to
    // the test's interface (the manifest's is eth0).
    let policies = host(&root, "/etc/patronus/policies");
    std::fs::create_dir_all(&policies).expect("policy volume");
    let policy_text = block_scalar(&manifest, "eth0.pf");
    let policy = policies.join(format!("{}.pf", setup.iface));
    std::fs::write(&policy, &policy_text).expect("writing the policy");
    let command = container_command(&manifest);
    assert_eq!(command[..3], ["/usr/bin/patronusc", "agent", "--config"]);
    let config_path = host(&root, &command[3]);
    std::fs::create_dir_all(config_path.parent().expect("a directory")).expect("config volume");
    // The container's paths, rooted in the test's directory; the pins under
    // the test's own pin root on the host's bpffs.
    let config = block_scalar(&manifest, "agent.conf")
        .replace(
            "/etc/patronus",
            &host(&root, "/etc/patronus").display().to_string(),
        )
        .replace(
            "/run/patronus",
            &host(&root, "/run/patronus").display().to_string(),
        );
    let config = format!("{config}pin-root {}\n", setup.pin_root.display());
    std::fs::write(&config_path, &config).expect("writing the agent configuration");
    let control = host(&root, "/run/patronus/agent.sock");

    echo_server(&setup.server, SERVER, 80);
    echo_server(&setup.server, SERVER, 8080);
    let log = setup.state_root.join("agent.log");
    let agent = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", setup.server))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_patronusc"))
        .args(&command[1..3])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("the log file"))
        .spawn()
        .expect("starting the agent");
    let _agent = AgentProcess(agent);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Start: applied, healthy, enforcing.
    assert!(
        eventually(20, || condition(&setup.server, &setup.iface)
            == Some((200, "enforcing".into()))),
        "the agent applied the ConfigMap's policy: {:?}\n{}",
        condition(&setup.server, &setup.iface),
        log_text()
    );
    assert!(connects(&setup.client, SERVER, 80), "web is allowed");
    assert!(!connects(&setup.client, SERVER, 8080), "8080 is dropped");

    // An edit of the policy is applied.
    let opened = policy_text.replace("{ 80, 443 }", "{ 80, 443, 8080 }");
    assert_ne!(opened, policy_text);
    std::fs::write(&policy, &opened).expect("editing the policy");
    assert!(
        eventually(10, || connects(&setup.client, SERVER, 8080)),
        "the edit opened 8080:\n{}",
        log_text()
    );

    // The interface goes and comes back: the health page says so at once
    // (it checks the kernel, not its last note), and the agent applies again.
    let applies = |text: &str| text.matches("\"event\":\"applied\"").count();
    let before = applies(&log_text());
    setup.delete_veth();
    setup.create_veth();
    let health = condition(&setup.server, &setup.iface);
    assert!(
        health == Some((503, "unprotected".into())) || applies(&log_text()) > before,
        "a re-created interface without its program is not healthy: {health:?}"
    );
    assert!(
        eventually(10, || applies(&log_text()) > before),
        "re-applied on the re-created interface:\n{}",
        log_text()
    );
    assert_eq!(
        condition(&setup.server, &setup.iface),
        Some((200, "enforcing".into()))
    );
    // A re-created interface may get its old index back; either way the
    // link was gone and the agent says why it applied.
    assert!(
        log_text().contains("\"reason\":\"interface re-created\"")
            || log_text().contains("\"reason\":\"not attached\""),
        "{}",
        log_text()
    );
    assert!(
        connects(&setup.client, SERVER, 8080),
        "the edited policy runs"
    );
    assert!(!connects(&setup.client, SERVER, 22), "and enforces");

    // A broken edit: the last good policy stays, and says so.
    std::fs::write(&policy, "allow tcp to port\n").expect("breaking the policy");
    assert!(
        eventually(10, || condition(&setup.server, &setup.iface)
            == Some((200, "enforcing the last good policy".into()))),
        "{:?}\n{}",
        condition(&setup.server, &setup.iface),
        log_text()
    );
    assert!(log_text().contains("\"event\":\"apply failed\""));
    assert!(
        connects(&setup.client, SERVER, 8080),
        "the last good policy still allows 8080"
    );
    assert!(!connects(&setup.client, SERVER, 22));
    std::fs::write(&policy, &opened).expect("mending the policy");
    assert!(eventually(10, || condition(&setup.server, &setup.iface)
        == Some((200, "enforcing".into()))));

    // Metrics: the agent's series and the policy's counters.
    let (code, metrics) = http_get(&setup.server, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    let enforcing = format!("patronus_agent_enforcing{{iface=\"{}\"}} 1", setup.iface);
    assert!(metrics.contains(&enforcing), "{metrics}");
    assert!(
        metrics.contains("patronus_rule_packets_total{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("patronus_agent_scrape_errors 0"),
        "{metrics}"
    );
    assert_eq!(http_get(&setup.server, "/nothing").map(|r| r.0), Some(404));

    // Table updates through the control socket (root only: mode 0600).
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&control)
            .expect("the control socket")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let stream = UnixStream::connect(&control).expect("connecting to the control socket");
    let mut writer = stream.try_clone().expect("a second handle");
    let mut reader = BufReader::new(stream);
    let mut ask = |line: &str| {
        writer
            .write_all(format!("{line}\n").as_bytes())
            .expect("sending");
        let mut answer = String::new();
        reader.read_line(&mut answer).expect("an answer");
        answer.trim().to_owned()
    };
    let iface = setup.iface.clone();
    assert_eq!(
        ask(&format!("table add {iface} blocklist {CLIENT}/32")),
        "ok"
    );
    assert!(
        !connects(&setup.client, SERVER, 80),
        "the client is blocked"
    );
    assert_eq!(
        ask(&format!("table del {iface} blocklist {CLIENT}/32")),
        "ok"
    );
    assert!(connects(&setup.client, SERVER, 80), "and unblocked");
    assert!(ask(&format!("table add {iface} nosuch 192.0.2.1/32")).starts_with("error: "));
    assert!(ask("reboot now").starts_with("error: unknown request"));
    assert!(ask(&format!("table add {iface} blocklist --pin-root /tmp")).starts_with("error: "));

    // Latency of single updates on one connection (printed, not asserted:
    // timing is measured by benchmarks, not tests). A table of more than 16
    // IPv4 prefixes lives in a map, which an update writes in place; the
    // ConfigMap's one-prefix table compiles to compares, so each update
    // above recompiled the policy.
    let before = applies(&log_text());
    let big: Vec<String> = (0..20).map(|n| format!("203.0.113.{n}/32")).collect();
    let mapped = opened.replace(
        "table blocklist { 203.0.113.128/25 }",
        &format!("table blocklist {{ 203.0.113.128/25, {} }}", big.join(", ")),
    );
    assert_ne!(mapped, opened);
    std::fs::write(&policy, &mapped).expect("growing the table");
    assert!(
        eventually(10, || applies(&log_text()) > before),
        "{}",
        log_text()
    );
    let mut micros = Vec::new();
    for n in 0..1000u32 {
        let prefix = format!("198.51.100.{}/32", (n / 2) % 250);
        let action = if n % 2 == 0 { "add" } else { "del" };
        let start = Instant::now();
        let answer = ask(&format!("table {action} {iface} blocklist {prefix}"));
        micros.push(start.elapsed().as_micros());
        assert_eq!(answer, "ok", "update {n}");
    }
    micros.sort_unstable();
    eprintln!(
        "control socket table updates: n=1000 p50 {} µs, p99 {} µs, max {} µs",
        micros[500], micros[990], micros[999]
    );
    let (_, metrics) = http_get(&setup.server, "/metrics").expect("GET /metrics");
    assert!(
        metrics.contains("patronus_agent_table_updates_total{result=\"ok\"} 1002"),
        "{metrics}"
    );
}
