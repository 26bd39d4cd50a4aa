//! Kernel compatibility on whatever kernel runs the tests (the host, or a
//! distribution kernel booted by `scripts/test-kernels`): the code
//! generated for the probed verifier loads, and so does the portable
//! code; a policy that needs a helper the kernel lacks is refused naming
//! the feature and the Linux version that has it; a stateless policy
//! loads and attaches on every kernel; the classic `clsact` egress filter
//! (the fallback without tcx) is set, replaced in place and removed.
//! Skipped with a message when the kernel cannot be used, failed instead
//! when PATRONUS_REQUIRE_KERNEL=1.

mod kernel_support;

use std::os::fd::AsFd as _;

use kernel_support::{Netns, check_policy, kernel_or_skip, policy_files, run};
use patronus_codegen::{Limits, Verifier, compile_with_limits};
use patronus_compiler::ir;
use patronus_runtime::features::{self, Feature};
use patronus_runtime::{Loaded, ProgramKind, RuntimeError};

fn load_with(path: &std::path::Path, limits: &Limits) -> Result<Loaded, RuntimeError> {
    let (_, policy) = check_policy(path);
    let program = ir::lower(&policy);
    let object =
        compile_with_limits(&program, limits).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Loaded::load_object(&object)
}

#[test]
fn probed_and_portable_code_load_or_name_the_missing_feature() {
    if !kernel_or_skip("probed_and_portable_code_load_or_name_the_missing_feature") {
        return;
    }
    let found = features::current();
    eprintln!("kernel features: {found:?}");
    let portable = Limits::default();
    assert_eq!(portable.verifier, Verifier::Portable);
    for path in policy_files() {
        for limits in [found.limits(), portable] {
            match load_with(&path, &limits) {
                Ok(loaded) => {
                    let verified = loaded
                        .stats(ProgramKind::Xdp)
                        .and_then(|s| s.verified_insns);
                    eprintln!(
                        "{}: {:?}: loads (verified_insns {verified:?})",
                        path.display(),
                        limits.verifier
                    );
                }
                Err(RuntimeError::MissingFeature { since, .. }) if !found.coarse_clock => {
                    // Every repository policy keeps state: below 5.11 the
                    // clock helper is what is missing, and it is named.
                    assert_eq!(since, Feature::CoarseClock.since());
                }
                Err(error) => panic!("{}: {:?}: {error}", path.display(), limits.verifier),
            }
        }
    }
}

/// No conntrack, no rate limits, no log: nothing beyond XDP, maps and
/// test runs, so it runs on every kernel Patronus can load into.
const STATELESS: &str = "\
options {
  default   = deny
  conntrack = off
}

allow tcp to port 80 label \"web\"
allow udp to port 53 label \"dns\"
allow icmp type echo-request label \"ping\"
deny from 203.0.113.0/24 label \"bogons\"
";

#[test]
fn a_stateless_policy_loads_and_attaches_on_every_kernel() {
    if !kernel_or_skip("a_stateless_policy_loads_and_attaches_on_every_kernel") {
        return;
    }
    let dir = kernel_support::TempDir::new("kcompat-stateless");
    let path = dir.0.join("stateless.pf");
    std::fs::write(&path, STATELESS).expect("writing the policy");
    let loaded = load_with(&path, &features::current().limits())
        .unwrap_or_else(|e| panic!("the stateless policy does not load: {e}"));
    assert!(!loaded.has_program(ProgramKind::Tc), "no egress program");
    let ns = Netns::with_veth("kcompat");
    let pins_root = kernel_support::TempDir::new_in(std::path::Path::new("/sys/fs/bpf"), "kcompat");
    let pins = patronus_runtime::install::Pins::new(pins_root.0.join("pt0"));
    let (_, policy) = check_policy(&path);
    let object =
        compile_with_limits(&ir::lower(&policy), &features::current().limits()).expect("compiles");
    let ns_path = format!("/var/run/netns/{}", ns.0);
    let installed = std::thread::spawn(move || {
        enter(&ns_path);
        let ifindex = patronus_runtime::install::ifindex("pt0").expect("pt0 exists");
        let installed = patronus_runtime::install::install(
            &object,
            ifindex,
            patronus_runtime::install::XdpMode::Generic,
            &pins,
            &mut patronus_runtime::install::NoHooks,
        )
        .map(|i| i.replaced);
        patronus_runtime::install::uninstall(&pins);
        installed
    })
    .join()
    .expect("the namespace thread panicked");
    let replaced = installed.expect("the stateless policy attaches");
    assert!(!replaced, "a fresh attachment");
}

