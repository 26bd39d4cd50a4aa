//! `patronusc agent --config FILE`: keeps the configured interfaces'
//! policies applied for as long as it runs. It applies each policy at
//! start, again whenever the policy or one of its table files changes
//! (inotify), and again when the interface comes back (deleted and
//! re-created, or hot-plugged), always through the same atomic `apply` the
//! command line runs, so a policy that fails leaves the last good one in
//! force. It serves `/metrics` and `/healthz` over HTTP ([`http`]) and
//! takes table updates on a root-only Unix socket ([`control`]).
//!
//! Logs are one JSON object a line on stderr (with a syslog priority
//! prefix when journald reads them); the reports of the commands it runs
//! go to stdout as they would on a terminal.

pub mod config;
pub mod control;
pub mod http;
pub mod watch;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use patronus_runtime::install::{self, Pins};

use crate::common::{CliError, Status};
use config::{Config, Target};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's configuration file (docs/agent.md).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Stop after this many seconds (tests; default: run until killed).
    #[arg(long, value_name = "SECS", hide = true)]
    pub exit_after: Option<u64>,
}

/// How often interfaces are checked for having come back, and the
/// longest a missed inotify event can delay a re-read of the files.
const TICK: Duration = Duration::from_secs(1);
const REREAD: Duration = Duration::from_secs(60);

/// What the agent knows of one interface, for `/healthz` and `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IfaceState {
    pub iface: String,
    pub policy: String,
    /// The interface exists.
    pub present: bool,
    /// Its XDP program is attached to the interface as it is now.
    pub enforcing: bool,
    /// The policy file as it is now is the one applied.
    pub current: bool,
    /// Why the latest apply failed (the last good policy, if any, runs).
    pub error: Option<String>,
    pub applies_ok: u64,
    pub applies_failed: u64,
    /// Unix seconds of the latest successful apply.
    pub last_applied: Option<u64>,
}

impl IfaceState {
    /// One word for logs and the health page.
    pub fn condition(&self) -> &'static str {
        match (self.present, self.enforcing, self.current) {
            (false, _, _) => "waiting for the interface",
            (true, false, _) => "unprotected",
            (true, true, true) => "enforcing",
            (true, true, false) => "enforcing the last good policy",
        }
    }
}

/// State shared by the apply loop, the HTTP server and the control socket.
pub struct Shared {
    /// Serialises everything that changes the kernel's state.
    deploy: Mutex<()>,
    states: Mutex<BTreeMap<String, IfaceState>>,
    /// `--pin-root DIR --state-root DIR` as configured, for every command.
    pub roots: Vec<String>,
    pub pin_root: PathBuf,
    pub table_updates_ok: AtomicU64,
    pub table_updates_failed: AtomicU64,
}

impl Shared {
    pub fn deploy_lock(&self) -> MutexGuard<'_, ()> {
        self.deploy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the agent knows of each interface, with `present` and
    /// `enforcing` read from the kernel now: between two ticks an
    /// interface can vanish or lose its program, and the health page must
    /// not report the last tick's "enforcing".
    pub fn states(&self) -> Vec<IfaceState> {
        let mut states: Vec<IfaceState> = self.lock_states().values().cloned().collect();
        for state in &mut states {
            let ifindex = install::ifindex(&state.iface).ok().filter(|&i| i != 0);
            state.present = ifindex.is_some();
            state.enforcing = ifindex.is_some() && self.attached_ifindex(&state.iface) == ifindex;
        }
        states
    }

    /// The ifindex the pinned XDP link of `iface` is attached to, if any.
    fn attached_ifindex(&self, iface: &str) -> Option<u32> {
        let pins = Pins::new(self.pin_root.join(iface));
        install::pinned_link(&pins.xdp_link())
            .map(|link| link.ifindex)
            .filter(|&i| i != 0)
    }

    fn lock_states(&self) -> MutexGuard<'_, BTreeMap<String, IfaceState>> {
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a `patronusc` command line in process, with the agent's roots.
    pub fn run(&self, args: &[&str]) -> Result<Status, CliError> {
        let argv = std::iter::once("patronusc")
            .chain(args.iter().copied())
            .chain(self.roots.iter().map(String::as_str))
            .map(str::to_owned);
        crate::run_argv(argv)
    }
}

