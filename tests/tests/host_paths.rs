//! The pin and state roots on a hostile host (`runtime::host`), and the
//! interface removed while a policy is attached, on the real kernel with
//! traffic: a pin directory swapped for a symlink, roots another user made
//! first, a symlink planted where a state file's temporary goes, and
//! `status` after the interface went away (and came back).

mod netns;

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use netns::{SERVER, Setup, echo_server, try_connect};
use patronus_cli::common::Status;
use patronus_runtime::testing::kernel_or_skip;

/// Port 80 open, everything else dropped.
const WEB: &str = "\
options {
  default   = deny
  conntrack = on
}
allow tcp to port 80 label \"web\"
";

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn filtered(setup: &Setup) -> bool {
    match try_connect(&setup.client, SERVER, 8080) {
        Ok(_) => false,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
            true
        }
    }
}

#[test]
fn unload_does_not_follow_a_pin_directory_swapped_for_a_symlink() {
    if !kernel_or_skip("unload_does_not_follow_a_pin_directory_swapped_for_a_symlink") {
        return;
    }
    let setup = Setup::new("hp-link");
    assert_eq!(setup.apply_text("web", WEB), Ok(Status::Success));
    // Files of root's elsewhere that a followed symlink would delete.
    let victim = setup.state_root.join("victim");
    std::fs::create_dir_all(victim.join("maps")).expect("creating the victim directory");
    for name in ["link_xdp", "prog", "maps/stats"] {
        std::fs::write(victim.join(name), "precious").expect("writing a victim file");
    }
    let pins = setup.pins().dir;
    let moved = setup.pin_root.join("moved");
    std::fs::rename(&pins, &moved).expect("moving the pins aside");
    std::os::unix::fs::symlink(&victim, &pins).expect("planting the symlink");

    let error = setup
        .try_patronusc(&["unload", "-i", &setup.iface])
        .expect_err("a symlink is not a pin directory");
    assert!(
        error.message.contains("is not a directory") && error.message.contains("rm -r"),
        "{error}"
    );
    for name in ["link_xdp", "prog", "maps/stats"] {
        assert_eq!(
            std::fs::read_to_string(victim.join(name)).ok().as_deref(),
            Some("precious"),
            "{name} behind the symlink was touched"
        );
    }
    assert!(
        setup
            .state_root
            .join(&setup.iface)
            .join("meta.json")
            .exists(),
        "the state of the policy was deleted"
    );
    std::fs::remove_file(&pins).expect("removing the symlink");
    std::fs::rename(&moved, &pins).expect("moving the pins back");
    assert_eq!(
        setup.try_patronusc(&["unload", "-i", &setup.iface]),
        Ok(Status::Success)
    );
}

