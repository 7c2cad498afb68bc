//! Several member-chain paths (`$.a.b`, `$.matchedToken.heartRate`) resolved together, reading
//! each object's members once.
//!
//! # Why
//! A template reads several values from the same object: a `CalculatedContent` template's
//! device id, patient id, timestamp and values are usually all `$.matchedToken.<name>`. Each
//! [`JsonPath::select_one`] walks that object's members from the start, and every member read
//! in sonic-rs re-derives the node (tens of instructions), so N expressions cost N walks. A
//! [`MemberBatch`] is a trie of the paths' names: [`MemberBatch::resolve`] walks each object
//! once, picks out every name needed there, and stops as soon as all are found.
//!
//! # What must hold
//! For every path added, `resolve` yields exactly the node `select_one` yields in the same scope
//! (tests compare both on generated documents):
//! * the first member of a name wins, later duplicates are ignored (a member lookup's rule);
//! * member access on anything but an object yields nothing, and so do the names below it;
//! * on the virtual root of a [`Scope::WithMatch`], `matchedToken` is the match, and any other
//!   name is the root's first member of that name (the overlay hides only the root's own
//!   `matchedToken` members).
//!
//! [`MemberBatch::resolve_captured`] gives the same as `resolve` with the match's own members
//! taken from a type-match scan that captured them on its way (the scan reads every member of
//! the match anyway; see `fast_scan.rs`), which saves the batch's one remaining walk.
//!
//! Member-only paths cannot fail and have no side effects, so resolving them all at once, even
//! those a caller then does not read, is unobservable.

use sonic_rs::{JsonContainerTrait, Object, Value};

use super::JsonPath;
use super::ast::Step;
use crate::Scope;
use crate::scope::MATCHED_TOKEN;

/// At most this many paths per batch (further ones are not added).
pub const MAX_BATCH_PATHS: usize = 32;
/// At most this many distinct names per object (bits of a mask).
const MAX_NAMES: usize = 32;
/// At most this many members per path (bounds the recursion of `resolve`).
const MAX_CHAIN: usize = 16;

/// A set of member-chain paths resolved together (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct MemberBatch {
    /// The trie; node 0 is the scope's root.
    nodes: Vec<TrieNode>,
    /// How many paths were added (the slots).
    slots: usize,
    /// The root entry named `matchedToken`, which a `WithMatch` scope answers without a lookup.
    matched_entry: Option<usize>,
}

/// The names read from one object.
#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// Distinct names (at most [`MAX_NAMES`]).
    names: Vec<Box<str>>,
    /// What each name leads to.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The slots of the paths that end with this member.
    ends: Vec<usize>,
    /// The node of the names read below this member, if any.
    below: Option<usize>,
}

impl MemberBatch {
    /// An empty batch.
    pub fn new() -> MemberBatch {
        MemberBatch::default()
    }

    /// How many paths were added; [`MemberBatch::resolve`] fills that many slots.
    pub fn len(&self) -> usize {
        self.slots
    }

    /// Whether no path was added.
    pub fn is_empty(&self) -> bool {
        self.slots == 0
    }

    /// Adds `path` if it is a chain of member names (`$.a.b`, `a['b c']`, at least one name)
    /// and the batch has room; returns its slot.
    pub fn add(&mut self, path: &JsonPath) -> Option<usize> {
        let chain = member_chain(path)?;
        if chain.is_empty() || chain.len() > MAX_CHAIN || self.slots == MAX_BATCH_PATHS {
            return None;
        }
        // Check for room before changing anything.
        let mut node = Some(0);
        for name in &chain {
            let Some(trie) = node.and_then(|n| self.nodes.get(n)) else {
                break;
            };
            match trie.names.iter().position(|k| **k == **name) {
                Some(i) => node = trie.entries[i].below,
                None if trie.names.len() == MAX_NAMES => return None,
                None => node = None,
            }
        }
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let (mut node, last) = (0, chain.len() - 1);
        for (depth, name) in chain.into_iter().enumerate() {
            let index = match self.nodes[node].names.iter().position(|k| **k == *name) {
                Some(i) => i,
                None => {
                    self.nodes[node].names.push(name.into());
                    self.nodes[node].entries.push(Entry {
                        ends: Vec::new(),
                        below: None,
                    });
                    if node == 0 && name == MATCHED_TOKEN {
                        self.matched_entry = Some(self.nodes[0].entries.len() - 1);
                    }
                    self.nodes[node].entries.len() - 1
                }
            };
            if depth == last {
                self.nodes[node].entries[index].ends.push(self.slots);
                break;
            }
            node = match self.nodes[node].entries[index].below {
                Some(below) => below,
                None => {
                    let below = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[node].entries[index].below = Some(below);
                    below
                }
            };
        }
        self.slots += 1;
        Some(self.slots - 1)
    }