/// One structured log line: `{"ts":..,"level":..,"event":..,...}`.
pub fn log(level: &str, event: &str, fields: &[(&str, serde_json::Value)]) {
    let mut object = serde_json::Map::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    object.insert(
        "ts".into(),
        crate::common::utc_time(now.as_nanos() as u64).into(),
    );
    object.insert("level".into(), level.into());
    object.insert("event".into(), event.into());
    for (key, value) in fields {
        object.insert((*key).into(), value.clone());
    }
    // journald reads `<N>` at the start of a line as the priority.
    let prefix = if std::env::var_os("JOURNAL_STREAM").is_some() {
        match level {
            "error" => "<3>",
            "warn" => "<4>",
            _ => "<6>",
        }
    } else {
        ""
    };
    let line = format!("{prefix}{}\n", serde_json::Value::Object(object));
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn run_agent(args: &AgentArgs) -> Result<Status, CliError> {
    let name = args.config.display().to_string();
    let text = crate::common::read_text(&args.config).map_err(CliError::new)?;
    let config = config::parse(&name, &text).map_err(CliError::new)?;
    if let Some(missing) = install::missing_privileges() {
        return Err(CliError::new(format!(
            "the agent applies policies and needs root: {missing}"
        )));
    }
    let mut roots = Vec::new();
    if let Some(dir) = &config.pin_root {
        roots.extend(["--pin-root".to_owned(), dir.display().to_string()]);
    }
    if let Some(dir) = &config.state_root {
        roots.extend(["--state-root".to_owned(), dir.display().to_string()]);
    }
    let shared = Arc::new(Shared {
        deploy: Mutex::new(()),
        states: Mutex::new(BTreeMap::new()),
        roots,
        pin_root: config
            .pin_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(install::DEFAULT_PIN_ROOT)),
        table_updates_ok: AtomicU64::new(0),
        table_updates_failed: AtomicU64::new(0),
    });
    if let Some(addr) = config.listen {
        let bound = http::serve(addr, Arc::clone(&shared))
            .map_err(|e| CliError::new(format!("cannot listen on {addr}: {e}")))?;
        log("info", "listening", &[("addr", bound.to_string().into())]);
    }
    if let Some(path) = &config.control {
        control::serve(path, Arc::clone(&shared))
            .map_err(|e| CliError::new(format!("control socket {}: {e}", path.display())))?;
        log(
            "info",
            "control socket",
            &[("path", path.display().to_string().into())],
        );
    }
    let mut watcher =
        watch::Watcher::new().map_err(|e| CliError::new(format!("cannot start inotify: {e}")))?;
    let mut agent = Agent {
        config,
        shared,
        records: BTreeMap::new(),
    };
    log("info", "started", &[("config", name.into())]);
    let started = Instant::now();
    let mut last_read = Instant::now();
    let mut changed = true;
    loop {
        let reread = changed || last_read.elapsed() >= REREAD;
        if reread {
            last_read = Instant::now();
        }
        for dir in agent.tick(reread) {
            if let Err(error) = watcher.watch(&dir) {
                // Not fatal: the periodic re-read still notices changes.
                log(
                    "warn",
                    "cannot watch",
                    &[
                        ("dir", dir.display().to_string().into()),
                        ("error", error.to_string().into()),
                    ],
                );
            }
        }
        if args
            .exit_after
            .is_some_and(|secs| started.elapsed() >= Duration::from_secs(secs))
        {
            log("info", "stopping", &[]);
            return Ok(Status::Success);
        }
        changed = watcher.wait(TICK);
        if changed {
            // Let a burst of writes (an editor, a ConfigMap swap) settle.
            std::thread::sleep(Duration::from_millis(100));
            watcher.wait(Duration::ZERO);
        }
    }
}

/// What was applied to an interface: the fingerprint and the ifindex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Applied {
    hash: u64,
    ifindex: u32,
}

/// Per interface: the last good apply, and the content whose apply failed
/// after it (not retried until the files change again).
#[derive(Debug, Clone, Copy, Default)]
struct Record {
    good: Option<Applied>,
    failed: Option<u64>,
}

struct Agent {
    config: Config,
    shared: Arc<Shared>,
    records: BTreeMap<String, Record>,
}

