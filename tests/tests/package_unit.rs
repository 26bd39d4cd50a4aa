//! The packaged systemd unit (`packaging/systemd/patronus@.service`) on the
//! real kernel: its `ExecStart=` and `ExecReload=` command lines, read from
//! the unit file and expanded the way systemd expands them for instance
//! IFACE, apply the policy at `/etc/patronus/IFACE.pf` (here a temporary
//! directory in its place) to a veth interface in a namespace, enforce it
//! with real connections, swap it on reload, and keep the running policy
//! when the edited file is broken. The package's contents and the unit's
//! syntax are checked by `scripts/package --check`.

mod netns;

use std::path::Path;

use netns::{SERVER, Setup, connects, echo_server};
use patronus_runtime::testing::kernel_or_skip;

const UNIT: &str = "packaging/systemd/patronus@.service";
const CONFIG_DIR: &str = "/etc/patronus";
const BINARY: &str = "/usr/bin/patronusc";

/// The value of the unit's `KEY=` line (exactly one is expected).
fn unit_value(unit: &str, key: &str) -> String {
    let values: Vec<&str> = unit
        .lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect();
    assert_eq!(
        values.len(),
        1,
        "{UNIT} has {} `{key}=` lines",
        values.len()
    );
    values[0].to_owned()
}

/// `command` as systemd runs it for instance `iface` (`%I`, `%i`: the
/// instance name, which needs no escaping here), with the configuration
/// directory moved to `config` and the arguments split on spaces (the unit
/// quotes nothing).
fn expand(command: &str, iface: &str, config: &Path) -> Vec<String> {
    let config = config.to_str().expect("a UTF-8 path");
    command
        .replace("%I", iface)
        .replace("%i", iface)
        .replace(CONFIG_DIR, config)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_units_commands_apply_reload_and_keep_the_policy_on_a_bad_edit() {
    if !kernel_or_skip("the_units_commands_apply_reload_and_keep_the_policy_on_a_bad_edit") {
        return;
    }
    let unit = std::fs::read_to_string(netns::repo_root().join(UNIT)).expect("reading the unit");
    let setup = Setup::new("unit");
    let config = setup.state_root.join("etc-patronus");
    std::fs::create_dir_all(&config).expect("creating the configuration directory");
    let policy_path = config.join(format!("{}.pf", setup.iface));

    // The file the unit's condition names is the one its commands apply.
    let condition = unit_value(&unit, "ConditionPathExists");
    assert_eq!(
        expand(&condition, &setup.iface, &config),
        [policy_path.display().to_string()]
    );

    let run = |key: &str| {
        let argv = expand(&unit_value(&unit, key), &setup.iface, &config);
        assert_eq!(argv[0], BINARY, "{key} runs the packaged binary");
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        setup.try_patronusc(&args)
    };
    let policy = |port: u16| {
        format!(
            "options {{\n  default = deny\n  conntrack = on\n}}\n\nallow tcp to port {port} label \"web\"\n"
        )
    };
    echo_server(&setup.server, SERVER, 8080);
    echo_server(&setup.server, SERVER, 8081);

    std::fs::write(&policy_path, policy(8080)).expect("writing the policy");
    run("ExecStart").expect("ExecStart applies /etc/patronus/IFACE.pf");
    assert!(setup.xdp_prog_id().is_some(), "an XDP program is attached");
    assert!(connects(&setup.client, SERVER, 8080), "8080 is allowed");
    assert!(!connects(&setup.client, SERVER, 8081), "8081 is dropped");

    std::fs::write(&policy_path, policy(8081)).expect("editing the policy");
    run("ExecReload").expect("ExecReload swaps in the edited file");
    assert!(
        connects(&setup.client, SERVER, 8081),
        "8081 is allowed after reload"
    );
    assert!(
        !connects(&setup.client, SERVER, 8080),
        "8080 is dropped after reload"
    );
    let running = setup.xdp_prog_id();

    std::fs::write(&policy_path, "allow tcp to port\n").expect("breaking the policy");
    let broken = run("ExecReload");
    assert!(
        !matches!(broken, Ok(patronus_cli::common::Status::Success)),
        "reloading a broken file fails the unit: {broken:?}"
    );
    assert_eq!(setup.xdp_prog_id(), running, "the running program stays");
    assert!(
        connects(&setup.client, SERVER, 8081),
        "the running policy still enforces"
    );
    assert!(!connects(&setup.client, SERVER, 8080));
}
