//! `patronusc apply --confirm DURATION`, `patronusc confirm -i IFACE` and
//! the rollback watcher behind them.
//!
//! Every apply saves the sources it compiled (policy text and table files,
//! a [`Snapshot`]) in `STATE_ROOT/IFACE/snapshot.json`. An apply with
//! `--confirm` also records, in its transaction ([`crate::txn`]) and so
//! durably before the swap, `pending.json`: a token, the deadline, and the
//! snapshot of the policy to go back to (the last confirmed one: a second
//! unconfirmed apply keeps the first one's fallback). Still before the
//! swap it starts a detached watcher (this binary again, hidden
//! `rollback-watcher` subcommand, its own process group, no stdio) that
//! sleeps until the deadline and then settles the interface like any
//! command. The deadline does not depend on the watcher: every later
//! command on the interface (status included) performs an overdue
//! rollback first (`overdue_rollback`), and `status` shows a pending
//! confirmation and, loudly, one it could not roll back. A rollback
//! re-applies the fallback through the same transaction (or unloads when
//! there was no policy before), logging to `rollback.log`. Everything
//! happens under the interface lock, so a confirm and a rollback never
//! both win; a `confirm` after the deadline fails and says the policy was
//! rolled back. A plain apply cancels a pending rollback: it says the
//! operator is still there.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use patronus_compiler::typed::Policy;
use patronus_runtime::host::{IfaceName, StateDir, StateFile};
use patronus_runtime::install;
use serde::{Deserialize, Serialize};

use crate::cmd_apply::{
    ApplyLock, Applying, Commit, Mode, Roots, Snapshot, apply_locked_with, compile_snapshot,
    runtime_err,
};
use crate::common::{CliError, ColorArgs, Status, write_stdout};
use crate::txn::{Op, PendingChange, Txn};

#[derive(Debug, Args)]
pub struct ConfirmArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: IfaceName,
    #[command(flatten)]
    pub roots: Roots,
}

/// The hidden watcher subcommand `apply --confirm` starts.
#[derive(Debug, Args)]
pub struct WatcherArgs {
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: IfaceName,
    #[arg(long)]
    pub token: String,
    /// How long to wait before rolling back, in milliseconds.
    #[arg(long)]
    pub after_ms: u64,
    #[command(flatten)]
    pub roots: Roots,
}

/// `STATE_ROOT/IFACE/pending.json`: an apply waiting for confirmation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub token: String,
    /// Milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    /// What to go back to; `None`: there was no policy, unload.
    pub previous: Option<Snapshot>,
}

