//! `patronusc explain POLICY PACKET [--after STEP]...`: traces one inbound
//! packet through a policy with the reference interpreter: what each phase
//! looked at and found, the verdict, the deciding rule underlined in the
//! source, and the counters the packet touched.
//!
//! PACKET is written in test syntax (LANGUAGE.md §7). Each `--after` STEP is
//! sent first, in order: `out PACKET` as a packet the host sends, `PACKET`
//! (or `in PACKET`) as an inbound one. Time is virtual as in `patronusc
//! test`: 1 ms before every packet and repetition. Output goes to stdout;
//! exit 0, or 2 for usage, I/O and compile errors.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use patronus_compiler::diag::{self, Diagnostic, Files};
use patronus_compiler::frame::{Frame, IpPacket, Transport};
use patronus_compiler::interp::conntrack::Tuple;
use patronus_compiler::interp::ratelimit::BucketKey;
use patronus_compiler::interp::{Interpreter, TraceStep};
use patronus_compiler::render::{self, Level, Report};
use patronus_compiler::typed::{
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, Policy, tcp_flags,
};
use patronus_compiler::{check, packet};

use crate::common::{
    CliError, ColorArgs, Status, TableAccessArgs, print_human_diagnostics, read_policy,
    write_stdout,
};
use crate::names::{
    PACKET_INTERVAL_NS, counters_text, phase_name, rule_name, rule_span, verdict_name,
};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The policy file.
    #[arg(value_name = "POLICY")]
    pub policy: PathBuf,
    /// The packet, in the policy's packet syntax (e.g. "tcp 10.0.0.1:1234 -> 10.0.0.2:22").
    #[arg(value_name = "PACKET")]
    pub packet: String,
    /// Earlier packets to run first (stateful policies), in order: "PACKET"
    /// for an inbound packet, "out PACKET" for one the host sends.
    #[arg(long = "after", value_name = "STEP")]
    pub after: Vec<String>,
    #[command(flatten)]
    pub color: ColorArgs,
    #[command(flatten)]
    pub tables: TableAccessArgs,
}

/// A command-line packet, typed.
struct CliPacket {
    text: String,
    outbound: bool,
    packet: Packet,
}

pub fn run(args: &ExplainArgs) -> Result<Status, CliError> {
    let loader = args.tables.loader()?;
    let mut files = Files::new();
    let file = read_policy(&mut files, &args.policy)?;
    let checked = check(&mut files, file, &loader);
    let policy = match checked.policy {
        Some(policy) if !checked.has_errors() => policy,
        _ => {
            print_human_diagnostics(&files, &checked.diagnostics, args.color.color);
            return Err(CliError::new(format!(
                "`{}` did not compile",
                args.policy.display()
            )));
        }
    };

    let mut after = Vec::new();
    for (i, step) in args.after.iter().enumerate() {
        after.push(parse_cli_packet(
            &mut files,
            &format!("--after {}", i + 1),
            step,
            true,
            args,
        )?);
    }
    let target = parse_cli_packet(&mut files, "PACKET", &args.packet, false, args)?;

    let mut report = String::new();
    let mut interp = Interpreter::new(&policy);
    let mut now_ns = 0u64;
    for step in &after {
        let frame = packet::build(&step.packet);
        let mut verdicts = Vec::new();
        for _ in 0..step.packet.repeat.max(1) {
            now_ns += PACKET_INTERVAL_NS;
            if step.outbound {
                interp.outbound(&frame, now_ns);
            } else {
                let out = interp.inbound(&frame, now_ns);
                verdicts.push(format!(
                    "{} ({})",
                    verdict_name(out.verdict),
                    phase_name(out.phase)
                ));
            }
        }
        if step.outbound {
            let _ = writeln!(report, "after: out {}: sent by the host", step.text);
        } else {
            verdicts.dedup();
            let _ = writeln!(report, "after: {}: {}", step.text, verdicts.join(", then "));
        }
    }

    let frame = packet::build(&target.packet);
    now_ns += PACKET_INTERVAL_NS;
    let (outcome, trace) = interp.inbound_traced(&frame, now_ns);
    let _ = writeln!(
        report,
        "packet: {} ({} bytes, at {} ms)",
        target.text,
        frame.len(),
        now_ns / PACKET_INTERVAL_NS
    );
    for step in &trace {
        let (phase, finding) = describe(&policy, step);
        let _ = writeln!(report, "  {phase:<12} {finding}");
    }
    let decided_by = outcome
        .rule
        .map(|r| format!(", {}", rule_name(&policy, r)))
        .unwrap_or_default();
    let _ = writeln!(
        report,
        "verdict: {} (phase {}{decided_by})",
        verdict_name(outcome.verdict),
        phase_name(outcome.phase)
    );
    let _ = writeln!(
        report,
        "counters: {}",
        counters_text(&policy, &outcome.counters)
    );
    if target.packet.repeat > 1 {
        let _ = writeln!(
            report,
            "note: `repeat` is ignored: explain traces one packet"
        );
    }
    if let Some(rule) = outcome.rule {
        report.push('\n');
        let decided = Report {
            level: Level::Note,
            message: format!("decided by {}", rule_name(&policy, rule)),
            primary: diag::Label::new(
                policy.file,
                rule_span(&policy, rule),
                phase_name(outcome.phase),
            ),
            secondary: Vec::new(),
            notes: Vec::new(),
        };
        report.push_str(&render::human_report(
            &files,
            &decided,
            args.color.color.for_stdout(),
        ));
    }
    write_stdout(&report)?;
    Ok(Status::Success)
}

