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
//!
//! The scan can also capture, from each match, the first member of some names (what a member
//! lookup on the match finds), so that a template's `$.matchedToken.<name>` expressions need no
//! second pass over the match's members (see `MemberBatch::resolve_captured`).

use sonic_rs::{Array, JsonContainerTrait, JsonType, JsonValueTrait, Object, Value};

use super::ast::{Expr, Operand, Step};

/// Deeper documents go to the generic evaluator, whose stack use is bounded.
const MAX_RECURSION: usize = 256;

/// A compiled `$..[?(@chain && @chain …)]`.
#[derive(Debug, Clone)]
pub(super) struct ExistsScan {
    chains: Box<[Box<[Box<str>]>]>,
    /// The mask with one bit per chain: an object matches when it has all of them.
    all: u64,
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
        let all = if chains.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << chains.len()) - 1
        };
        Some(ExistsScan {
            chains: chains.into_boxed_slice(),
            all,
        })
    }

    /// Appends the matches under `root` to `out`, each as `wrap(match, captured)`; `false` when
    /// the document is too deep for this evaluator (then `out` must be discarded and the
    /// generic one used). `captured[i]` is the match's first member named `capture[i]` (at most
    /// [`MAX_CAPTURE`] names): what a member lookup on the match would find, read during the
    /// scan's own pass over the match's members instead of in another one.
    pub(super) fn run<'a, T>(
        &self,
        root: &'a Value,
        capture: &[Box<str>],
        out: &mut impl MatchSink<T>,
        wrap: &impl Fn(&'a Value, &Captured<'a>) -> T,
    ) -> bool {
        debug_assert!(capture.len() <= MAX_CAPTURE);
        // Only keys of these lengths are compared with the names (a cheap filter: most keys of
        // a message differ in length from every name looked for).
        let lengths = self
            .chains
            .iter()
            .map(|chain| &chain[0])
            .chain(capture)
            .fold(0u64, |mask, name| mask | length_bit(name));
        let scan = Scan {
            plan: self,
            capture,
            lengths,
            wrap,
        };
        scan.child(root, out, 0)
    }
}

/// A bit for names of `name`'s length (lengths from 63 on share one).
#[inline(always)]
fn length_bit(name: &str) -> u64 {
    1 << name.len().min(63)
}

/// Where a scan puts its matches: a `Vec`, or [`Matches`].
pub(super) trait MatchSink<T> {
    fn len(&self) -> usize;
    fn insert(&mut self, at: usize, item: T);
}

impl<T> MatchSink<T> for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn insert(&mut self, at: usize, item: T) {
        Vec::insert(self, at, item);
    }
}

/// Matches in document order, the first one held inline: type matching usually finds one
/// match per message, and this saves allocating for it.
#[derive(Debug, Clone)]
pub struct Matches<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Matches<T> {
    pub(super) fn new() -> Matches<T> {
        Matches {
            first: None,
            rest: Vec::new(),
        }
    }

    /// How many matches.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The matches, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(&self.rest)
    }
}

impl<T> MatchSink<T> for Matches<T> {
    fn len(&self) -> usize {
        Matches::len(self)
    }

    fn insert(&mut self, at: usize, item: T) {
        match self.first.take() {
            None => self.first = Some(item),
            Some(first) if at == 0 => {
                self.first = Some(item);
                self.rest.insert(0, first);
            }
            Some(first) => {
                self.first = Some(first);
                self.rest.insert(at - 1, item);
            }
        }
    }
}

/// The most member names a type-match scan captures from each match.
pub const MAX_CAPTURE: usize = 8;

/// The members a type-match scan captured from a match: entry `i` is the match's first member
/// named like the `i`th name asked for.
pub type Captured<'a> = [Option<&'a Value>; MAX_CAPTURE];

/// One run of a scan.
struct Scan<'p, W> {
    plan: &'p ExistsScan,
    capture: &'p [Box<str>],
    /// [`length_bit`] of every chain's first name and every capture name.
    lengths: u64,
    wrap: &'p W,
}

impl<W> Scan<'_, W> {
    /// Visits a node: one type dispatch for scalars (most of a message, which cannot match and
    /// have nothing below them), a call only for containers.
    #[inline(always)]
    fn child<'a, T>(&self, v: &'a Value, out: &mut impl MatchSink<T>, depth: usize) -> bool
    where
        W: Fn(&'a Value, &Captured<'a>) -> T,
    {
        // `get_type` hands back a one-byte kind; `as_ref` would build a `ValueRef` (a number
        // or string copied out) for every scalar.
        match v.get_type() {
            JsonType::Object => match v.as_object() {
                Some(obj) => self.object(v, obj, out, depth),
                None => true,
            },
            JsonType::Array => match v.as_array() {
                Some(items) => self.array(items, out, depth),
                None => true,
            },
            _ => true,
        }
    }

    fn array<'a, T>(&self, items: &'a Array, out: &mut impl MatchSink<T>, depth: usize) -> bool
    where
        W: Fn(&'a Value, &Captured<'a>) -> T,
    {
        if depth > MAX_RECURSION {
            return false;
        }
        items.iter().all(|item| self.child(item, out, depth + 1))
    }

    fn object<'a, T>(
        &self,
        v: &'a Value,
        obj: &'a Object,
        out: &mut impl MatchSink<T>,
        depth: usize,
    ) -> bool
    where
        W: Fn(&'a Value, &Captured<'a>) -> T,
    {
        if depth > MAX_RECURSION {
            return false;
        }
        // One pass over the members: note which chains' first names are present (and capture
        // the members asked for) while visiting the children, then put this object before its
        // descendants' matches.
        let at = out.len();
        let chains = &self.plan.chains;
        // Like a member lookup, only the first member of a name counts: `unseen` chains and
        // `uncaptured` names are still looked for.
        let (mut unseen, mut found): (u64, u64) = (self.plan.all, 0);
        let mut captured: Captured<'a> = [None; MAX_CAPTURE];
        let mut uncaptured = (1u32 << self.capture.len()) - 1;
        for (key, child) in obj.iter() {
            if (unseen != 0 || uncaptured != 0) && self.lengths & length_bit(key) != 0 {
                let mut bits = unseen;
                while bits != 0 {
                    let i = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let chain = &chains[i];
                    if *chain[0] == *key {
                        unseen &= !(1 << i);
                        if exists(child, &chain[1..]) {
                            found |= 1 << i;
                        }
                    }
                }
                let mut bits = uncaptured;
                while bits != 0 {
                    let i = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    // Capture names are distinct: at most one can match.
                    if *self.capture[i] == *key {
                        captured[i] = Some(child);
                        uncaptured &= !(1 << i);
                        break;
                    }
                }
            }
            if !self.child(child, out, depth + 1) {
                return false;
            }
        }
        if found == self.plan.all {
            out.insert(at, (self.wrap)(v, &captured));
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
