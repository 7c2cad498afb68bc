//! A direct evaluator for the type-match shape nearly every mapping uses:
//! `$..[?(@a)]`, `$..[?(@a.b && @c)]` — a scan of the whole message for objects that have
//! every one of some member chains.
//!
//! Type matching runs on every message, and the generic pipeline (a token enum, a callback per
//! node, filters interpreted per node) costs several times the parse of the message. This plan
//! visits each node once, dispatches on its type once, and tests only objects.
//!
//! # What must hold
//! The results are exactly those of the generic evaluator, in the same order: `..[?()]`
//! (Newtonsoft's `QueryScanFilter`) tests the start node and every descendant in document
//! pre-order; an existence test `@a.b` holds when the member chain yields a token (any value,
//! `null` included); member access on anything but an object yields nothing, so only objects
//! can match. Tests compare both evaluators on the same inputs.

use sonic_rs::{JsonValueTrait, Value, ValueRef};

use super::ast::{Expr, Operand, Step};

/// Deeper documents go to the generic evaluator, whose stack use is bounded.
const MAX_RECURSION: usize = 256;

/// A compiled `$..[?(@chain && @chain …)]`.
#[derive(Debug, Clone)]
pub(super) struct ExistsScan {
    chains: Box<[Box<[Box<str>]>]>,
}

impl ExistsScan {
    /// Recognises the shape in a compiled step list.
    pub(super) fn plan(steps: &[Step]) -> Option<ExistsScan> {
        let [Step::ScanFilter(filter)] = steps else {
            return None;
        };
        let mut chains = Vec::new();
        // More chains than bits in the match mask: leave it to the generic evaluator.
        let mut add = |e: &Expr| -> Option<()> {
            let Expr::Exists(Operand::Path(path)) = e else {
                return None;
            };
            let chain = path
                .steps
                .iter()
                .map(|s| match s {
                    Step::Field(name) => Some(name.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            if chain.is_empty() {
                return None;
            }
            chains.push(chain.into_boxed_slice());
            Some(())
        };
        match &filter.expr {
            Expr::And(items) => {
                for item in items.iter() {
                    add(item)?;
                }
            }
            single => add(single)?,
        }
        if chains.len() > 64 {
            return None;
        }
        Some(ExistsScan {
            chains: chains.into_boxed_slice(),
        })
    }

    /// Appends the matches under `root` to `out`; `false` when the document is too deep for
    /// this evaluator (then `out` must be discarded and the generic one used).
    pub(super) fn run<'a>(&self, root: &'a Value, out: &mut Vec<&'a Value>) -> bool {
        self.visit(root, out, 0)
    }

    fn visit<'a>(&self, v: &'a Value, out: &mut Vec<&'a Value>, depth: usize) -> bool {
        if depth > MAX_RECURSION {
            return false;
        }
        match v.as_ref() {
            ValueRef::Object(obj) => {
                // One pass over the members: note which chains' first names are present while
                // visiting the children, then put this object before its descendants' matches.
                let at = out.len();
                // Like a member lookup, only the first member of a name counts.
                let (mut seen, mut found): (u64, u64) = (0, 0);
                for (key, child) in obj.iter() {
                    for (i, chain) in self.chains.iter().enumerate() {
                        let bit = 1u64 << i;
                        if seen & bit == 0 && *chain[0] == *key {
                            seen |= bit;
                            if exists(child, &chain[1..]) {
                                found |= bit;
                            }
                        }
                    }
                    if !self.visit(child, out, depth + 1) {
                        return false;
                    }
                }
                let all = if self.chains.len() >= 64 {
                    u64::MAX
                } else {
                    (1u64 << self.chains.len()) - 1
                };
                if found == all {
                    out.insert(at, v);
                }
            }
            ValueRef::Array(items) => {
                for child in items.iter() {
                    if !self.visit(child, out, depth + 1) {
                        return false;
                    }
                }
            }
            _ => {}
        }
        true
    }
}

/// Whether following `chain` member by member from `v` reaches a token (an empty chain always
/// does).
fn exists(v: &Value, chain: &[Box<str>]) -> bool {
    let mut current = v;
    for name in chain {
        match current.get(&**name) {
            Some(next) => current = next,
            None => return false,
        }
    }
    true
}
