//! `options { ... }`: every key known, every value valid, each key given
//! at most once (across all options blocks), folded into [`typed::Options`].

use std::collections::HashMap;

use patronus_grammar::ast::{self, OptionValueKind, Span, Verdict};

use super::Checker;
use super::names;
use crate::codes::Code;
use crate::typed::Options;

const KEYS: &[&str] = &[
    "default",
    "conntrack",
    "conntrack-size",
    "ratelimit-size",
    "fragments",
    "arp",
    "ndp",
    "log-rate",
    "timeout",
];

const TIMEOUTS: &[&str] = &[
    "tcp-syn",
    "tcp-established",
    "tcp-closing",
    "tcp-rst",
    "udp",
    "udp-stream",
    "icmp",
];

const NS_PER_MS: u64 = 1_000_000;

impl<'a> Checker<'a> {
    pub fn check_options(&mut self, policy: &'a ast::Policy) -> Options {
        let mut options = Options::default();
        let mut seen: HashMap<String, Span> = HashMap::new();
        for item in &policy.items {
            let ast::Item::Options(block) = item else {
                continue;
            };
            for entry in &block.entries {
                let key = match &entry.sub {
                    Some(sub) => format!("{} {}", entry.key.name, sub.name),
                    None => entry.key.name.clone(),
                };
                if let Some(&first) = seen.get(&key) {
                    let d = self
                        .error(
                            Code::DuplicateField,
                            format!("the option `{key}` is given twice"),
                            entry.span,
                            "second setting",
                        )
                        .with_secondary(self.label(first, "first set here"))
                        .with_help("keep one setting");
                    self.emit(d);
                    continue;
                }
                seen.insert(key, entry.span);
                self.option(entry, &mut options);
            }
        }
        options
    }

    fn option(&mut self, entry: &ast::OptionEntry, options: &mut Options) {
        let value = &entry.value;
        let key = entry.key.name.as_str();
        if key != "timeout"
            && let Some(sub) = &entry.sub
        {
            let d = self
                .error(
                    Code::BadOption,
                    format!("the option `{key}` takes no second word"),
                    sub.span,
                    "unexpected word",
                )
                .with_help(format!("write `{key} = VALUE`"));
            self.emit(d);
            return;
        }
        match key {
            "default" => {
                if let Some(word) = self.word(value, key, &["deny", "allow"]) {
                    options.default = if word == "allow" {
                        Verdict::Pass
                    } else {
                        Verdict::Drop
                    };
                }
            }
            "conntrack" => {
                if let Some(word) = self.word(value, key, &["on", "off"]) {
                    options.conntrack = word == "on";
                }
            }
            "fragments" => {
                if self.word(value, key, &["drop"]).is_some() {
                    options.fragments_drop = true;
                }
            }
            "arp" => {
                if let Some(word) = self.word(value, key, &["pass", "drop"]) {
                    options.arp_pass = word == "pass";
                }
            }
            "ndp" => {
                if let Some(word) = self.word(value, key, &["pass", "drop"]) {
                    options.ndp_pass = word == "pass";
                }
            }
            "conntrack-size" => {
                if let Some(n) = self.count(value, key, 1) {
                    options.conntrack_size = n;
                }
            }
            "ratelimit-size" => {
                if let Some(n) = self.count(value, key, 1) {
                    options.ratelimit_size = n;
                }
            }
            "log-rate" => {
                if let Some(n) = self.count(value, key, 0) {
                    options.log_rate = n;
                }
            }
            "timeout" => self.timeout(entry, options),
            _ => {
                let help = match names::suggest(key, KEYS.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("the options are {}", names::one_of(KEYS)),
                };
                let d = self
                    .error(
                        Code::BadOption,
                        format!("unknown option `{key}`"),
                        entry.key.span,
                        "not an option",
                    )
                    .with_help(help);
                self.emit(d);
            }
        }
    }