    /// Resolves every path in `scope`: `out[slot]` becomes the node the path's
    /// [`JsonPath::select_one`] finds (never the virtual root: every path names a member).
    /// `out` must hold at least [`MemberBatch::len`] slots; later ones are left alone.
    pub fn resolve<'a>(&self, scope: Scope<'a>, out: &mut [Option<&'a Value>]) {
        out[..self.slots].fill(None);
        let Some(root) = self.nodes.first() else {
            return;
        };
        match scope {
            Scope::Token(v) => self.lookup(root, v, out),
            Scope::WithMatch {
                root: event,
                matched,
            } => {
                let mut pending = mask(root.entries.len());
                if let Some(i) = self.matched_entry {
                    self.take(&root.entries[i], matched, out);
                    pending &= !(1 << i);
                }
                // The names left are not `matchedToken`, so the root's own `matchedToken`
                // members (hidden by the overlay) can never be taken for them.
                if pending != 0
                    && let Some(object) = event.as_object()
                {
                    self.find(root, object, pending, out);
                }
            }
        }
    }

    /// The names this batch reads from the match itself (`$.matchedToken.<name>` in a
    /// `WithMatch` scope, `$.<name>` when the scope is the match), for a type-match scan to
    /// capture ([`crate::Expression::select_matches_capturing`]); `None` when there are none.
    pub fn match_names(&self, with_match: bool) -> Option<&[Box<str>]> {
        let node = if with_match {
            self.nodes.first()?.entries[self.matched_entry?].below?
        } else {
            0
        };
        let names = &self.nodes.get(node)?.names;
        (!names.is_empty()).then_some(&names[..])
    }

    /// [`MemberBatch::resolve`] with the match's own members already found: `captured[i]` is
    /// the match's first member named `match_names(…)[i]`, as a type-match scan captured it
    /// (`scope` must be `Token(match)` or `WithMatch { matched: match, … }`, as given to
    /// `match_names`).
    pub fn resolve_captured<'a>(
        &self,
        scope: Scope<'a>,
        captured: &[Option<&'a Value>],
        out: &mut [Option<&'a Value>],
    ) {
        out[..self.slots].fill(None);
        let Some(root) = self.nodes.first() else {
            return;
        };
        let take_captured = |node: &TrieNode, out: &mut [Option<&'a Value>]| {
            for (entry, value) in node.entries.iter().zip(captured) {
                if let Some(value) = *value {
                    self.take(entry, value, out);
                }
            }
        };
        match scope {
            Scope::Token(_) => take_captured(root, out),
            Scope::WithMatch {
                root: event,
                matched,
            } => {
                let mut pending = mask(root.entries.len());
                if let Some(i) = self.matched_entry {
                    let entry = &root.entries[i];
                    for &slot in &entry.ends {
                        out[slot] = Some(matched);
                    }
                    if let Some(below) = entry.below {
                        take_captured(&self.nodes[below], out);
                    }
                    pending &= !(1 << i);
                }
                if pending != 0
                    && let Some(object) = event.as_object()
                {
                    self.find(root, object, pending, out);
                }
            }
        }
    }

    /// Resolves `node`'s names in `value` (nothing when it is not an object).
    fn lookup<'a>(&self, node: &TrieNode, value: &'a Value, out: &mut [Option<&'a Value>]) {
        if let Some(object) = value.as_object() {
            self.find(node, object, mask(node.entries.len()), out);
        }
    }

    /// One pass over `object`'s members: the first member named like each entry in `pending`
    /// is taken. Stops once every pending name is found.
    fn find<'a>(
        &self,
        node: &TrieNode,
        object: &'a Object,
        mut pending: u32,
        out: &mut [Option<&'a Value>],
    ) {
        for (key, value) in object.iter() {
            let mut bits = pending;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // Names are distinct: at most one can match.
                if *node.names[i] == *key {
                    pending &= !(1 << i);
                    self.take(&node.entries[i], value, out);
                    break;
                }
            }
            if pending == 0 {
                return;
            }
        }
    }

    /// `value` is the member `entry` names: hands it to the paths ending there and resolves
    /// the names below it.
    #[inline]
    fn take<'a>(&self, entry: &Entry, value: &'a Value, out: &mut [Option<&'a Value>]) {
        for &slot in &entry.ends {
            out[slot] = Some(value);
        }
        if let Some(below) = entry.below {
            self.lookup(&self.nodes[below], value, out);
        }
    }
}

/// The names of a path made only of member steps.
fn member_chain(path: &JsonPath) -> Option<Vec<&str>> {
    path.steps
        .iter()
        .map(|step| match step {
            Step::Field(name) => Some(&**name),
            _ => None,
        })
        .collect()
}

fn mask(n: usize) -> u32 {
    debug_assert!(n <= MAX_NAMES);
    if n >= 32 { u32::MAX } else { (1u32 << n) - 1 }
}
