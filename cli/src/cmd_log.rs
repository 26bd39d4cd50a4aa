//! `patronusc log -i IFACE`: prints the events of `log` rules from the
//! applied policy's pinned ring buffer (time, rule, verdict, 5-tuple),
//! until interrupted or `--count` events.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use patronus_codegen::abi::log::{LogEvent, RINGBUF_NAME};
use patronus_runtime::events::{self, EventReader};
use patronus_runtime::host::IfaceName;

use crate::common::{CliError, Status, require_root_to_read, runtime_err, utc_time, write_stdout};
use crate::state_dir::{Roots, read_meta};

#[derive(Debug, Args)]
pub struct LogArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: IfaceName,
    /// Stop after N events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Give up after waiting this long for the next event (`10s`, `500ms`).
    #[arg(long, value_name = "DURATION", value_parser = crate::common::parse_duration)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub roots: Roots,
}

fn endpoint(addr: IpAddr, port: u16, with_port: bool) -> String {
    match (addr, with_port) {
        (IpAddr::V6(a), true) => format!("[{a}]:{port}"),
        (a, true) => format!("{a}:{port}"),
        (a, false) => a.to_string(),
    }
}

/// One event as a line: time, rule, verdict, protocol, source ->
/// destination. `rule_name` names rule ids (`rule 2 "web"`).
pub fn format_event(event: &LogEvent, rule_name: &str, unix_ns: u64) -> String {
    let proto = match event.proto {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        58 => "icmpv6".to_owned(),
        n => format!("proto {n}"),
    };
    let ports = matches!(event.proto, 6 | 17);
    format!(
        "{} {rule_name} {} {proto} {} -> {}",
        utc_time(unix_ns),
        if event.pass { "pass" } else { "drop" },
        endpoint(event.src, event.src_port, ports),
        endpoint(event.dst, event.dst_port, ports),
    )
}

/// Reads up to `count` events (all that come, when `None`) from the
/// policy on `iface`, handing each formatted line to `emit`; stops early
/// when `timeout` passes without an event. Returns how many it read.
pub fn read_events(
    roots: &Roots,
    iface: &str,
    count: Option<u64>,
    timeout: Option<Duration>,
    emit: &mut dyn FnMut(String) -> Result<(), CliError>,
) -> Result<u64, CliError> {
    let iface = IfaceName::new(iface).map_err(|e| CliError::new(e.to_string()))?;
    require_root_to_read()?;
    // Settled first; the lock is not held while events are read.
    drop(crate::settle::settle(roots, &iface)?);
    let Some(pins) = roots.host().existing_pins(&iface)? else {
        return Err(CliError::new(format!("{iface}: no policy applied")));
    };
    let path = pins.map(RINGBUF_NAME);
    if !pins.installed() {
        return Err(CliError::new(format!("{iface}: no policy applied")));
    }
    if !path.exists() {
        return Err(CliError::new(format!(
            "{iface}: the applied policy logs nothing (no rule has `log`)"
        )));
    }
    let counters = read_meta(roots, &iface)?
        .map(|meta| meta.counters)
        .unwrap_or_default();
    let iface = iface.as_str();
    let mut reader = EventReader::open(&path).map_err(runtime_err(iface))?;
    let mut read = 0;
    while count.is_none_or(|n| read < n) {
        let Some(event) = reader.next(timeout).map_err(runtime_err(iface))? else {
            break;
        };
        let number = event.rule + 1;
        let name = counters
            .iter()
            .find(|c| c.rule == Some(number))
            .map_or_else(|| format!("rule {number}"), |c| c.name.clone());
        // The event's clock is the monotonic one: place it on the wall
        // clock by its age.
        let age = events::monotonic_ns().saturating_sub(event.time_ns);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        emit(format_event(&event, &name, now.saturating_sub(age)))?;
        read += 1;
    }
    Ok(read)
}

pub fn run_log(args: &LogArgs) -> Result<Status, CliError> {
    let mut emit = |line: String| {
        let mut text = line;
        let _ = writeln!(text);
        write_stdout(&text)
    };
    let read = read_events(
        &args.roots,
        args.iface.as_str(),
        args.count,
        args.timeout,
        &mut emit,
    )?;
    if args.count.is_some_and(|n| read < n) {
        eprintln!(
            "patronusc: {}: only {read} event(s) before the timeout",
            args.iface
        );
        return Ok(Status::Failure);
    }
    Ok(Status::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_time_rule_verdict_and_flow() {
        let event = LogEvent {
            time_ns: 0,
            rule: 1,
            pass: false,
            proto: 6,
            src: "2001:db8::20".parse().expect("an address"),
            dst: "2001:db8::80".parse().expect("an address"),
            src_port: 40000,
            dst_port: 80,
        };
        assert_eq!(
            format_event(&event, "rule 2 \"web\"", 0),
            "1970-01-01 00:00:00.000 rule 2 \"web\" drop tcp [2001:db8::20]:40000 -> [2001:db8::80]:80"
        );
        let ping = LogEvent {
            proto: 1,
            pass: true,
            src: "192.0.2.20".parse().expect("an address"),
            dst: "192.0.2.80".parse().expect("an address"),
            src_port: 0,
            dst_port: 0,
            ..event
        };
        assert_eq!(
            format_event(&ping, "rule 2", 0),
            "1970-01-01 00:00:00.000 rule 2 pass icmp 192.0.2.20 -> 192.0.2.80"
        );
    }
}