    /// A value that must be one of `words`.
    fn word(
        &mut self,
        value: &ast::OptionValue,
        key: &str,
        words: &[&'static str],
    ) -> Option<&'static str> {
        if let OptionValueKind::Word(w) = &value.kind
            && let Some(found) = words.iter().find(|x| **x == w.as_str())
        {
            return Some(found);
        }
        let shown = self.source.get(value.span.range()).unwrap_or("");
        let help = match &value.kind {
            OptionValueKind::Word(w) => match names::suggest(w, words.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("`{key}` is {}", names::one_of(words)),
            },
            _ => format!("`{key}` is {}", names::one_of(words)),
        };
        let d = self
            .error(
                Code::BadOption,
                format!("`{shown}` is not a valid value for `{key}`"),
                value.span,
                format!("expected {}", names::one_of(words)),
            )
            .with_help(help);
        self.emit(d);
        None
    }

    /// A plain number from `min` up to `u32::MAX`.
    fn count(&mut self, value: &ast::OptionValue, key: &str, min: u64) -> Option<u32> {
        let shown = self.source.get(value.span.range()).unwrap_or("");
        let n = match value.kind {
            OptionValueKind::Number(n) => n,
            _ => {
                let d = self
                    .error(
                        Code::BadOption,
                        format!("`{key}` takes a number, found `{shown}`"),
                        value.span,
                        "expected a number",
                    )
                    .with_help(format!("write `{key} = N`"));
                self.emit(d);
                return None;
            }
        };
        match u32::try_from(n) {
            Ok(v) if n >= min => Some(v),
            _ => {
                let d = self
                    .error(
                        Code::BadOption,
                        format!("`{key} = {n}` is out of range"),
                        value.span,
                        format!("expected {min} to {}", u32::MAX),
                    )
                    .with_help(format!("`{key}` is a number from {min} to {}", u32::MAX));
                self.emit(d);
                None
            }
        }
    }

    fn timeout(&mut self, entry: &ast::OptionEntry, options: &mut Options) {
        let Some(sub) = &entry.sub else {
            let d = self
                .error(
                    Code::BadOption,
                    "`timeout` needs the name of the timeout",
                    entry.key.span,
                    "which timeout?",
                )
                .with_help(format!(
                    "write `timeout NAME = DURATION`, NAME being {}",
                    names::one_of(TIMEOUTS)
                ));
            self.emit(d);
            return;
        };
        let slot = match sub.name.as_str() {
            "tcp-syn" => &mut options.timeouts.tcp_syn,
            "tcp-established" => &mut options.timeouts.tcp_established,
            "tcp-closing" => &mut options.timeouts.tcp_closing,
            "tcp-rst" => &mut options.timeouts.tcp_rst,
            "udp" => &mut options.timeouts.udp,
            "udp-stream" => &mut options.timeouts.udp_stream,
            "icmp" => &mut options.timeouts.icmp,
            other => {
                let help = match names::suggest(other, TIMEOUTS.iter().copied()) {
                    Some(s) => format!("did you mean `timeout {s}`?"),
                    None => format!("the timeouts are {}", names::one_of(TIMEOUTS)),
                };
                let d = self
                    .error(
                        Code::BadOption,
                        format!("unknown timeout `{other}`"),
                        sub.span,
                        "not a timeout",
                    )
                    .with_help(help);
                self.emit(d);
                return;
            }
        };
        let value = &entry.value;
        match value.kind {
            OptionValueKind::Duration(ms) if ms > 0 => {
                *slot = ms.saturating_mul(NS_PER_MS);
            }
            OptionValueKind::Duration(_) => {
                let d = self
                    .error(
                        Code::BadOption,
                        "a timeout of 0 expires entries at once",
                        value.span,
                        "zero",
                    )
                    .with_help("use a duration of at least 1ms");
                self.emit(d);
            }
            OptionValueKind::Number(n) => {
                let d = self
                    .error(
                        Code::BadOption,
                        "a timeout needs a unit",
                        value.span,
                        "a number without a unit",
                    )
                    .with_help(format!(
                        "write a duration: `{n}s`, `{n}m`, `{n}h` or `{n}d`"
                    ));
                self.emit(d);
            }
            OptionValueKind::Word(_) => {
                let d = self
                    .error(
                        Code::BadOption,
                        "a timeout takes a duration",
                        value.span,
                        "expected a duration",
                    )
                    .with_help("write a duration such as `30s`, `5m`, `2h` or `5d`");
                self.emit(d);
            }
        }
    }
}
