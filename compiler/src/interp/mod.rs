//! The reference interpreter: LANGUAGE.md §3–§4 in plain Rust, evaluated on
//! the typed policy. It is the oracle every other engine (IR evaluator,
//! kernel program) is tested against, so it is written for clarity.
//!
//! Time is virtual: the caller passes `now_ns` with every packet.
//!
//! An inbound frame goes through:
//! 0. the pre-phase: ARP passes (dropped with `arp = drop`); ICMPv6
//!    neighbor discovery (types 133–137, hop limit 255) passes (dropped with
//!    `ndp = drop`); other non-IP ethertypes go to phase 6. A malformed NDP
//!    frame is invalid: the frame is parsed before NDP is recognised.
//! 1. invalid: [`frame::parse`] names the class.
//! 2. deny: the first matching `deny` in file order drops.
//! 3. established (conntrack on): a live flow passes, except a TCP SYN
//!    without ACK, which is never established.
//! 4. rate limit: each matching rule with a rate (`limit`, `allow ... rate`)
//!    takes one token of its bucket, in file order. The first empty bucket
//!    drops the packet; rules after it are not charged, and tokens taken
//!    from earlier buckets stay taken (as in the data path, which charges as
//!    it goes and has no second pass to give tokens back).
//! 5. allow: the first matching `allow` in file order passes and (conntrack
//!    on) starts or refreshes tracking of the flow.
//! 6. default: `options default`.
//!
//! Counters ([`Outcome::counters`]): each rule that took part (the deciding
//! deny, every charged rate-limited rule, the deciding allow), once per
//! packet even if it took part twice (an `allow ... rate` that was charged
//! and then allowed), then the deciding phase.

pub mod conntrack;
mod lru;
pub mod matching;
pub mod ratelimit;

use patronus_grammar::ast::{Action, Verdict};

use crate::frame::{self, Frame, IpPacket};
use crate::semantics::{Counter, InvalidClass, Outcome, Phase};
use crate::typed::{Policy, RuleId};
use conntrack::{Conntrack, Flow, Hit};
use ratelimit::{BucketKey, Buckets, Take};

/// One thing an evaluation looked at and what it found, in order; the
/// material of `patronusc explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceStep {
    /// Phase 1 found the frame malformed.
    Invalid(InvalidClass),
    /// The frame parsed; a summary of it.
    Parsed(Frame),
    Arp {
        pass: bool,
    },
    Ndp {
        pass: bool,
    },
    /// Neither IP nor ARP: straight to phase 6.
    NonIp {
        ethertype: u16,
    },
    /// Phase 2.
    Denied(RuleId),
    NoDenyMatched,
    /// Phase 3 was skipped.
    ConntrackOff,
    LoneSynNeverEstablished,
    /// Phase 3 found a live flow.
    Established(Hit),
    NoLiveFlow,
    /// Phase 4: a rule's bucket gave a token / was empty.
    TokenTaken {
        rule: RuleId,
        key: BucketKey,
        tokens_left: u64,
    },
    BucketEmpty {
        rule: RuleId,
        key: BucketKey,
    },
    NoRateLimitMatched,
    /// Phase 5.
    Allowed(RuleId),
    /// The allowed packet's flow is now tracked (`None`: not trackable,
    /// e.g. an ICMP error).
    Tracked(Option<Flow>),
    NoAllowMatched,
    /// Phase 6.
    Default(Verdict),
}

pub struct Interpreter<'p> {
    policy: &'p Policy,
    conntrack: Conntrack,
    /// Buckets per rule index; `None` for rules without a rate.
    buckets: Vec<Option<Buckets>>,
}

impl<'p> Interpreter<'p> {
    pub fn new(policy: &'p Policy) -> Self {
        let options = &policy.options;
        let buckets = policy
            .rules
            .iter()
            .map(|rule| {
                rule.rate
                    .map(|rate| Buckets::new(rate, options.ratelimit_size))
            })
            .collect();
        Interpreter {
            policy,
            conntrack: Conntrack::new(options.conntrack_size, options.timeouts),
            buckets,
        }
    }

    /// Evaluates one inbound frame at virtual time `now_ns`, updating conntrack and buckets.
    pub fn inbound(&mut self, frame: &[u8], now_ns: u64) -> Outcome {
        self.inbound_traced(frame, now_ns).0
    }

    /// A frame the host sends out of the interface (feeds conntrack; never dropped).
    pub fn outbound(&mut self, frame: &[u8], now_ns: u64) {
        if !self.policy.options.conntrack {
            return;
        }
        // A frame the host sends is not filtered; one that does not parse
        // as IP simply has no flow to track.
        if let Ok(Frame::Ip(packet)) = frame::parse(frame, &self.policy.options) {
            self.conntrack.track(&packet, now_ns);
        }
    }

    /// [`Interpreter::inbound`], also returning what each phase found.
    pub fn inbound_traced(&mut self, frame: &[u8], now_ns: u64) -> (Outcome, Vec<TraceStep>) {
        let mut eval = Evaluation::default();
        let (verdict, phase, rule) = self.decide(frame, now_ns, &mut eval);
        if let Some(rule) = rule {
            eval.count_rule(rule);
        }
        eval.counters.push(Counter::Phase(phase));
        let outcome = Outcome {
            verdict,
            phase,
            rule,
            counters: eval.counters,
        };
        (outcome, eval.trace)
    }

