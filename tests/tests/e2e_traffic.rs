//! End to end on the real kernel: a policy applied with `patronusc apply`
//! on the server side of a veth pair between two network namespaces, and
//! real traffic from the client side — TCP handshakes (a dropped SYN times
//! out, it is not refused), UDP datagrams, ICMP and ICMPv6 echo (NDP passes
//! by default), SYNs cut at the configured rate, and the server's own
//! outbound TCP and ping working under default deny (egress conntrack).
//! Skipped with a message without a usable kernel, failed instead when
//! PATRONUS_REQUIRE_KERNEL=1.

mod e2e_support;
mod netns;

use std::io::ErrorKind;
use std::time::Duration;

use e2e_support::{Pinger, udp_listener, udp_received, udp_send};
use netns::{
    CLIENT, CLIENT6, SERVER, SERVER6, Setup, echo_server, echo_works, open_connection, try_connect,
};
use patronus_cli::common::Status;
use patronus_runtime::testing::kernel_or_skip;

const PING_WAIT: Duration = Duration::from_millis(1000);

/// Web on 80, one UDP port, echo on both families, SSH at 5 SYNs a
/// minute (a burst of 5), everything else dropped.
const OPEN: &str = "\
options {
  default   = deny
  conntrack = on
}

allow tcp to port 80 label \"web\"
allow udp to port 5300 label \"udp\"
allow icmp type echo-request label \"ping\"
allow icmpv6 type echo-request label \"ping6\"
allow tcp to port 22 rate 5/m burst 5 label \"ssh\"
";

/// The same without echo: pings to the server are dropped, the server's
/// own pings still get their replies through conntrack.
const NO_PING: &str = "\
options {
  default   = deny
  conntrack = on
}

allow tcp to port 80 label \"web\"
allow udp to port 5300 label \"udp\"
allow tcp to port 22 rate 5/m burst 5 label \"ssh\"
";

/// Asserts that a connection from the client to `addr:port` times out
/// (the SYN was dropped, no RST came back).
fn assert_times_out(setup: &Setup, addr: &str, port: u16) {
    match try_connect(&setup.client, addr, port) {
        Ok(_) => panic!("{addr} port {port}: the connection opened; the policy drops it"),
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::TimedOut,
            "{addr} port {port}: a dropped SYN times out, it is not refused ({e})"
        ),
    }
}

fn assert_connects(setup: &Setup, addr: &str, port: u16) {
    if let Err(e) = try_connect(&setup.client, addr, port) {
        panic!("{addr} port {port}: the policy allows the connection, but {e}");
    }
}

#[test]
fn traffic_through_an_applied_policy() {
    if !kernel_or_skip("traffic_through_an_applied_policy") {
        return;
    }
    let setup = Setup::new("e2e");
    for (addr, port) in [(SERVER, 80), (SERVER, 8080), (SERVER, 22), (SERVER6, 80)] {
        echo_server(&setup.server, addr, port);
    }
    echo_server(&setup.server, SERVER6, 8080);
    echo_server(&setup.client, CLIENT, 7000);
    echo_server(&setup.client, CLIENT6, 7000);
    assert_connects(&setup, SERVER, 8080);

    assert_eq!(
        setup.apply_text("open", OPEN).expect("apply"),
        Status::Success
    );

    // TCP: 80 open, 8080 dropped (a timeout, not a refusal), both families.
    assert_connects(&setup, SERVER, 80);
    assert_times_out(&setup, SERVER, 8080);
    assert_connects(&setup, SERVER6, 80);
    assert_times_out(&setup, SERVER6, 8080);

    // UDP: 5300 arrives, 5301 does not.
    let allowed = udp_listener(&setup.server, SERVER, 5300);
    let denied = udp_listener(&setup.server, SERVER, 5301);
    udp_send(&setup.client, SERVER, 5300, b"allowed");
    udp_send(&setup.client, SERVER, 5301, b"denied");
    assert!(udp_received(&allowed, b"allowed"), "udp 5300 is allowed");
    assert!(!udp_received(&denied, b"denied"), "udp 5301 is dropped");

    // Echo on both families (IPv6 needs neighbour discovery to pass).
    assert!(
        Pinger::new(&setup.client, SERVER).ping(1, PING_WAIT),
        "ping is allowed"
    );
    assert!(
        Pinger::new(&setup.client, SERVER6).ping(1, PING_WAIT),
        "ping6 is allowed (and NDP passes)"
    );

    // 5 SYNs a minute, burst 5: five handshakes, then the sixth SYN is cut.
    let mut ssh = Vec::new();
    for attempt in 1..=5 {
        match try_connect(&setup.client, SERVER, 22) {
            Ok(stream) => ssh.push(stream),
            Err(e) => panic!("ssh connection {attempt} of the burst of 5: {e}"),
        }
    }
    assert_times_out(&setup, SERVER, 22);
    drop(ssh);

    // Without the echo rules: the client's pings are dropped (new echo
    // identifiers, so no flow of the pings above is reused) ...
    assert_eq!(
        setup.apply_text("no-ping", NO_PING).expect("apply"),
        Status::Success
    );
    assert!(
        !Pinger::new(&setup.client, SERVER).ping(1, PING_WAIT),
        "ping is dropped"
    );
    assert!(
        !Pinger::new(&setup.client, SERVER6).ping(1, PING_WAIT),
        "ping6 is dropped"
    );
    assert_connects(&setup, SERVER, 80);

    // ... while what the server sends gets its replies (egress conntrack).
    assert!(
        Pinger::new(&setup.server, CLIENT).ping(1, PING_WAIT),
        "the server's own ping gets its reply"
    );
    assert!(
        Pinger::new(&setup.server, CLIENT6).ping(1, PING_WAIT),
        "the server's own ping6 gets its reply"
    );
    for client in [CLIENT, CLIENT6] {
        let mut outbound = open_connection(&setup.server, client, 7000);
        assert!(
            echo_works(&mut outbound, b"outbound"),
            "the server's own connection to {client} works"
        );
    }
}