fn enter(path: &str) {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on a descriptor we own; only this thread moves.
    let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(ret, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// `tc filter show dev pt0 egress` in `ns`: Patronus's filters.
fn egress_filters(ns: &Netns) -> Vec<String> {
    let shown = run(
        "tc",
        &["-n", &ns.0, "filter", "show", "dev", "pt0", "egress"],
    );
    shown
        .lines()
        .filter(|l| l.contains("patronus_egress"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_clsact_egress_filter_is_set_replaced_and_removed() {
    if !kernel_or_skip("the_clsact_egress_filter_is_set_replaced_and_removed") {
        return;
    }
    let ns = Netns::with_veth("kcfilter");
    let ns_path = format!("/var/run/netns/{}", ns.0);
    // Two distinct sched_cls programs (`r0 = TC_ACT_OK; exit`): the
    // filter mechanics do not depend on what the program does, and these
    // load on every kernel (a policy's egress program needs the 5.11
    // clock helper).
    let ok_program: [u8; 16] = [
        0xb7, 0, 0, 0, 0, 0, 0, 0, //
        0x95, 0, 0, 0, 0, 0, 0, 0,
    ];
    let load = || {
        patronus_runtime::sys::load_probe_program(3, &ok_program)
            .unwrap_or_else(|e| panic!("loading a sched_cls program: {e}"))
    };
    let (first, second) = (load(), load());
    let id =
        |fd: &std::os::fd::OwnedFd| patronus_runtime::sys::prog_id(fd.as_fd()).expect("program id");
    let (first_id, second_id) = (id(&first), id(&second));
    let set = |prog: std::os::fd::OwnedFd| {
        let ns_path = ns_path.clone();
        std::thread::spawn(move || {
            enter(&ns_path);
            let ifindex = patronus_runtime::install::ifindex("pt0").expect("pt0 exists");
            patronus_runtime::attach::set_filter(prog.as_fd(), ifindex)
                .unwrap_or_else(|e| panic!("setting the filter: {e}"));
            // The filter holds the program: closing ours keeps it loaded.
            drop(prog);
        })
        .join()
        .expect("the namespace thread panicked");
    };
    set(first);
    let filters = egress_filters(&ns);
    assert_eq!(filters.len(), 1, "one filter: {filters:?}");
    assert!(
        filters[0].contains(&format!("id {first_id}")),
        "{filters:?}"
    );
    assert!(filters[0].contains("direct-action"), "{filters:?}");
    let shown = run(
        "tc",
        &["-n", &ns.0, "filter", "show", "dev", "pt0", "egress"],
    );
    let priority = format!("pref {}", patronus_runtime::attach::FILTER_PRIORITY);
    assert!(shown.contains(&priority), "{shown}");
    set(second);
    let filters = egress_filters(&ns);
    assert_eq!(
        filters.len(),
        1,
        "replaced in place, not added: {filters:?}"
    );
    assert!(
        filters[0].contains(&format!("id {second_id}")),
        "{filters:?}"
    );
    let remove = || {
        let ns_path = ns_path.clone();
        std::thread::spawn(move || {
            enter(&ns_path);
            let ifindex = patronus_runtime::install::ifindex("pt0").expect("pt0 exists");
            patronus_runtime::attach::remove_filter(ifindex)
                .unwrap_or_else(|e| panic!("removing the filter: {e}"))
        })
        .join()
        .expect("the namespace thread panicked")
    };
    assert!(remove(), "the filter was there");
    assert!(egress_filters(&ns).is_empty(), "the filter is gone");
    assert!(!remove(), "nothing left to remove");
}
