//! The loader's hand-assembled sample object (runtime::testing) through
//! the system's tools: `bpftool prog loadall` and `ip link set ... xdp obj`
//! on a veth in a throw-away network namespace. Independent of the code
//! generator, so a failure here points at the ELF writer or the machine.

mod kernel_support;

use kernel_support::{Netns, TempDir, attach_xdp_in_netns, bpftool_loadall, kernel_or_skip};
use patronus_runtime::testing::SampleObject;

fn sample_object_file(dir: &TempDir) -> std::path::PathBuf {
    let sample = SampleObject::new(4).expect("the sample object assembles");
    let path = dir.0.join("sample.o");
    std::fs::write(&path, &sample.elf).expect("writing sample.o");
    path
}

#[test]
fn bpftool_loads_the_sample_object() {
    if !kernel_or_skip("bpftool_loads_the_sample_object") {
        return;
    }
    let dir = TempDir::new("tools-bpftool");
    bpftool_loadall(&sample_object_file(&dir));
}

#[test]
fn ip_link_attaches_the_sample_object() {
    if !kernel_or_skip("ip_link_attaches_the_sample_object") {
        return;
    }
    let dir = TempDir::new("tools-iplink");
    let ns = Netns::with_veth("tools");
    attach_xdp_in_netns(&ns, &sample_object_file(&dir));
}
