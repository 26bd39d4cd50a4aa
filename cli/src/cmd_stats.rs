//! `patronusc stats`: the per-rule and per-phase counters of applied
//! policies, read through read-only map descriptors and labelled with the
//! layout `apply` recorded. Output as a table, JSON, or the Prometheus
//! text exposition format; `--watch` redraws the table every few seconds.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use patronus_runtime::deploy::roles;
use patronus_runtime::host::IfaceName;
use patronus_runtime::install;
use serde::Serialize;

use crate::common::{CliError, Status, runtime_err, write_stdout};
use crate::state_dir::{Roots, read_meta};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this interface (default: every interface with a policy).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: Option<IfaceName>,
    /// Print JSON.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print the Prometheus text exposition format.
    #[arg(long)]
    pub prometheus: bool,
    /// Redraw every SECS seconds (default 2) until interrupted.
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "2",
        value_parser = clap::value_parser!(u64).range(1..),
        conflicts_with_all = ["json", "prometheus"]
    )]
    pub watch: Option<u64>,
    #[command(flatten)]
    pub roots: Roots,
}

/// One counter of one applied policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatRow {
    /// `rule` or `phase`.
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The rule's number (1-based), for rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// The counters of each interface, in layout order.
pub type Stats = Vec<(String, Vec<StatRow>)>;

/// Reads the counters of the interfaces `args` names.
pub fn collect(args: &StatsArgs) -> Result<Stats, CliError> {
    crate::common::require_root_to_read()?;
    let names = match &args.iface {
        Some(iface) => vec![iface.clone()],
        None => args.roots.interfaces()?,
    };
    let mut all = Vec::new();
    for iface in &names {
        // Under the interface lock, settled: the metadata (the counter
        // layout) and the map read are of one policy, the running one.
        let _lock = match install::missing_privileges() {
            None => Some(crate::settle::settle(&args.roots, iface)?),
            Some(_) => None,
        };
        let pins = args
            .roots
            .host()
            .existing_pins(iface)?
            .ok_or_else(|| CliError::new(format!("{iface}: no policy applied")))?;
        let meta = read_meta(&args.roots, iface)?.ok_or_else(|| {
            CliError::new(format!(
                "{iface}: no policy metadata in {} (applied by patronusc apply?)",
                args.roots.state_root.display()
            ))
        })?;
        let fd = install::live_map(&pins, roles::STATS_MAP, true)
            .map_err(runtime_err(iface.as_str()))?;
        let values = install::read_counters(std::os::fd::AsFd::as_fd(&fd))
            .map_err(runtime_err(iface.as_str()))?;
        let rows = meta
            .counters
            .iter()
            .zip(values)
            .map(|(counter, words)| StatRow {
                kind: counter.kind.clone(),
                name: counter.name.clone(),
                location: counter.location.clone(),
                rule: counter.rule,
                label: counter.label.clone(),
                packets: words.first().copied().unwrap_or(0),
                bytes: words.get(1).copied().unwrap_or(0),
            })
            .collect();
        all.push((iface.to_string(), rows));
    }
    Ok(all)
}

/// The human-readable table.
pub fn format_table(all: &Stats) -> String {
    let mut out = String::new();
    for (iface, rows) in all {
        let _ = writeln!(out, "{iface}:");
        let _ = writeln!(out, "  {:>12} {:>14}  counter", "packets", "bytes");
        for row in rows {
            let _ = writeln!(
                out,
                "  {:>12} {:>14}  {}{}{}",
                row.packets,
                row.bytes,
                if row.kind == "phase" { "phase " } else { "" },
                row.name,
                row.location
                    .as_ref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default()
            );
        }
    }
    if all.is_empty() {
        out.push_str("no policy is applied\n");
    }
    out
}

