//! Verifier budget at scale: 10,000 rules and a 1,000,000-entry table
//! must load with far fewer than the kernel's 1M processed instructions.
//! Prints the program size and `verified_insns` for the report. A policy
//! over the instruction limit is refused at compile time, naming a rule
//! (checked with a lowered limit, not a huge policy).

mod xdp_common;

use patronus_codegen::object::{Limits, compile_with_limits};
use patronus_codegen::{CodegenError, compile};
use patronus_compiler::diag::Files;
use patronus_compiler::ir;
use patronus_compiler::{LoadedFile, TableLoader};
use patronus_runtime::ProgramKind;

/// Serves one generated table file.
struct OneTable(String);

impl TableLoader for OneTable {
    fn load(&self, _policy: &str, path: &str) -> Result<LoadedFile, String> {
        Ok(LoadedFile {
            name: path.to_string(),
            text: self.0.clone(),
        })
    }
}

fn lower(source: String, table: String) -> ir::Program {
    let mut files = Files::new();
    let file = files.add("budget.pf".to_string(), source);
    let checked = patronus_compiler::check(&mut files, file, &OneTable(table));
    let failed = checked.has_errors();
    let policy = checked.policy.filter(|_| !failed).unwrap_or_else(|| {
        panic!(
            "policy checks: {}",
            patronus_compiler::render::human(&files, &checked.diagnostics, false)
        )
    });
    ir::lower(&policy)
}

fn load_and_report(name: &str, program: &ir::Program) -> u32 {
    let object = compile(program).unwrap_or_else(|e| panic!("{name}: {e}"));
    let loaded = xdp_common::load(&object);
    let verified = loaded
        .stats(ProgramKind::Xdp)
        .and_then(|s| s.verified_insns)
        .expect("the kernel reports verified_insns");
    eprintln!(
        "{name}: {} insns, {} bytes of stack, verified_insns {verified}",
        object.insn_count, object.stack_bytes
    );
    verified
}

#[test]
fn ten_thousand_rules_stay_far_below_the_verifier_limit() {
    if !xdp_common::kernel("ten_thousand_rules_stay_far_below_the_verifier_limit") {
        return;
    }
    let mut source = String::from("options { conntrack = off }\n");
    for i in 0..10_000u32 {
        let (a, b) = (i / 256, i % 256);
        let port = 1000 + i % 20_000;
        if i % 10 == 0 {
            source.push_str(&format!("deny udp from 10.{a}.{b}.0/24 to port {port}\n"));
        } else {
            source.push_str(&format!("allow tcp from 10.{a}.{b}.0/24 to port {port}\n"));
        }
    }
    let program = lower(source, String::new());
    let verified = load_and_report("10,000 rules", &program);
    assert!(verified < 1_000_000, "{verified} processed instructions");
}

/// Deny and allow rules deciding into the shared tail (conntrack insert,
/// counters, exit): every rule's leaf must merge there, or the tail is
/// verified once per rule (this policy took 561,460 instructions when each
/// leaf left a different constant counter key on the stack; 2,000 rules
/// went over the 1M limit).
#[test]
fn rule_leaves_merge_before_the_conntrack_tail() {
    if !xdp_common::kernel("rule_leaves_merge_before_the_conntrack_tail") {
        return;
    }
    let mut source = String::from("options { conntrack = on }\n");
    for i in 0..1_000u32 {
        let (a, b) = (i / 250, i % 250);
        let action = if i % 3 == 0 { "deny" } else { "allow" };
        match i % 3 {
            0 => source.push_str(&format!(
                "{action} tcp from {{ 10.{a}.{b}.0/24, 172.16.{b}.0/24 }} to port {}\n",
                1000 + i
            )),
            1 => source.push_str(&format!(
                "{action} udp from 10.{a}.{b}.0/24 to port {}\n",
                20_000 + i
            )),
            _ => source.push_str(&format!(
                "{action} tcp to port {}-{}\n",
                30_000 + 4 * i,
                30_003 + 4 * i
            )),
        }
    }
    let program = lower(source, String::new());
    let verified = load_and_report("1,000 rules into conntrack", &program);
    assert!(verified < 60_000, "{verified} processed instructions");
}

