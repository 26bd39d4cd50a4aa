//! The agent's configuration file: one directive a line, `#` comments.
//!
//! ```text
//! interface eth0 /etc/patronus/eth0.pf [mode auto|native|generic]
//! policy-dir /etc/patronus/policies   # every IFACE.pf in it, for IFACE
//! listen 127.0.0.1:9560               # HTTP: /metrics and /healthz
//! control /run/patronus/agent.sock    # table updates (root only)
//! pin-root /sys/fs/bpf/patronus
//! state-root /run/patronus
//! ```
//!
//! A line-based format keeps the agent free of a configuration-language
//! dependency, and every error names its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One interface the agent keeps a policy on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub iface: String,
    pub policy: PathBuf,
    /// `--mode` of `apply`, when the line names one.
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub targets: Vec<Target>,
    pub policy_dirs: Vec<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub control: Option<PathBuf>,
    pub pin_root: Option<PathBuf>,
    pub state_root: Option<PathBuf>,
}

const MODES: [&str; 3] = ["auto", "native", "generic"];

/// Parses `text` (read from `name`); relative paths resolve against the
/// file's directory, so a configuration can sit beside its policies.
pub fn parse(name: &str, text: &str) -> Result<Config, String> {
    let base = Path::new(name).parent().unwrap_or(Path::new("."));
    let path = |word: &str| base.join(word);
    let mut seen: Vec<&str> = Vec::new();
    let mut config = Config {
        targets: Vec::new(),
        policy_dirs: Vec::new(),
        listen: None,
        control: None,
        pin_root: None,
        state_root: None,
    };
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |message: String| format!("{name}:{}: {message}", index + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        let directive = words[0];
        let one = |what: &str| match words.as_slice() {
            [_, value] => Ok(*value),
            _ => Err(at(format!("`{directive}` takes one {what}"))),
        };
        match directive {
            "interface" => {
                let (iface, policy, mode) = match words.as_slice() {
                    [_, iface, policy] => (*iface, *policy, None),
                    [_, iface, policy, "mode", mode] if MODES.contains(mode) => {
                        (*iface, *policy, Some((*mode).to_owned()))
                    }
                    [_, _, _, "mode", mode] => {
                        return Err(at(format!(
                            "unknown mode `{mode}` (one of {})",
                            MODES.join(", ")
                        )));
                    }
                    _ => {
                        return Err(at(
                            "expected `interface IFACE POLICY [mode auto|native|generic]`".into(),
                        ));
                    }
                };
                // The name becomes a path component of the pin and state roots.
                patronus_runtime::host::IfaceName::new(iface).map_err(|e| at(e.to_string()))?;
                if config.targets.iter().any(|t| t.iface == iface) {
                    return Err(at(format!("interface `{iface}` is configured twice")));
                }
                config.targets.push(Target {
                    iface: iface.to_owned(),
                    policy: path(policy),
                    mode,
                });
            }
            "policy-dir" => config.policy_dirs.push(path(one("directory")?)),
            "listen" | "control" | "pin-root" | "state-root" if seen.contains(&directive) => {
                return Err(at(format!("`{directive}` is given twice")));
            }
            "listen" => {
                let value = one("address (e.g. 127.0.0.1:9560)")?;
                let addr = value
                    .parse()
                    .map_err(|_| at(format!("`{value}` is not an address:port")))?;
                config.listen = Some(addr);
            }
            "control" => config.control = Some(path(one("socket path")?)),
            "pin-root" => config.pin_root = Some(path(one("directory")?)),
            "state-root" => config.state_root = Some(path(one("directory")?)),
            other => {
                return Err(at(format!(
                    "unknown directive `{other}` (interface, policy-dir, listen, control, \
                     pin-root, state-root)"
                )));
            }
        }
        seen.push(directive);
    }
    if config.targets.is_empty() && config.policy_dirs.is_empty() {
        return Err(format!(
            "{name}: no `interface` or `policy-dir` line: nothing to apply"
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_configuration_parses_with_paths_beside_the_file() {
        let config = parse(
            "/etc/patronus/agent.conf",
            "# comment\ninterface eth0 eth0.pf\ninterface eth1 /srv/p.pf mode generic # x\n\
             policy-dir policies\nlisten 127.0.0.1:9560\ncontrol /run/patronus/agent.sock\n",
        )
        .expect("parses");
        assert_eq!(config.targets.len(), 2);
        assert_eq!(config.targets[0].policy, Path::new("/etc/patronus/eth0.pf"));
        assert_eq!(config.targets[1].mode.as_deref(), Some("generic"));
        assert_eq!(
            config.policy_dirs,
            [PathBuf::from("/etc/patronus/policies")]
        );
        assert_eq!(config.listen, Some("127.0.0.1:9560".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_line() {
        for (text, want) in [
            (
                "interface eth0\n",
                "a.conf:1: expected `interface IFACE POLICY",
            ),
            (
                "\ninterface eth0 p.pf mode turbo\n",
                "a.conf:2: unknown mode `turbo`",
            ),
            (
                "listen nowhere\n",
                "a.conf:1: `nowhere` is not an address:port",
            ),
            ("frobnicate 1\n", "a.conf:1: unknown directive `frobnicate`"),
            ("interface .. p.pf\n", "a.conf:1: "),
            (
                "listen 127.0.0.1:1\n",
                "a.conf: no `interface` or `policy-dir` line",
            ),
            (
                "policy-dir p\nstate-root a\nstate-root b\n",
                "a.conf:3: `state-root` is given twice",
            ),
            (
                "interface a x.pf\ninterface a y.pf\n",
                "a.conf:2: interface `a` is configured twice",
            ),
        ] {
            let error = parse("a.conf", text).expect_err(text);
            assert!(error.starts_with(want), "{text:?}: {error}");
        }
    }
}