/// Parses `text` (an `--after` step may start with `out` or `in`) and
/// types it; syntax and type errors are printed against the text itself.
fn parse_cli_packet(
    files: &mut Files,
    name: &str,
    text: &str,
    step: bool,
    args: &ExplainArgs,
) -> Result<CliPacket, CliError> {
    let trimmed = text.trim();
    let (outbound, body) = match trimmed.split_once(char::is_whitespace) {
        Some(("out", rest)) if step => (true, rest.trim_start()),
        Some(("in", rest)) if step => (false, rest.trim_start()),
        _ => (false, trimmed),
    };
    let file = files.add(name, body);
    let diagnostics: Vec<Diagnostic> = match patronus_grammar::parse_packet(body) {
        Err(err) => vec![diag::syntax_diagnostic(file, &err)],
        Ok(spec) => match patronus_compiler::packet_from_spec(file, body, &spec) {
            Ok(packet) => {
                return Ok(CliPacket {
                    text: patronus_grammar::print::packet(&spec),
                    outbound,
                    packet,
                });
            }
            Err(diagnostics) => diagnostics,
        },
    };
    print_human_diagnostics(files, &diagnostics, args.color.color);
    Err(CliError::new(format!(
        "{name} is not a valid packet: `{body}`"
    )))
}

/// The phase a trace step belongs to and what it found there.
pub fn describe(policy: &Policy, step: &TraceStep) -> (&'static str, String) {
    match step {
        TraceStep::Invalid(class) => ("invalid", format!("malformed: {}: drop", class.name())),
        TraceStep::Parsed(frame) => ("invalid", format!("well formed: {}", frame_summary(frame))),
        TraceStep::Arp { pass } => (
            "arp",
            format!("ARP: {} (options arp)", if *pass { "pass" } else { "drop" }),
        ),
        TraceStep::Ndp { pass } => (
            "ndp",
            format!(
                "neighbor discovery, hop limit 255: {} (options ndp)",
                if *pass { "pass" } else { "drop" }
            ),
        ),
        TraceStep::NonIp { ethertype } => (
            "invalid",
            format!("ethertype {ethertype:#06x} is not IP: to the default"),
        ),
        TraceStep::Denied(rule) => (
            "deny",
            format!("{} matches: drop", rule_name(policy, *rule)),
        ),
        TraceStep::NoDenyMatched => ("deny", "no deny rule matches".to_string()),
        TraceStep::ConntrackOff => ("established", "conntrack is off".to_string()),
        TraceStep::LoneSynNeverEstablished => (
            "established",
            "a TCP SYN without ACK is never established".to_string(),
        ),
        TraceStep::Established(hit) => (
            "established",
            format!(
                "{} of the tracked flow {}, state {}, idle {}: pass",
                if hit.is_reply { "a reply" } else { "a packet" },
                tuple_text(&hit.flow.original),
                hit.flow.state.name(),
                duration_text(hit.idle_ns)
            ),
        ),
        TraceStep::NoLiveFlow => ("established", "no live tracked flow".to_string()),
        TraceStep::TokenTaken {
            rule,
            key,
            tokens_left,
        } => (
            "rate-limit",
            format!(
                "{}: took a token from the bucket of {} ({tokens_left} left)",
                rule_name(policy, *rule),
                bucket_text(key)
            ),
        ),
        TraceStep::BucketEmpty { rule, key } => (
            "rate-limit",
            format!(
                "{}: the bucket of {} is empty: drop",
                rule_name(policy, *rule),
                bucket_text(key)
            ),
        ),
        TraceStep::NoRateLimitMatched => ("rate-limit", "no rate-limited rule matches".to_string()),
        TraceStep::Allowed(rule) => (
            "allow",
            format!("{} matches: pass", rule_name(policy, *rule)),
        ),
        TraceStep::Tracked(Some(flow)) => (
            "allow",
            format!(
                "now tracking the flow {}, state {}",
                tuple_text(&flow.original),
                flow.state.name()
            ),
        ),
        TraceStep::Tracked(None) => ("allow", "not a flow conntrack can track".to_string()),
        TraceStep::NoAllowMatched => ("allow", "no allow rule matches".to_string()),
        TraceStep::Default(verdict) => (
            "default",
            format!("options default: {}", verdict_name(*verdict)),
        ),
    }
}