/// `90s`, `5m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (like 90s, 5m, 500ms)"))?;
    let millis = match unit {
        "ms" => Some(number),
        "" | "s" => number.checked_mul(1000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return Err(format!("`{text}`: the unit is one of ms, s, m, h")),
    };
    match millis {
        Some(0) => Err("the confirmation time must be more than zero".into()),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(format!("`{text}` is too long")),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn read_json<T: for<'de> Deserialize<'de>>(
    state: &StateDir,
    file: &StateFile,
) -> Result<Option<T>, CliError> {
    Ok(state
        .read(file)?
        .and_then(|text| serde_json::from_str(&text).ok()))
}

/// The pending apply recorded in `state`, if any.
pub fn pending(state: &StateDir) -> Result<Option<Pending>, CliError> {
    read_json(state, &StateFile::Pending)
}

/// What an apply with `--confirm` will record once it succeeds.
pub struct ConfirmPlan {
    within: Duration,
    previous: Option<Snapshot>,
}

/// Called with the interface lock held, before the policy is installed:
/// with `--confirm`, decides what a rollback goes back to.
pub(crate) fn before_apply(
    roots: &Roots,
    lock: &ApplyLock,
    iface: &IfaceName,
    confirm: Option<Duration>,
) -> Result<Option<ConfirmPlan>, CliError> {
    let Some(within) = confirm else {
        return Ok(None);
    };
    let previous = match pending(&lock.state)? {
        // Still unconfirmed: the fallback stays the last confirmed policy.
        Some(pending) => pending.previous,
        None if roots.pins(iface).installed() => {
            let snapshot = read_json(&lock.state, &StateFile::Snapshot)?;
            if snapshot.is_none() {
                return Err(CliError::new(format!(
                    "{iface}: the running policy's sources were not saved (applied by an older \
                     patronusc?): nothing to roll back to; apply it again first"
                )));
            }
            snapshot
        }
        None => None,
    };
    Ok(Some(ConfirmPlan { within, previous }))
}

/// The rollback watcher of one `--confirm` apply.
pub(crate) struct Watcher {
    token: String,
    after_ms: u64,
    /// Tests run the watcher in-process instead (`--no-watcher`).
    spawn: bool,
}

impl Watcher {
    /// Starts the watcher (before the swap: a kill after the swap must
    /// not leave the policy without one).
    pub(crate) fn start(&self, roots: &Roots, iface: &IfaceName) -> Result<(), CliError> {
        if self.spawn {
            spawn_watcher(roots, iface, &self.token, self.after_ms)?;
        }
        Ok(())
    }
}

impl ConfirmPlan {
    /// The pending record and its watcher, the deadline counted from now.
    pub(crate) fn arm(&self, spawn: bool) -> (Pending, Watcher) {
        // Unique per apply: the time and this process.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let token = format!("{nanos:x}-{:x}", std::process::id());
        let within_ms = u64::try_from(self.within.as_millis()).unwrap_or(u64::MAX);
        let pending = Pending {
            token: token.clone(),
            deadline_ms: now_ms().saturating_add(within_ms),
            previous: self.previous.clone(),
        };
        let watcher = Watcher {
            token,
            after_ms: within_ms,
            spawn,
        };
        (pending, watcher)
    }

    pub(crate) fn report(&self, iface: &IfaceName, report: &mut String) {
        let fallback = if self.previous.is_some() {
            "the previous policy comes back"
        } else {
            "the policy is unloaded"
        };
        let _ = writeln!(
            report,
            "  confirm within {:.0?}: `patronusc confirm -i {iface}`; otherwise {fallback}",
            self.within
        );
    }
}

fn spawn_watcher(
    roots: &Roots,
    iface: &IfaceName,
    token: &str,
    after_ms: u64,
) -> Result<(), CliError> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().map_err(|e| {
        CliError::new(format!(
            "cannot find this program to start the watcher: {e}"
        ))
    })?;
    patronus_runtime::fault::point("spawn watcher");
    std::process::Command::new(exe)
        .arg("rollback-watcher")
        .args(["-i", iface.as_str(), "--token", token, "--after-ms"])
        .arg(after_ms.to_string())
        .arg("--pin-root")
        .arg(&roots.pin_root)
        .arg("--state-root")
        .arg(&roots.state_root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group: the terminal's hang-up or Ctrl-C (the
        // very thing --confirm guards against) does not reach it.
        .process_group(0)
        // The fault hook is for the apply under test, not its watcher.
        .env_remove(patronus_runtime::fault::FAULT_AT_VAR)
        .spawn()
        .map_err(|e| CliError::new(format!("cannot start the rollback watcher: {e}")))?;
    Ok(())
}

fn log(state: &StateDir, iface: &IfaceName, line: &str) {
    let line = format!("{} {iface}: {line}\n", now_ms() / 1000);
    let _ = state.append(&StateFile::RollbackLog, line.as_bytes());
}

pub fn run_confirm(args: &ConfirmArgs) -> Result<Status, CliError> {
    let (roots, iface) = (&args.roots, &args.iface);
    crate::txn::ignore_hangup();
    let lock = ApplyLock::take(roots, iface)?;
    let state = &lock.state;
    if let Some(note) = crate::txn::recover(roots, &lock, iface)? {
        eprintln!("patronusc: {note}");
    }
    let Some(pending) = pending(state)? else {
        eprintln!(
            "patronusc: {iface}: no apply is waiting for confirmation (already confirmed, rolled \
             back, or applied without --confirm)"
        );
        return Ok(Status::Failure);
    };
    let marker = StateFile::confirmed(&pending.token)?;
    let now = now_ms();
    if now >= pending.deadline_ms && !state.exists(&marker) {
        // Too late: the rollback is due and happens now, not a confirm
        // "with 0.0 s left".
        let late = (now - pending.deadline_ms) as f64 / 1000.0;
        let done = overdue_rollback(roots, &lock, iface)?;
        eprintln!(
            "patronusc: {iface}: too late to confirm: the deadline passed {late:.1} s ago; {}",
            done.unwrap_or_else(|| "the rollback is due".into())
        );
        return Ok(Status::Failure);
    }
    // The marker is the commit point: a kill after it is a confirm (the
    // next command removes `pending.json`), a kill before it is not.
    patronus_runtime::fault::point("write confirm marker");
    state.write(&marker, b"")?;
    crate::txn::remove_state(state, &StateFile::Pending)?;
    log(state, iface, &format!("confirmed {}", pending.token));
    let left_ms = pending.deadline_ms.saturating_sub(now);
    write_stdout(&format!(
        "confirmed the policy on {iface} ({:.1} s were left)\n",
        left_ms as f64 / 1000.0
    ))?;
    Ok(Status::Success)
}

/// With the interface lock held: if an apply awaits confirmation past its
/// deadline, rolls it back now (whoever runs this: the watcher, or any
/// command when the watcher is gone). A confirm whose marker is written
/// but which was killed before removing `pending.json` counts as
/// confirmed. Returns what was done.
pub(crate) fn overdue_rollback(
    roots: &Roots,
    lock: &ApplyLock,
    iface: &IfaceName,
) -> Result<Option<String>, CliError> {
    let state = &lock.state;
    let Some(pending) = pending(state)? else {
        return Ok(None);
    };
    if StateFile::confirmed(&pending.token).is_ok_and(|marker| state.exists(&marker)) {
        crate::txn::remove_state(state, &StateFile::Pending)?;
        return Ok(None);
    }
    let now = now_ms();
    if now < pending.deadline_ms {
        return Ok(None);
    }
    let late = (now - pending.deadline_ms) as f64 / 1000.0;
    let result = roll_back(roots, lock, iface, pending.previous.as_ref());
    match &result {
        Ok(what) => log(
            state,
            iface,
            &format!("{}: not confirmed: {what}", pending.token),
        ),
        Err(err) => log(
            state,
            iface,
            &format!("{}: not confirmed; rollback FAILED: {err}", pending.token),
        ),
    }
    let what = result?;
    Ok(Some(format!(
        "{iface}: the apply was not confirmed within its deadline ({late:.1} s ago): {what}"
    )))
}

/// The watcher: waits for the deadline, then settles the interface (which
/// rolls back unless confirmed). Also what tests run in-process.
pub fn run_watcher(args: &WatcherArgs) -> Result<Status, CliError> {
    let marker = StateFile::confirmed(&args.token)?;
    crate::txn::ignore_hangup();
    std::thread::sleep(Duration::from_millis(args.after_ms));
    let (roots, iface) = (&args.roots, &args.iface);
    // The apply that started us may still be running: wait for it, then
    // for the deadline it recorded.
    loop {
        let lock = ApplyLock::take(roots, iface)?;
        let state = &lock.state;
        if let Some(note) = crate::txn::recover(roots, &lock, iface)? {
            eprintln!("patronusc: {note}");
        }
        let Some(pending) = pending(state)?.filter(|p| p.token == args.token) else {
            // Confirmed, cancelled by a plain apply, superseded by a newer
            // --confirm apply, or an apply that never took effect.
            if !state.remove(&marker)? {
                log(
                    state,
                    iface,
                    &format!("{}: superseded, nothing to do", args.token),
                );
            }
            return Ok(Status::Success);
        };
        let left = pending.deadline_ms.saturating_sub(now_ms());
        if left == 0 || state.exists(&marker) {
            overdue_rollback(roots, &lock, iface)?;
            let _ = state.remove(&marker);
            return Ok(Status::Success);
        }
        drop(lock);
        std::thread::sleep(Duration::from_millis(left));
    }
}

fn roll_back(
    roots: &Roots,
    lock: &ApplyLock,
    iface: &IfaceName,
    previous: Option<&Snapshot>,
) -> Result<String, CliError> {
    let Some(previous) = previous else {
        let txn = Txn::new(Op::Unload);
        txn.begin(&lock.state)?;
        txn.commit(roots, lock, iface)?;
        return Ok("unloaded (there was no policy before)".into());
    };
    let started = Instant::now();
    let color = ColorArgs {
        color: crate::common::ColorChoice::Never,
    };
    let compiled = compile_snapshot(previous, &color)?.ok_or_else(|| {
        CliError::new(format!(
            "the saved policy `{}` no longer compiles",
            previous.name
        ))
    })?;
    let ifindex = install::ifindex(iface).map_err(runtime_err(iface))?;
    apply_locked_with(
        roots,
        lock,
        iface,
        ifindex,
        &compiled,
        Mode::Auto,
        &Applying {
            label: previous.name.clone(),
            source: previous.name.clone(),
            started,
            compile_time: started.elapsed(),
        },
        Commit {
            snapshot: Some(previous.clone()),
            journal: Some(String::new()),
            pending: PendingChange::Clear,
            watcher: None,
        },
    )?;
    Ok(format!("rolled back to {}", previous.name))
}

/// The SSH session `SSH_CONNECTION` describes (`client_ip client_port
/// server_ip server_port`), as packet-syntax endpoints.
struct SshSession {
    client: String,
    server: String,
    server_port: u16,
}

fn endpoint(addr: &str, port: &str) -> Option<String> {
    // Link-local addresses carry a zone (`fe80::1%eth0`): not part of the
    // address.
    let addr: std::net::IpAddr = addr.split('%').next()?.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    Some(match addr {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    })
}

fn parse_ssh_connection(value: &str) -> Option<SshSession> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [client_ip, client_port, server_ip, server_port] = fields.as_slice() else {
        return None;
    };
    Some(SshSession {
        client: endpoint(client_ip, client_port)?,
        server: endpoint(server_ip, server_port)?,
        server_port: server_port.parse().ok()?,
    })
}

fn frame(text: &str) -> Option<Vec<u8>> {
    let spec = patronus_grammar::parse_packet(text).ok()?;
    let mut files = patronus_compiler::diag::Files::new();
    let file = files.add("SSH_CONNECTION", text.to_owned());
    let packet = patronus_compiler::packet_from_spec(file, text, &spec).ok()?;
    Some(patronus_compiler::packet::build(&packet))
}

/// Whether `policy` would cut the SSH session described by
/// `ssh_connection` (the value of `SSH_CONNECTION`): the reference
/// interpreter decides an ACK of the established session (after the
/// server's own packet, which the egress program records when conntrack
/// is on) and a new SYN from the same client. Returns the warning, or
/// `None` when both pass or the value is not an SSH session.
pub fn ssh_lockout(policy: &Policy, ssh_connection: &str) -> Option<String> {
    use patronus_compiler::interp::Interpreter;
    use patronus_grammar::ast::Verdict;
    let session = parse_ssh_connection(ssh_connection)?;
    let (client, server) = (&session.client, &session.server);
    let reply = frame(&format!("tcp {server} -> {client} flags A"))?;
    let ack = frame(&format!("tcp {client} -> {server} flags A"))?;
    let syn = frame(&format!("tcp {client} -> {server} flags S"))?;
    let mut established = Interpreter::new(policy);
    established.outbound(&reply, 0);
    let ack_dropped = established.inbound(&ack, 1).verdict == Verdict::Drop;
    let syn_dropped = Interpreter::new(policy).inbound(&syn, 0).verdict == Verdict::Drop;
    let what = match (ack_dropped, syn_dropped) {
        (false, false) => return None,
        (true, true) => "drops this SSH session and new SSH connections",
        (true, false) => "drops this SSH session",
        (false, true) => "drops new SSH connections",
    };
    Some(format!(
        "the policy {what} from {} to port {}",
        client
            .rsplit_once(':')
            .map_or(client.as_str(), |(addr, _)| addr),
        session.server_port
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        let mut files = patronus_compiler::diag::Files::new();
        let file = files.add("p.pf", text.to_owned());
        let checked = patronus_compiler::check(&mut files, file, &crate::common::FsTableLoader);
        assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
        checked.policy.expect("a policy")
    }

    const SESSION: &str = "192.0.2.10 50022 192.0.2.80 22";

    #[test]
    fn a_policy_that_allows_ssh_is_quiet() {
        let p = policy("options { default = deny }\nallow tcp to port 22\n");
        assert_eq!(ssh_lockout(&p, SESSION), None);
        let p = policy("options { default = deny }\nallow tcp from 192.0.2.0/24 to port 22\n");
        assert_eq!(ssh_lockout(&p, SESSION), None);
        let p = policy("options { default = deny }\nallow tcp to port 2222\n");
        assert_eq!(ssh_lockout(&p, "198.51.100.7 40000 192.0.2.80 2222"), None);
    }

    #[test]
    fn a_policy_without_ssh_warns() {
        let p = policy("options {\n  default = deny\n  conntrack = off\n}\nallow tcp to port 80\n");
        assert_eq!(
            ssh_lockout(&p, SESSION).as_deref(),
            Some(
                "the policy drops this SSH session and new SSH connections from 192.0.2.10 to port 22"
            )
        );
        let p = policy("options { default = deny }\nallow tcp from 192.0.2.0/24 to port 22\n");
        assert!(
            ssh_lockout(&p, "2001:db8::1 50022 2001:db8::80 22")
                .is_some_and(|w| w.contains("from [2001:db8::1] to port 22")),
            "the v6 client is not allowed"
        );
        assert_eq!(ssh_lockout(&p, SESSION), None, "the v4 client is");
    }

    #[test]
    fn conntrack_keeps_the_session_but_not_new_connections() {
        // Only replies to the server's own flows: the running session
        // stays (its packets are tracked), a new one cannot start.
        let p = policy("options {\n  default = deny\n  conntrack = on\n}\nallow udp to port 53\n");
        assert_eq!(
            ssh_lockout(&p, SESSION).as_deref(),
            Some("the policy drops new SSH connections from 192.0.2.10 to port 22")
        );
    }

    #[test]
    fn a_deny_on_the_client_cuts_even_the_session() {
        let p = policy("options {\n  conntrack = on\n}\ndeny from 192.0.2.10\n");
        assert_eq!(
            ssh_lockout(&p, SESSION).as_deref(),
            Some(
                "the policy drops this SSH session and new SSH connections from 192.0.2.10 to port 22"
            )
        );
    }

    #[test]
    fn malformed_values_are_ignored() {
        let p = policy("options { default = deny }\n");
        for value in [
            "",
            "192.0.2.10 50022 192.0.2.80",
            "x 1 y 2",
            "192.0.2.10 99999 192.0.2.80 22",
        ] {
            assert_eq!(ssh_lockout(&p, value), None, "{value:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
