//! What `apply --confirm DURATION` arms and what an unconfirmed apply
//! rolls back to (the commands are `cmd_confirm`'s), and the SSH-lockout
//! warning of `apply`.
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

use patronus_compiler::typed::Policy;
use patronus_runtime::host::{IfaceName, StateFile};
use patronus_runtime::install;

use crate::change::{Applying, Commit, Mode, Watcher, apply_compiled};
use crate::common::{CliError, ColorArgs, runtime_err};
use crate::pipeline::{Source, compile};
use crate::state_dir::{ApplyLock, Pending, Roots, Snapshot, log_rollback, pending, remove_state};
use crate::txn::{Op, PendingChange, Txn};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
            let snapshot = crate::state_dir::saved_snapshot(&lock.state)?;
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
        remove_state(state, &StateFile::Pending)?;
        return Ok(None);
    }
    let now = now_ms();
    if now < pending.deadline_ms {
        return Ok(None);
    }
    let late = (now - pending.deadline_ms) as f64 / 1000.0;
    let result = roll_back(roots, lock, iface, pending.previous.as_ref());
    match &result {
        Ok(what) => log_rollback(
            state,
            iface,
            &format!("{}: not confirmed: {what}", pending.token),
        ),
        Err(err) => log_rollback(
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
    let compiled = compile(Source::Saved(previous), &[], &color)?.ok_or_else(|| {
        CliError::new(format!(
            "the saved policy `{}` no longer compiles",
            previous.name
        ))
    })?;
    let ifindex = install::ifindex(iface).map_err(runtime_err(iface))?;
    apply_compiled(
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
}
