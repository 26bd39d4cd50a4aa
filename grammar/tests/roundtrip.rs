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