fn frame_summary(frame: &Frame) -> String {
    match frame {
        Frame::Ip(ip) => ip_summary(ip),
        Frame::Arp { .. } => "ARP".to_string(),
        Frame::NonIp { ethertype, .. } => format!("ethertype {ethertype:#06x}"),
    }
}

fn ip_summary(ip: &IpPacket) -> String {
    let vlan = ip.vlan.map(|v| format!(" vlan {v}")).unwrap_or_default();
    let l4 = match ip.transport {
        Transport::Tcp {
            src_port,
            dst_port,
            flags,
        } => {
            format!("tcp {src_port} -> {dst_port} flags {}", flag_letters(flags))
        }
        Transport::Udp { src_port, dst_port } => format!("udp {src_port} -> {dst_port}"),
        Transport::Icmp { ty, code, echo_id } => {
            let id = echo_id
                .map(|id| format!(" id {id:#06x}"))
                .unwrap_or_default();
            format!("icmp type {ty} code {code}{id}")
        }
        Transport::Fragment => format!("protocol {}, a non-first fragment", ip.proto),
        Transport::Other => format!("protocol {}", ip.proto),
    };
    format!("{} -> {}{vlan}, {l4}", ip.src, ip.dst)
}

/// pf-style letters, in the order F S R P A U E W.
fn flag_letters(flags: u8) -> String {
    use tcp_flags::*;
    [
        (FIN, 'F'),
        (SYN, 'S'),
        (RST, 'R'),
        (PSH, 'P'),
        (ACK, 'A'),
        (URG, 'U'),
        (ECE, 'E'),
        (CWR, 'W'),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, letter)| *letter)
    .collect()
}

fn tuple_text(t: &Tuple) -> String {
    format!(
        "{} {} -> {}",
        proto_name(t.proto),
        endpoint(t.src, t.src_port),
        endpoint(t.dst, t.dst_port)
    )
}

fn proto_name(proto: u8) -> String {
    match proto {
        PROTO_TCP => "tcp".to_string(),
        PROTO_UDP => "udp".to_string(),
        PROTO_ICMP => "icmp".to_string(),
        PROTO_ICMPV6 => "icmpv6".to_string(),
        other => format!("proto {other}"),
    }
}

fn endpoint(addr: std::net::IpAddr, port: u16) -> String {
    match addr {
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
    }
}

fn bucket_text(key: &BucketKey) -> String {
    match key {
        BucketKey::Src(addr) => format!("src {addr}"),
        BucketKey::Dst(addr) => format!("dst {addr}"),
        BucketKey::Flow {
            proto,
            src,
            dst,
            src_port,
            dst_port,
        } => {
            format!(
                "flow {} {} -> {}",
                proto_name(*proto),
                endpoint(*src, *src_port),
                endpoint(*dst, *dst_port)
            )
        }
        BucketKey::Global => "the whole policy (global)".to_string(),
    }
}

fn duration_text(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else {
        format!("{} ms", ns / 1_000_000)
    }
}