#[test]
fn a_million_entry_table_stays_far_below_the_verifier_limit() {
    if !xdp_common::kernel("a_million_entry_table_stays_far_below_the_verifier_limit") {
        return;
    }
    let mut table = String::with_capacity(20 * 1_000_000);
    for i in 0..1_000_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        if i % 2 == 0 {
            table.push_str(&format!("11.{a}.{b}.{c}\n"));
        } else {
            table.push_str(&format!("{}.{a}.{b}.0/24\n", 20 + c % 100));
        }
    }
    let source = "table big file \"big.txt\"\ndeny from @big\nallow tcp to port 22\n".to_string();
    let program = lower(source, table);
    let verified = load_and_report("1,000,000-entry table", &program);
    assert!(verified < 100_000, "{verified} processed instructions");
}

#[test]
fn a_program_over_the_instruction_limit_is_refused_naming_a_rule() {
    let mut source = String::from("options { conntrack = off }\n");
    for i in 0..200u32 {
        source.push_str(&format!(
            "allow tcp from 10.{}.{}.0/24 to port {}\n",
            i / 256,
            i % 256,
            1000 + i
        ));
    }
    let program = lower(source, String::new());
    let fits = compile_with_limits(&program, &Limits::default()).expect("fits the kernel's limits");
    let limit = fits.insn_count / 2;
    let error = compile_with_limits(
        &program,
        &Limits {
            max_insns: limit,
            ..Limits::default()
        },
    )
    .expect_err("half the program's size is over the limit");
    let CodegenError::Limit {
        what,
        rule: Some(rule),
    } = &error
    else {
        panic!("not a limit error naming a rule: {error:?}");
    };
    assert!(what.contains(&limit.to_string()), "{what}");
    assert!(
        (rule.0 as usize) < program.rules.len(),
        "{rule:?} is not a rule of the policy"
    );
    // The rules' leaves come in file order after the parser: half the
    // program is past the first rule's and before the last rule's.
    assert_ne!(rule.0, 0);
    assert_ne!(rule.0, 199);
    let message = error.to_string();
    assert!(
        message.contains(&format!("at rule {}", rule.0 + 1)),
        "{message}"
    );
    eprintln!("limit {limit}: {message}");
}

/// Sixteen rate-limited rules of mixed keys, protocols and families. Each
/// rule's charge has several paths (bucket found or new, refilled or
/// not); the verifier must merge them at the rule's end, or the paths
/// multiply rule after rule (this policy needed 225k instructions when the
/// bitmap word stayed precise across the charges, a 15-rule one over 1M).
#[test]
fn sixteen_mixed_rate_limits_grow_linearly() {
    if !xdp_common::kernel("sixteen_mixed_rate_limits_grow_linearly") {
        return;
    }
    let source = "\
limit proto 47 to !10.0.1.0/24 rate 10/h burst 3 per dst
allow tcp to { 10.0.0.2, 2001:db8::/32 } flags S/SA rate 10/h burst 3 per flow
limit tcp from any port 1500-65535 flags R/R rate 10/h burst 2 per flow
limit from !{ 10.0.0.0/24, 2001:db8::1 } to !10.0.0.0/24 rate 1/m burst 3 per global
allow to !{ 10.0.0.1, 2001:db8::/64 } rate 10/h burst 3 per dst
limit icmpv6 from 2001:db8::/32 type { 129, 128 } rate 2/h burst 2 per global
limit udp to port 53 rate 1/m burst 3 per flow
limit to !2001:db8::/64 vlan 5 rate 10/h burst 2 per flow
limit to !10.0.0.0/24 vlan 7 rate 1/m burst 1 per global
limit proto 47 from !{ 10.0.0.0/8, 10.0.0.2 } rate 2/m burst 1 per global
allow tcp flags A/A rate 10/h burst 2 per dst
limit to !{ 10.0.1.1, 192.0.2.0/25 } rate 2/m burst 1 per flow
limit icmp from 198.51.100.0/24 vlan 7 rate 2/m burst 1 per flow
limit proto { tcp, udp } from any port 65535 to !10.0.1.1 port 2000-65535 rate 1/h burst 2 per src
allow icmpv6 from !2001:db8::/48 type 128 rate 1/m burst 3 per global
allow udp from 192.0.2.0/24 to port 123 rate 5/s per src
";
    let program = lower(source.to_string(), String::new());
    let rated = program.rules.iter().filter(|r| r.rate.is_some()).count();
    assert_eq!(rated, 16, "every rule is rate limited");
    let verified = load_and_report("16 mixed rate limits", &program);
    assert!(verified < 150_000, "{verified} processed instructions");
}