#[test]
fn roots_another_user_made_first_are_refused() {
    if !kernel_or_skip("roots_another_user_made_first_are_refused") {
        return;
    }
    let setup = Setup::new("hp-own");
    echo_server(&setup.server, SERVER, 80);
    let policy = setup.policy_file("web", WEB);
    let policy = policy.to_str().expect("UTF-8");
    // A local user got to the pin root before root's first apply.
    std::fs::create_dir(&setup.pin_root).expect("creating the pin root");
    chown(&setup.pin_root, 65534);
    let error = setup
        .try_patronusc(&["apply", policy, "-i", &setup.iface])
        .expect_err("a pin root owned by someone else");
    assert!(
        error.message.contains("owned by uid 65534")
            && error
                .message
                .contains(&format!("rm -r {}", setup.pin_root.display())),
        "{error}"
    );
    assert!(
        std::fs::read_dir(&setup.pin_root)
            .expect("listing")
            .next()
            .is_none(),
        "nothing was pinned in it"
    );
    assert!(setup.xdp_prog_id().is_none(), "nothing was attached");
    std::fs::remove_dir(&setup.pin_root).expect("removing the foreign pin root");

    // A world-writable state root (0777 even if root's).
    let state = setup.state_root.join("open");
    std::fs::create_dir(&state).expect("creating a state root");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let error = setup
        .try_patronusc(&[
            "apply",
            policy,
            "-i",
            &setup.iface,
            "--pin-root",
            setup.pin_root.to_str().expect("UTF-8"),
            "--state-root",
            state.to_str().expect("UTF-8"),
        ])
        .expect_err("a world-writable state root");
    assert!(error.message.contains("mode 0777"), "{error}");
    assert!(setup.xdp_prog_id().is_none(), "nothing was attached");

    // An interface directory under the pin root that someone else owns.
    assert_eq!(setup.apply_text("web", WEB), Ok(Status::Success));
    assert_eq!(
        setup.try_patronusc(&["unload", "-i", &setup.iface]),
        Ok(Status::Success)
    );
    std::fs::create_dir(setup.pins().dir).expect("creating the interface directory");
    chown(&setup.pins().dir, 65534);
    std::fs::set_permissions(&setup.pins().dir, std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    let error = setup
        .try_patronusc(&["apply", policy, "-i", &setup.iface])
        .expect_err("an interface directory owned by someone else");
    assert!(error.message.contains("owned by uid 65534"), "{error}");
    assert!(setup.xdp_prog_id().is_none(), "nothing was attached");
    std::fs::remove_dir(setup.pins().dir).expect("removing it");
}

#[test]
fn state_files_do_not_follow_a_planted_symlink() {
    if !kernel_or_skip("state_files_do_not_follow_a_planted_symlink") {
        return;
    }
    let setup = Setup::new("hp-tmp");
    let victim = setup.state_root.join("victim");
    std::fs::write(&victim, "root only").expect("writing the victim file");
    let dir = setup.state_root.join(&setup.iface);
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .expect("creating the interface's state directory");
    for name in ["meta.json.tmp", "snapshot.json.tmp", "tables.json.tmp"] {
        std::os::unix::fs::symlink(&victim, dir.join(name)).expect("planting a symlink");
    }
    assert_eq!(setup.apply_text("web", WEB), Ok(Status::Success));
    assert_eq!(
        std::fs::read_to_string(&victim).ok().as_deref(),
        Some("root only"),
        "a state file was written through a planted symlink"
    );
    let meta = std::fs::symlink_metadata(dir.join("meta.json")).expect("meta.json");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn the_interface_removed_while_attached_is_not_reported_as_filtered() {
    if !kernel_or_skip("the_interface_removed_while_attached_is_not_reported_as_filtered") {
        return;
    }
    let setup = Setup::new("hp-gone");
    echo_server(&setup.server, SERVER, 80);
    echo_server(&setup.server, SERVER, 8080);
    assert_eq!(setup.apply_text("web", WEB), Ok(Status::Success));
    assert!(filtered(&setup), "the policy drops 8080");
    assert_eq!(
        setup.try_patronusc(&["status", "-i", &setup.iface]),
        Ok(Status::Success)
    );

    setup.delete_veth();
    assert_eq!(
        setup.try_patronusc(&["status", "-i", &setup.iface]),
        Ok(Status::Failure),
        "status of a policy whose interface was deleted"
    );
    assert_eq!(
        setup.try_patronusc(&["status"]),
        Ok(Status::Failure),
        "status of every interface"
    );

    // Back under the same name: a new interface nothing filters.
    // (The listeners stay bound to the address across the re-creation.)
    setup.create_veth();
    assert!(!filtered(&setup), "the re-created interface is open");
    assert_eq!(
        setup.try_patronusc(&["status", "-i", &setup.iface]),
        Ok(Status::Failure),
        "status of a policy whose interface was re-created"
    );

    // Applying again attaches to the new interface.
    let policy = setup.policy_file("web", WEB);
    assert_eq!(
        setup.try_patronusc(&["apply", policy.to_str().expect("UTF-8"), "-i", &setup.iface]),
        Ok(Status::Success)
    );
    assert_eq!(
        setup.try_patronusc(&["status", "-i", &setup.iface]),
        Ok(Status::Success)
    );
    assert!(filtered(&setup), "the policy drops 8080 again");
}