impl Agent {
    /// The interfaces to keep: the configured ones, then `IFACE.pf` of each
    /// policy directory (a configured line wins over a file).
    fn targets(&self) -> Vec<Target> {
        let mut targets = self.config.targets.clone();
        for dir in &self.config.policy_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut found: Vec<Target> = entries
                .flatten()
                .filter_map(|entry| {
                    let path = entry.path();
                    let iface = path.file_stem()?.to_str()?.to_owned();
                    // ConfigMap volumes keep their data in `..data/`.
                    let hidden = iface.starts_with('.');
                    let valid = patronus_runtime::host::IfaceName::new(&iface).is_ok();
                    let usable = valid && !hidden && path.is_file();
                    (path.extension()? == "pf" && usable).then_some(Target {
                        iface,
                        policy: path,
                        mode: None,
                    })
                })
                .collect();
            found.sort_by(|a, b| a.iface.cmp(&b.iface));
            for target in found {
                if !targets.iter().any(|t| t.iface == target.iface) {
                    targets.push(target);
                }
            }
        }
        targets
    }

    /// Brings every interface to its policy; returns the directories to
    /// watch. With `reread`, files are fingerprinted again.
    fn tick(&mut self, reread: bool) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.config.policy_dirs.clone();
        let targets = self.targets();
        let mut states = BTreeMap::new();
        for target in &targets {
            let previous = self.shared.lock_states().get(&target.iface).cloned();
            let mut state = previous.unwrap_or_else(|| IfaceState {
                iface: target.iface.clone(),
                ..IfaceState::default()
            });
            state.policy = target.policy.display().to_string();
            let hash = match watch::fingerprint(&target.policy) {
                Ok(fp) => {
                    dirs.extend(fp.dirs.iter().cloned());
                    Some(fp.hash)
                }
                Err(error) => {
                    if let Some(dir) = target.policy.parent() {
                        dirs.push(dir.to_path_buf());
                    }
                    state.error = Some(format!("cannot read {}: {error}", state.policy));
                    None
                }
            };
            self.bring_up(target, hash, reread, &mut state);
            states.insert(target.iface.clone(), state);
        }
        *self.shared.lock_states() = states;
        dirs.sort();
        dirs.dedup();
        dirs
    }

    fn bring_up(
        &mut self,
        target: &Target,
        hash: Option<u64>,
        reread: bool,
        state: &mut IfaceState,
    ) {
        let iface = target.iface.as_str();
        let ifindex = install::ifindex(iface).ok().filter(|&i| i != 0);
        state.present = ifindex.is_some();
        state.enforcing = ifindex.is_some() && self.attached_ifindex(iface) == ifindex;
        let record = self.records.get(iface).copied().unwrap_or_default();
        state.current = hash.is_some() && record.good.map(|g| g.hash) == hash;
        let (Some(ifindex), Some(hash)) = (ifindex, hash) else {
            // No interface: wait for it. No readable policy: keep what runs.
            return;
        };
        let failed_before = record.failed == Some(hash);
        let need = if state.enforcing {
            !state.current && !failed_before
        } else {
            // Nothing enforces: apply, but a file that already failed is
            // tried again only on the periodic re-read, not every tick.
            !failed_before || reread
        };
        if !need {
            return;
        }
        let reason = match record.good {
            None if record.failed.is_none() => "start",
            Some(good) if good.ifindex != ifindex => "interface re-created",
            _ if !state.enforcing => "not attached",
            _ => "policy changed",
        };
        let policy = target.policy.display().to_string();
        let mut args = vec!["apply", policy.as_str(), "-i", iface];
        if let Some(mode) = &target.mode {
            args.extend(["--mode", mode.as_str()]);
        }
        let started = Instant::now();
        let outcome = {
            let _deploy = self.shared.deploy_lock();
            self.shared.run(&args)
        };
        let ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
        state.enforcing = self.attached_ifindex(iface) == Some(ifindex);
        let record = self.records.entry(iface.to_owned()).or_default();
        match outcome {
            Ok(Status::Success) => {
                *record = Record {
                    good: Some(Applied { hash, ifindex }),
                    failed: None,
                };
                state.applies_ok += 1;
                state.error = None;
                state.current = true;
                state.last_applied = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs());
                log(
                    "info",
                    "applied",
                    &[
                        ("iface", iface.into()),
                        ("policy", policy.into()),
                        ("reason", reason.into()),
                        ("ms", ms.into()),
                    ],
                );
            }
            other => {
                let error = match other {
                    Err(error) => error.message,
                    _ => "the policy has errors (diagnostics on stderr above)".to_owned(),
                };
                // apply left whatever ran in place; do not retry this content.
                record.failed = Some(hash);
                state.applies_failed += 1;
                state.current = false;
                log(
                    "error",
                    "apply failed",
                    &[
                        ("iface", iface.into()),
                        ("policy", policy.into()),
                        ("reason", reason.into()),
                        ("error", error.clone().into()),
                        ("now", state.condition().into()),
                    ],
                );
                state.error = Some(error);
            }
        }
    }

    fn attached_ifindex(&self, iface: &str) -> Option<u32> {
        self.shared.attached_ifindex(iface)
    }
}
