//! The agent's HTTP endpoints: `GET /metrics` (Prometheus text: the
//! per-rule and per-phase counters `patronusc stats --prometheus` prints,
//! plus the agent's own gauges and counters) and `GET /healthz` (200 when
//! every present interface is enforcing a policy, else 503; JSON body).
//! A deliberately small HTTP/1.0-style server on std: one short-lived
//! thread a connection, bounded request size and time.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser as _;

use super::{IfaceState, Shared};

const MAX_REQUEST: usize = 8 * 1024;

/// Binds `addr` and serves on a background thread; returns the bound
/// address (port 0 picks one).
pub fn serve(addr: SocketAddr, shared: Arc<Shared>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let _ = handle(stream, &shared);
            });
        }
    });
    Ok(bound)
}

fn handle(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&request);
    let mut words = text.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics(shared)),
        ("GET", "/healthz") => {
            let states = shared.states();
            let healthy = is_healthy(&states);
            let body = health_body(&states, healthy);
            let status = if healthy {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", body)
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

/// Healthy when no interface that exists is left without a policy. An
/// interface that is absent is waiting, not failing; one whose latest
/// file failed but whose last good policy runs is healthy (and says so).
pub fn is_healthy(states: &[IfaceState]) -> bool {
    states.iter().all(|s| !s.present || s.enforcing)
}

fn health_body(states: &[IfaceState], healthy: bool) -> String {
    let interfaces: Vec<serde_json::Value> = states
        .iter()
        .map(|s| {
            let mut value = serde_json::to_value(s).unwrap_or_default();
            value["condition"] = s.condition().into();
            value
        })
        .collect();
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "unprotected" },
        "interfaces": interfaces,
    });
    format!("{body}\n")
}

fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP and TYPE lines, then a sample per
/// `(labels, value)`, the labels already rendered (`iface="eth0"`).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, value) in samples {
        out.push_str(&format!("{name}{{{labels}}} {value}\n"));
    }
}

/// The agent's own series, then the policies' counters.
pub fn metrics(shared: &Shared) -> String {
    let states = shared.states();
    let iface = |s: &IfaceState| format!("iface=\"{}\"", label(&s.iface));
    let per_iface = |value: &dyn Fn(&IfaceState) -> Option<u64>| -> Vec<(String, u64)> {
        states
            .iter()
            .filter_map(|s| Some((iface(s), value(s)?)))
            .collect()
    };
    let mut out = String::new();
    family(
        &mut out,
        "patronus_agent_enforcing",
        "gauge",
        "1 when the interface's XDP program is attached to it.",
        per_iface(&|s| Some(u64::from(s.enforcing))),
    );
    family(
        &mut out,
        "patronus_agent_policy_current",
        "gauge",
        "1 when the policy file as it is now is the one applied.",
        per_iface(&|s| Some(u64::from(s.current))),
    );
    let applies = states
        .iter()
        .flat_map(|s| {
            [("ok", s.applies_ok), ("error", s.applies_failed)]
                .map(|(result, n)| (format!("{},result=\"{result}\"", iface(s)), n))
        })
        .collect();
    family(
        &mut out,
        "patronus_agent_applies_total",
        "counter",
        "Applies by the agent, by result.",
        applies,
    );
    family(
        &mut out,
        "patronus_agent_last_apply_timestamp_seconds",
        "gauge",
        "Unix time of the latest successful apply.",
        per_iface(&|s| s.last_applied),
    );
    let updates = [
        ("ok", &shared.table_updates_ok),
        ("error", &shared.table_updates_failed),
    ]
    .map(|(result, n)| (format!("result=\"{result}\""), n.load(Ordering::Relaxed)));
    family(
        &mut out,
        "patronus_agent_table_updates_total",
        "counter",
        "Table updates taken on the control socket, by result.",
        updates.to_vec(),
    );
    let enforcing: Vec<&str> = states
        .iter()
        .filter(|s| s.enforcing)
        .map(|s| s.iface.as_str())
        .collect();
    out.push_str(&policy_counters(shared, &enforcing));
    out
}

/// `patronusc stats ...` alone: the agent reads counters the way the
/// command does, without the whole command line's grammar.
#[derive(clap::Parser)]
#[command(name = "patronusc")]
struct StatsLine {
    #[command(subcommand)]
    command: StatsOnly,
}

#[derive(clap::Subcommand)]
enum StatsOnly {
    Stats(crate::cmd_stats::StatsArgs),
}

/// `stats --prometheus` for the enforcing interfaces; an interface whose
/// counters cannot be read is a comment and a scrape-error sample, never a
/// silently missing series.
fn policy_counters(shared: &Shared, ifaces: &[&str]) -> String {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for iface in ifaces {
        let argv = ["patronusc", "stats", "--prometheus", "-i", iface]
            .into_iter()
            .map(str::to_owned)
            .chain(shared.roots.iter().cloned());
        let collected = match StatsLine::try_parse_from(argv) {
            Ok(StatsLine {
                command: StatsOnly::Stats(args),
            }) => crate::cmd_stats::collect(&args).map_err(|e| e.message),
            Err(error) => Err(error.to_string()),
        };
        match collected {
            Ok(stats) => rows.extend(stats),
            Err(error) => errors.push(((*iface).to_owned(), error)),
        }
    }
    let mut out = crate::cmd_stats::format_prometheus(&rows);
    out.push_str(
        "# HELP patronus_agent_scrape_errors Interfaces whose counters could not be read.\n\
         # TYPE patronus_agent_scrape_errors gauge\n",
    );
    out.push_str(&format!("patronus_agent_scrape_errors {}\n", errors.len()));
    for (iface, error) in errors {
        out.push_str(&format!("# {iface}: {}\n", error.replace('\n', " ")));
    }
    out
}
