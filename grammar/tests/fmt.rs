//! The formatter: idempotent, meaning-preserving (up to set order), and it
//! keeps every comment.

mod strategies;

use patronus_grammar::fmt::{format, sort_sets};
use patronus_grammar::{parse, print, spanless::erase_spans};
use proptest::prelude::*;

/// Lays printed policy text out badly: random extra spaces, blank lines and
/// comments at line ends and on lines of their own.
fn scramble(text: &str, noise: &[u8]) -> String {
    let mut out = String::new();
    let mut n = noise.iter().cycle();
    for (i, line) in text.lines().enumerate() {
        let r = *n.next().unwrap_or(&0);
        if r.is_multiple_of(5) {
            out.push_str(&format!("# note {i}\n"));
        }
        if r % 7 == 1 {
            out.push('\n');
        }
        let spaced = if r.is_multiple_of(3) {
            line.replace(' ', "   ")
        } else {
            line.to_string()
        };
        out.push_str(&spaced);
        if r % 4 == 1 {
            out.push_str(&format!("   # trailing {i}"));
        }
        out.push('\n');
    }
    out
}

fn meaning(text: &str) -> patronus_grammar::ast::Policy {
    let (mut p, errors) = parse(text);
    assert!(errors.is_empty(), "{errors:?}\n{text}");
    sort_sets(&mut p);
    erase_spans(&p)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fmt_is_idempotent_and_keeps_meaning_and_comments(
        policy in strategies::policy(),
        noise in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        let messy = scramble(&print::policy(&policy), &noise);
        let once = format(&messy).map_err(|e| TestCaseError::fail(format!("{e:?}\n{messy}")))?;
        let twice = format(&once).map_err(|e| TestCaseError::fail(format!("{e:?}\n{once}")))?;
        prop_assert_eq!(&twice, &once, "not idempotent; input:\n{}", messy);
        prop_assert_eq!(meaning(&once), meaning(&messy));
        let count = |t: &str| parse(t).0.comments.len();
        prop_assert_eq!(count(&once), count(&messy), "comments lost:\n{}\n---\n{}", messy, once);
    }
}

#[test]
fn example_policy_layout() {
    let messy = "# header\ninterface eth0\nconst web = { 443, 80 }   # web ports\nconst admins={192.0.2.0/24}\n\n\n\noptions { default = deny  conntrack = on # ct\n }\ndeny from 10.0.0.0/8\nallow tcp   to port $web # open\nallow tcp from $admins to port 22\ntest \"t\" { expect pass tcp 192.0.2.1:1 -> 192.0.2.2:443 # yes\n}\n# end\n";
    let formatted = format(messy).expect("formats");
    assert_eq!(
        formatted,
        "# header\ninterface eth0\n\nconst web    = { 80, 443 }  # web ports\nconst admins = { 192.0.2.0/24 }\n\noptions {\n  default   = deny\n  conntrack = on  # ct\n}\n\ndeny  from 10.0.0.0/8\nallow tcp to port $web  # open\nallow tcp from $admins to port 22\n\ntest \"t\" {\n  expect pass tcp 192.0.2.1:1 -> 192.0.2.2:443  # yes\n}\n\n# end\n"
    );
}

#[test]
fn syntax_errors_are_not_formatted() {
    assert!(format("allow tcp to port\n").is_err());
}
