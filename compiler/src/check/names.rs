//! Fixed vocabularies of the language: protocol names, ICMP and ICMPv6
//! type names, TCP flag letters, option words, and "did you mean"
//! suggestions over any of them.

use crate::typed::{Family, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, tcp_flags};

/// Protocol names accepted in `proto { ... }`, constants and test packets.
pub const PROTOCOLS: &[(&str, u8)] = &[
    ("tcp", PROTO_TCP),
    ("udp", PROTO_UDP),
    ("icmp", PROTO_ICMP),
    ("icmpv6", PROTO_ICMPV6),
];

pub fn protocol(name: &str) -> Option<u8> {
    PROTOCOLS.iter().find(|(n, _)| *n == name).map(|&(_, p)| p)
}

/// ICMP (RFC 792, 950, 1256) type names.
pub const ICMP4_TYPES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp", 13),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
    ("information-request", 15),
    ("information-reply", 16),
    ("address-mask-request", 17),
    ("address-mask-reply", 18),
];

/// ICMPv6 (RFC 4443, 4861, 2710) type names.
pub const ICMP6_TYPES: &[(&str, u8)] = &[
    ("destination-unreachable", 1),
    ("unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("multicast-listener-query", 130),
    ("multicast-listener-report", 131),
    ("multicast-listener-done", 132),
    ("router-solicitation", 133),
    ("router-advertisement", 134),
    ("neighbor-solicitation", 135),
    ("neighbor-advertisement", 136),
    ("redirect", 137),
];

pub fn icmp_types(family: Family) -> &'static [(&'static str, u8)] {
    match family {
        Family::Ipv4 => ICMP4_TYPES,
        Family::Ipv6 => ICMP6_TYPES,
    }
}

pub fn icmp_type(family: Family, name: &str) -> Option<u8> {
    icmp_types(family)
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, t)| t)
}

pub fn is_icmp_type_name(name: &str) -> bool {
    icmp_type(Family::Ipv4, name).is_some() || icmp_type(Family::Ipv6, name).is_some()
}

/// The ICMP protocol keyword of a family, as users write it.
pub fn icmp_keyword(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "icmp",
        Family::Ipv6 => "icmpv6",
    }
}

/// The echo request type of a family: the default type of test packets.
pub fn echo_request(family: Family) -> u8 {
    match family {
        Family::Ipv4 => 8,
        Family::Ipv6 => 128,
    }
}

/// pf's flag letters, in the order pf prints them.
pub const FLAG_LETTERS: &[(char, u8)] = &[
    ('F', tcp_flags::FIN),
    ('S', tcp_flags::SYN),
    ('R', tcp_flags::RST),
    ('P', tcp_flags::PSH),
    ('A', tcp_flags::ACK),
    ('U', tcp_flags::URG),
    ('E', tcp_flags::ECE),
    ('W', tcp_flags::CWR),
];

pub const ALL_FLAGS: u8 = 0xff;

/// The flag bits of letters like `SA`. On a letter that is not a flag,
/// returns its byte offset in `text` and the letter.
pub fn parse_flags(text: &str) -> Result<u8, (usize, char)> {
    let mut bits = 0u8;
    for (offset, letter) in text.char_indices() {
        match FLAG_LETTERS.iter().find(|(l, _)| *l == letter) {
            Some(&(_, bit)) => bits |= bit,
            None => return Err((offset, letter)),
        }
    }
    Ok(bits)
}

/// The letters of flag bits, `SA` for SYN|ACK.
pub fn flag_letters(bits: u8) -> String {
    FLAG_LETTERS
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(l, _)| *l)
        .collect()
}

/// Longest name (in bytes) that gets a "did you mean" suggestion.
pub const MAX_SUGGEST_LEN: usize = 64;

/// The closest candidate to a misspelt `name`, if it is close enough to be
/// what was meant (edit distance at most a third of the length, at least 1).
///
/// Names longer than [`MAX_SUGGEST_LEN`] get no suggestion, and candidates
/// whose length alone puts them too far are skipped before any edit
/// distance is computed: the cost stays bounded however long the names.
pub fn suggest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    if name.len() > MAX_SUGGEST_LEN {
        return None;
    }
    let length = name.chars().count();
    let limit = (length / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .filter(|c| c.len() <= MAX_SUGGEST_LEN * 4 && c.chars().count().abs_diff(length) <= limit)
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Edit distance over characters, counting a swap of two neighbours as
/// one edit (optimal string alignment): `tpc` is one edit from `tcp`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: two back (for swaps), previous, current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// `a`, `b` or `c` for help lines.
pub fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_print() {
        assert_eq!(parse_flags("SA"), Ok(tcp_flags::SYN | tcp_flags::ACK));
        assert_eq!(parse_flags("FSRPAUEW"), Ok(ALL_FLAGS));
        assert_eq!(parse_flags("SX"), Err((1, 'X')));
        assert_eq!(flag_letters(tcp_flags::SYN | tcp_flags::ACK), "SA");
    }

    #[test]
    fn suggestions_are_close_only() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("tpc", "tcp"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(suggest("admnis", ["admins", "web"]), Some("admins"));
        assert_eq!(suggest("xyz", ["admins", "web"]), None);
        assert_eq!(
            suggest("echo-requets", ICMP4_TYPES.iter().map(|t| t.0)),
            Some("echo-request")
        );
    }

    #[test]
    fn icmp_names_depend_on_family() {
        assert_eq!(icmp_type(Family::Ipv4, "echo-request"), Some(8));
        assert_eq!(icmp_type(Family::Ipv6, "echo-request"), Some(128));
        assert_eq!(icmp_type(Family::Ipv4, "packet-too-big"), None);
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