    /// The phases in order; returns the verdict, the deciding phase and rule.
    fn decide(
        &mut self,
        frame: &[u8],
        now_ns: u64,
        eval: &mut Evaluation,
    ) -> (Verdict, Phase, Option<RuleId>) {
        let policy: &'p Policy = self.policy;
        let options = &policy.options;
        let default = (options.default, Phase::Default, None);
        let packet = match frame::parse(frame, options) {
            Err(class) => {
                eval.trace.push(TraceStep::Invalid(class));
                return (Verdict::Drop, Phase::Invalid(class), None);
            }
            Ok(Frame::Arp { .. }) => {
                eval.trace.push(TraceStep::Arp {
                    pass: options.arp_pass,
                });
                return (pass_if(options.arp_pass), Phase::Arp, None);
            }
            Ok(Frame::NonIp { ethertype, .. }) => {
                eval.trace.push(TraceStep::NonIp { ethertype });
                eval.trace.push(TraceStep::Default(options.default));
                return default;
            }
            Ok(Frame::Ip(packet)) => packet,
        };
        eval.trace
            .push(TraceStep::Parsed(Frame::Ip(packet.clone())));
        if packet.is_ndp() {
            eval.trace.push(TraceStep::Ndp {
                pass: options.ndp_pass,
            });
            return (pass_if(options.ndp_pass), Phase::Ndp, None);
        }

        // Phase 2: deny beats everything after it, whatever the file order.
        if let Some(rule) = self.first_match(Action::Deny, &packet) {
            eval.trace.push(TraceStep::Denied(rule));
            return (Verdict::Drop, Phase::Deny, Some(rule));
        }
        eval.trace.push(TraceStep::NoDenyMatched);

        // Phase 3.
        if !options.conntrack {
            eval.trace.push(TraceStep::ConntrackOff);
        } else if packet.is_lone_syn() {
            eval.trace.push(TraceStep::LoneSynNeverEstablished);
        } else if let Some(hit) = self.conntrack.lookup(&packet, now_ns) {
            eval.trace.push(TraceStep::Established(hit));
            return (Verdict::Pass, Phase::Established, None);
        } else {
            eval.trace.push(TraceStep::NoLiveFlow);
        }

        // Phase 4: every matching rate-limited rule, in file order.
        let mut charged_any = false;
        for rule in &policy.rules {
            let Some(buckets) = self.buckets[rule.id.0 as usize].as_mut() else {
                continue;
            };
            let Some(rate) = rule.rate else { continue };
            if !matching::matches(&rule.matcher, &packet, &policy.tables) {
                continue;
            }
            charged_any = true;
            let key = BucketKey::of(rate.key, &packet);
            match buckets.take(key, now_ns) {
                Take::Taken { tokens_left } => {
                    eval.count_rule(rule.id);
                    eval.trace.push(TraceStep::TokenTaken {
                        rule: rule.id,
                        key,
                        tokens_left,
                    });
                }
                Take::Empty => {
                    eval.trace
                        .push(TraceStep::BucketEmpty { rule: rule.id, key });
                    return (Verdict::Drop, Phase::RateLimit, Some(rule.id));
                }
            }
        }
        if !charged_any {
            eval.trace.push(TraceStep::NoRateLimitMatched);
        }

        // Phase 5.
        if let Some(rule) = self.first_match(Action::Allow, &packet) {
            eval.trace.push(TraceStep::Allowed(rule));
            if options.conntrack {
                let flow = self.conntrack.track(&packet, now_ns);
                eval.trace.push(TraceStep::Tracked(flow));
            }
            return (Verdict::Pass, Phase::Allow, Some(rule));
        }
        eval.trace.push(TraceStep::NoAllowMatched);

        // Phase 6.
        eval.trace.push(TraceStep::Default(options.default));
        default
    }

    /// The first rule with `action` in file order that matches `packet`.
    fn first_match(&self, action: Action, packet: &IpPacket) -> Option<RuleId> {
        self.policy
            .rules
            .iter()
            .find(|r| {
                r.action == action && matching::matches(&r.matcher, packet, &self.policy.tables)
            })
            .map(|r| r.id)
    }

    /// How many flows conntrack holds (expired ones included until found).
    pub fn tracked_flows(&self) -> usize {
        self.conntrack.len()
    }
}

fn pass_if(pass: bool) -> Verdict {
    if pass { Verdict::Pass } else { Verdict::Drop }
}

/// What one evaluation collects on its way.
#[derive(Default)]
struct Evaluation {
    counters: Vec<Counter>,
    trace: Vec<TraceStep>,
}

impl Evaluation {
    /// Counts a rule once per packet.
    fn count_rule(&mut self, rule: RuleId) {
        if !self.counters.contains(&Counter::Rule(rule)) {
            self.counters.push(Counter::Rule(rule));
        }
    }
}
