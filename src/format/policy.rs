//! Policy documents (`policy/<id>`, envelope type Policy): the retention policy and the
//! recovery objectives every host and admin applies.
//!
//! A document is immutable; `policy set` writes a new one holding the whole policy. The one
//! in effect is the newest by the storage's timestamp (docs/format.md, "Policy documents").
//!
//! Payload layout: version u8 (= 1); seq u64 (one more than the newest document its writer
//! saw); time (i64 Unix ns, the writer's clock, informational); host, user (strings); rules
//! (list). A rule: host (option string), tag (option string), keep (below), minimum retention
//! (option span), RTO and RPO (option u64 seconds each). Keep: six counts u64 (last, hourly,
//! daily, weekly, monthly, yearly; 0 not set, `u64::MAX` unlimited), six spans (within,
//! within-hourly, -daily, -weekly, -monthly, -yearly; all zero not set), keep-tag lists
//! (list of list of string). A span is four i32: years, months, days, hours (restic's
//! duration). No two rules have the same (host, tag).

use super::codec::{Reader, Writer};
use super::FormatError;

pub const VERSION: u8 = 1;

/// Calendar years, months, days, hours.
pub type Span = [i32; 4];

/// forget's `--keep-*` rules, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    pub counts: [u64; 6],
    pub within: [Span; 6],
    pub tags: Vec<Vec<String>>,
}

impl Keep {
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0) && self.within.iter().all(|s| *s == [0; 4]) && self.tags.is_empty()
    }
}

/// The rules for one scope: a host, a tag, both, or neither (the repository default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub host: Option<String>,
    pub tag: Option<String>,
    pub keep: Keep,
    pub min_retention: Option<Span>,
    pub rto_s: Option<u64>,
    pub rpo_s: Option<u64>,
}

/// One policy document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDoc {
    pub seq: u64,
    pub time_ns: i64,
    pub host: String,
    pub user: String,
    pub rules: Vec<Rule>,
}

fn span(w: &mut Writer, s: &Span) {
    s.iter().for_each(|v| w.i32(*v));
}

fn read_span(r: &mut Reader<'_>) -> Result<Span, FormatError> {
    Ok([r.i32()?, r.i32()?, r.i32()?, r.i32()?])
}

impl PolicyDoc {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.u64(self.seq);
        w.i64(self.time_ns);
        w.str(&self.host);
        w.str(&self.user);
        w.len(self.rules.len());
        for r in &self.rules {
            w.opt_str(r.host.as_deref());
            w.opt_str(r.tag.as_deref());
            r.keep.counts.iter().for_each(|c| w.u64(*c));
            r.keep.within.iter().for_each(|s| span(&mut w, s));
            w.len(r.keep.tags.len());
            for list in &r.keep.tags {
                w.len(list.len());
                list.iter().for_each(|t| w.str(t));
            }
            match &r.min_retention {
                None => w.u8(0),
                Some(s) => {
                    w.u8(1);
                    span(&mut w, s);
                }
            }
            w.opt_u64(r.rto_s);
            w.opt_u64(r.rpo_s);
        }
        w.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { what: "policy document", version });
        }
        let (seq, time_ns, host, user) = (r.u64()?, r.i64()?, r.string()?, r.string()?);
        let rules = r.list(2 + 48 + 96 + 4 + 3, read_rule)?;
        for (i, a) in rules.iter().enumerate() {
            if rules[..i].iter().any(|b| b.host == a.host && b.tag == a.tag) {
                return Err(FormatError::Invalid("two policy rules for the same host and tag"));
            }
        }
        r.finish()?;
        Ok(PolicyDoc { seq, time_ns, host, user, rules })
    }
}

fn read_rule(r: &mut Reader<'_>) -> Result<Rule, FormatError> {
    let host = r.opt_string()?;
    let tag = r.opt_string()?;
    let mut counts = [0u64; 6];
    for c in &mut counts {
        *c = r.u64()?;
    }
    let mut within = [[0i32; 4]; 6];
    for s in &mut within {
        *s = read_span(r)?;
    }
    let tags = r.list(4, |r| r.list(4, |r| r.string()))?;
    let min_retention = match r.u8()? {
        0 => None,
        1 => Some(read_span(r)?),
        _ => return Err(FormatError::Invalid("option flag is neither 0 nor 1")),
    };
    let (rto_s, rpo_s) = (r.opt_u64()?, r.opt_u64()?);
    Ok(Rule { host, tag, keep: Keep { counts, within, tags }, min_retention, rto_s, rpo_s })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::strategies::*;
    use proptest::prelude::*;

    fn span_s() -> impl Strategy<Value = Span> {
        proptest::array::uniform4(any::<i32>())
    }

    fn rule() -> impl Strategy<Value = Rule> {
        (
            proptest::option::of(text(8)),
            proptest::option::of(text(8)),
            proptest::array::uniform6(any::<u64>()),
            proptest::array::uniform6(span_s()),
            proptest::collection::vec(proptest::collection::vec(text(6), 0..3), 0..3),
            proptest::option::of(span_s()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(host, tag, counts, within, tags, min_retention, rto_s, rpo_s)| Rule {
                host,
                tag,
                keep: Keep { counts, within, tags },
                min_retention,
                rto_s,
                rpo_s,
            })
    }

    proptest! {
        #[test]
        fn round_trip(seq in any::<u64>(), time_ns in any::<i64>(), host in text(12), user in text(12),
                      rules in proptest::collection::vec(rule(), 0..4)) {
            let mut rules = rules;
            let mut seen = Vec::new();
            rules.retain(|r| { let k = (r.host.clone(), r.tag.clone()); let new = !seen.contains(&k); seen.push(k); new });
            let d = PolicyDoc { seq, time_ns, host, user, rules };
            prop_assert_eq!(PolicyDoc::decode(&d.encode()).unwrap(), d);
        }

        #[test]
        fn decode_never_panics(b in bytes(256)) {
            let _ = PolicyDoc::decode(&b);
        }
    }

    #[test]
    fn duplicate_scopes_are_refused() {
        let d = PolicyDoc { rules: vec![Rule::default(), Rule::default()], ..Default::default() };
        assert!(PolicyDoc::decode(&d.encode()).is_err());
    }
}
