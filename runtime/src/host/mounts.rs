//! Whether pins made on a bpffs outlive this process.
//!
//! A pinned link keeps a policy attached only while its bpffs exists. A
//! bpffs mounted in a private mount namespace (`unshare -m`, then a fresh
//! `mount -t bpf`) goes away with that namespace, and the policy with it,
//! although `apply` "succeeded". Pins persist when we share pid 1's mount
//! namespace, or when pid 1's namespace has the same bpffs (same
//! superblock, hence device number) mounted somewhere.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// The device numbers (`major:minor`) of the bpffs mounts listed in a
/// `/proc/PID/mountinfo` text.
pub fn bpffs_devices(mountinfo: &str) -> Vec<(u32, u32)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            if after.split_whitespace().next()? != "bpf" {
                return None;
            }
            let (major, minor) = before.split_whitespace().nth(2)?.split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .collect()
}

fn same_file(a: &str, b: &str) -> Option<bool> {
    let (a, b) = (std::fs::metadata(a).ok()?, std::fs::metadata(b).ok()?);
    Some(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Why pins on the bpffs holding `dir` (an existing directory) would
/// vanish when this process's mount namespace ends; `None` when they
/// persist, or when it cannot be told (pid 1's mount table unreadable).
pub fn ephemeral_reason(dir: &Path) -> Option<String> {
    // The namespace links may be unreadable (pid 1 outside our reach):
    // then pid 1's mount table alone decides.
    if same_file("/proc/self/ns/mnt", "/proc/1/ns/mnt") == Some(true) {
        return None;
    }
    let dev = std::fs::metadata(dir).ok()?.dev();
    let ours = (libc::major(dev), libc::minor(dev));
    let host = std::fs::read_to_string("/proc/1/mountinfo").ok()?;
    if bpffs_devices(&host).contains(&ours) {
        return None;
    }
    Some(format!(
        "the bpffs holding `{}` is private to this mount namespace (pid 1's mount namespace \
         does not have it): the pins, and the policy with them, would vanish when this \
         namespace ends. Run patronusc in the host's mount namespace (e.g. `nsenter \
         --mount=/proc/1/ns/mnt -- patronusc ...`)",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpffs_mounts_are_found_by_type_not_by_path() {
        let text = "\
24 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
35 24 0:31 / /sys/fs/bpf rw,nosuid shared:12 - bpf bpf rw,mode=700
90 30 0:45 / /mnt/my\\040bpf rw - bpf none rw
91 30 0:46 / /mnt/x rw - tmpfs bpf rw
";
        assert_eq!(bpffs_devices(text), vec![(0, 31), (0, 45)]);
    }
}