/// A label value in the exposition format: backslash, double quote and
/// newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition format: `patronus_rule_packets_total`,
/// `patronus_rule_bytes_total` (labels iface, rule, label, location) and
/// `patronus_phase_packets_total`, `patronus_phase_bytes_total` (labels
/// iface, phase).
pub fn format_prometheus(all: &Stats) -> String {
    let mut out = String::new();
    let families = [
        (
            "rule",
            "packets",
            "Packets a rule matched and took part in.",
        ),
        ("rule", "bytes", "Bytes of the packets a rule took part in."),
        (
            "phase",
            "packets",
            "Packets decided by an evaluation phase.",
        ),
        ("phase", "bytes", "Bytes of the packets decided by a phase."),
    ];
    for (kind, unit, help) in families {
        let metric = format!("patronus_{kind}_{unit}_total");
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} counter");
        for (iface, rows) in all {
            for row in rows.iter().filter(|r| r.kind == kind) {
                let value = if unit == "packets" {
                    row.packets
                } else {
                    row.bytes
                };
                let labels = if kind == "rule" {
                    format!(
                        "iface=\"{}\",rule=\"{}\",label=\"{}\",location=\"{}\"",
                        label_value(iface),
                        row.rule.map(|n| n.to_string()).unwrap_or_default(),
                        label_value(row.label.as_deref().unwrap_or("")),
                        label_value(row.location.as_deref().unwrap_or(""))
                    )
                } else {
                    format!(
                        "iface=\"{}\",phase=\"{}\"",
                        label_value(iface),
                        label_value(&row.name)
                    )
                };
                let _ = writeln!(out, "{metric}{{{labels}}} {value}");
            }
        }
    }
    out
}

pub fn run_stats(args: &StatsArgs) -> Result<Status, CliError> {
    if let Some(secs) = args.watch {
        loop {
            let all = collect(args)?;
            // Home the cursor and clear the screen, then redraw.
            write_stdout(&format!(
                "\x1b[H\x1b[2J(every {secs}s, Ctrl-C to stop)\n{}",
                format_table(&all)
            ))?;
            std::thread::sleep(Duration::from_secs(secs));
        }
    }
    let all = collect(args)?;
    if args.json {
        let json: serde_json::Map<String, serde_json::Value> = all
            .into_iter()
            .map(|(iface, rows)| (iface, serde_json::json!(rows)))
            .collect();
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| CliError::new(format!("cannot encode JSON: {e}")))?;
        write_stdout(&format!("{text}\n"))?;
    } else if args.prometheus {
        write_stdout(&format_prometheus(&all))?;
    } else {
        write_stdout(&format_table(&all))?;
    }
    Ok(Status::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        vec![(
            "eth0".to_owned(),
            vec![
                StatRow {
                    kind: "rule".into(),
                    name: "rule 2 \"web\"".into(),
                    location: Some("/etc/web.pf:20".into()),
                    rule: Some(2),
                    label: Some("web \"main\"".into()),
                    packets: 7,
                    bytes: 420,
                },
                StatRow {
                    kind: "rule".into(),
                    name: "rule 3".into(),
                    location: Some("/etc/web.pf:21".into()),
                    rule: Some(3),
                    label: None,
                    packets: 0,
                    bytes: 0,
                },
                StatRow {
                    kind: "phase".into(),
                    name: "invalid (bad-checksum)".into(),
                    location: None,
                    rule: None,
                    label: None,
                    packets: 1,
                    bytes: 60,
                },
            ],
        )]
    }

    #[test]
    fn prometheus_exposition() {
        let text = format_prometheus(&sample());
        let expected = "\
# HELP patronus_rule_packets_total Packets a rule matched and took part in.
# TYPE patronus_rule_packets_total counter
patronus_rule_packets_total{iface=\"eth0\",rule=\"2\",label=\"web \\\"main\\\"\",location=\"/etc/web.pf:20\"} 7
patronus_rule_packets_total{iface=\"eth0\",rule=\"3\",label=\"\",location=\"/etc/web.pf:21\"} 0
# HELP patronus_rule_bytes_total Bytes of the packets a rule took part in.
# TYPE patronus_rule_bytes_total counter
patronus_rule_bytes_total{iface=\"eth0\",rule=\"2\",label=\"web \\\"main\\\"\",location=\"/etc/web.pf:20\"} 420
patronus_rule_bytes_total{iface=\"eth0\",rule=\"3\",label=\"\",location=\"/etc/web.pf:21\"} 0
# HELP patronus_phase_packets_total Packets decided by an evaluation phase.
# TYPE patronus_phase_packets_total counter
patronus_phase_packets_total{iface=\"eth0\",phase=\"invalid (bad-checksum)\"} 1
# HELP patronus_phase_bytes_total Bytes of the packets decided by a phase.
# TYPE patronus_phase_bytes_total counter
patronus_phase_bytes_total{iface=\"eth0\",phase=\"invalid (bad-checksum)\"} 60
";
        assert_eq!(text, expected);
    }

    #[test]
    fn table_for_watch() {
        let expected = "\
eth0:
       packets          bytes  counter
             7            420  rule 2 \"web\" (/etc/web.pf:20)
             0              0  rule 3 (/etc/web.pf:21)
             1             60  phase invalid (bad-checksum)
";
        assert_eq!(format_table(&sample()), expected);
        assert_eq!(format_table(&Vec::new()), "no policy is applied\n");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
