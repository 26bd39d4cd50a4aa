//! The editor files in `editors/` know the whole language: the TextMate
//! grammar is valid JSON with the `source.patronus` scope for `.pf` files,
//! and it and the Vim syntax highlight every keyword the lexer
//! (`grammar/src/lexer.rs`) has a token for.

use std::path::Path;

use serde_json::Value;

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every word the lexer has a `#[token("...")]` for.
fn lexer_keywords() -> Vec<String> {
    let lexer = repo_file("grammar/src/lexer.rs");
    let words: Vec<String> = lexer
        .split("#[token(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_string)
        .collect();
    assert!(words.len() >= 30, "the lexer's keywords were not found");
    words
}

/// Every `match` regex of a grammar, wherever it is nested.
fn matches(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("match" | "begin" | "end", Value::String(s)) => out.push(s.clone()),
                    _ => matches(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| matches(v, out)),
        _ => {}
    }
}

/// The words of the `(?:a|b|c)` alternations of a regex.
fn alternatives(regex: &str) -> Vec<&str> {
    regex
        .split("(?:")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .flat_map(|group| group.split('|'))
        .collect()
}

#[test]
fn the_textmate_grammar_covers_every_keyword() {
    let grammar: Value =
        serde_json::from_str(&repo_file("editors/textmate/patronus.tmLanguage.json"))
            .expect("the TextMate grammar is JSON");
    assert_eq!(grammar["scopeName"], "source.patronus");
    assert_eq!(grammar["fileTypes"], serde_json::json!(["pf"]));
    let mut regexes = Vec::new();
    matches(&grammar, &mut regexes);
    let words: Vec<&str> = regexes.iter().flat_map(|r| alternatives(r)).collect();
    let missing: Vec<String> = lexer_keywords()
        .into_iter()
        .filter(|k| !words.contains(&k.as_str()))
        .collect();
    assert!(missing.is_empty(), "not highlighted: {missing:?}");
    // Every `#include` names a repository entry.
    let repository = grammar["repository"].as_object().expect("a repository");
    for include in grammar["patterns"].as_array().expect("patterns") {
        let name = include["include"].as_str().expect("an include");
        assert!(repository.contains_key(&name[1..]), "{name}");
    }
}

#[test]
fn the_vim_syntax_covers_every_keyword() {
    let syntax = repo_file("editors/vim/syntax/patronus.vim");
    let words: Vec<&str> = syntax
        .lines()
        .filter_map(|l| l.strip_prefix("syn keyword"))
        .flat_map(|l| l.split_whitespace().skip(1))
        .collect();
    let missing: Vec<String> = lexer_keywords()
        .into_iter()
        .filter(|k| !words.contains(&k.as_str()))
        .collect();
    assert!(missing.is_empty(), "not highlighted: {missing:?}");
    assert!(repo_file("editors/vim/ftdetect/patronus.vim").contains("*.pf setfiletype patronus"));
}

#[test]
fn the_vscode_extension_declares_the_language_and_the_grammar() {
    let package: Value =
        serde_json::from_str(&repo_file("editors/vscode/package.json")).expect("package.json");
    let language = &package["contributes"]["languages"][0];
    assert_eq!(language["id"], "patronus");
    assert_eq!(language["extensions"], serde_json::json!([".pf"]));
    let config = language["configuration"].as_str().expect("configuration");
    let config: Value = serde_json::from_str(&repo_file(&format!("editors/vscode/{config}")))
        .expect("language configuration");
    assert_eq!(config["comments"]["lineComment"], "#");
    let grammar = &package["contributes"]["grammars"][0];
    assert_eq!(grammar["scopeName"], "source.patronus");
    // The extension's grammar is the TextMate grammar itself (a link).
    let path = grammar["path"].as_str().expect("grammar path");
    let linked = repo_file(&format!("editors/vscode/{path}"));
    assert_eq!(
        linked,
        repo_file("editors/textmate/patronus.tmLanguage.json")
    );
}
