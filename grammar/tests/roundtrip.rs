//! parse ∘ print is the identity on ASTs (up to spans): every tree the
//! printer can produce reads back as the same tree.

mod strategies;

use patronus_grammar::ast::*;
use patronus_grammar::{parse, print, spanless::erase_spans};
use proptest::prelude::*;
use strategies::item;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn print_then_parse_gives_the_same_ast(items in proptest::collection::vec(item(), 0..8)) {
        let policy = Policy { items, comments: Vec::new() };
        let text = print::policy(&policy);
        let (reparsed, errors) = parse(&text);
        prop_assert!(errors.is_empty(), "errors {:?} in\n{}", errors, text);
        prop_assert_eq!(erase_spans(&reparsed), erase_spans(&policy), "text:\n{}", text);
    }

    #[test]
    fn parse_never_panics(text in "\\PC{0,200}") {
        let _ = parse(&text);
        let _ = patronus_grammar::parse_packet(&text);
    }
}

#[test]
fn hostile_nesting_is_an_error_not_a_crash() {
    let deep = format!(
        "const x = {}1{}\nallow tcp\n",
        "{".repeat(100_000),
        "}".repeat(100_000)
    );
    let (policy, errors) = parse(&deep);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("nested"));
    assert_eq!(policy.items.len(), 1, "the rule after it still parses");
    let bangs = format!("allow from {}10.0.0.1\n", "!".repeat(100_000));
    assert_eq!(parse(&bangs).1.len(), 1);
}

#[test]
fn many_rules_parse() {
    let text: String = (0..100_000)
        .map(|i| format!("allow tcp to port {}\n", i % 65536))
        .collect();
    let (policy, errors) = parse(&text);
    assert!(errors.is_empty());
    assert_eq!(policy.items.len(), 100_000);
}
