//! Read-only longest-prefix-match table: one Poptrie (Asai & Ohara, SIGCOMM 2015) per address family.
//! A direct-pointing top level (up to 18 bits for IPv4, 16 for IPv6) leads to 64-ary nodes whose `vector`
//! bitmap locates children and whose `leafvec` bitmap, with popcount, compresses runs of equal leaves.
//! Chosen over DXR (not built here) for one dependent load per 6 bits instead of a binary search.
//! Nodes and leaves share one array, with the leaves of each top-level node right after it.
//! Arrays of 4 MiB or more get `MADV_HUGEPAGE`, so random lookups miss the TLB less.
//! IPv6 tries compress paths: a skip node passes over up to 120 bits that every prefix below
//! it shares, so a lone /128 takes one skip node and one node instead of twenty nodes.

/// Tag bit of a reference meaning "word offset of a leaf" rather than "word offset of a node".
const LEAF: u32 = 1 << 31;
/// Tag bit in the last word of a node that makes it a skip node. A regular node keeps its
/// first child's word offset there, which is always below 2^31.
const SKIP: u32 = 1 << 31;
/// Maximum number of strides that one skip node passes over. The 120 bits leave the low 8
/// bits of its 128-bit pattern free for the stride count.
const MAX_SKIP_STRIDES: u32 = 20;
/// Leaf value for addresses that no prefix covers.
const NO_MATCH: u32 = u32::MAX;
/// Bits consumed per trie node: 64 children fit a `u64` bitmap.
const STRIDE: u32 = 6;
/// Words of a node: the two bitmaps and the two offsets.
const NODE_WORDS: usize = 6;
/// Lookups that the batch forms keep in flight, so their cache misses overlap. On the 1M-prefix
/// synthetic table, 16 lanes took 12.4 ns per IPv4 address and 8 lanes 12.9 ns, and groups of
/// 32 took as long as groups of 16.
const LANES: usize = 16;
/// Size below which a trie stays in L2, so the batch forms loop over single lookups. On the
/// homelab table with a 256 KiB direct array the plain loop took 6.4 ns per address and 16
/// lanes in flight 10.9 ns (AMD EPYC, 512 KiB L2 per core).
const CACHE_RESIDENT_BYTES: usize = 512 * 1024;

/// A 64-ary Poptrie node, as decoded from `NODE_WORDS` words of the trie.
/// IPv4 tries have no path compression. They are at most three levels below the direct array,
/// so a lone /32 costs at most three nodes.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// Bit `s` is set when slot `s` leads to a child node.
    vector: u64,
    /// Bit `s` is set when slot `s` is a leaf that starts a run of equal leaves.
    leafvec: u64,
    /// Word offset of this node's first leaf.
    base0: u32,
    /// Word offset of this node's first child.
    base1: u32,
}

/// A skip node, as read from the `NODE_WORDS` words of the trie where a regular node would be.
#[derive(Clone, Copy, Debug)]
struct SkipNode {
    /// The bits that every key below the node has after the node's offset, left-aligned, with
    /// the number of strides they span in the low 8 bits.
    pattern: u128,
    /// Leaf reference for a key whose bits differ: the longest prefix covering the node.
    fallback: u32,
    /// `SKIP` and the word offset of the node after the skipped bits.
    child: u32,
}

/// An address left-aligned in an unsigned integer, so both families share one trie layout.
trait Key: Copy + Ord {
    /// Whether the trie compresses paths with skip nodes. Only deep tries gain from it, and
    /// each step of a lookup then checks the node's tag.
    const COMPRESSED: bool;

    /// Returns the `width` bits that start `offset` bits from the top (zeros past the end).
    fn slot(self, offset: u32, width: u32) -> usize;

    /// Returns the `width` bits (1 to 127) that start `offset` bits from the top, left-aligned
    /// in a `u128`.
    fn span(self, offset: u32, width: u32) -> u128;

    /// Returns the number of leading bits that `self` and `other` share.
    fn common_bits(self, other: Self) -> u32;

    /// Sorts by (address, length), so a prefix follows every prefix that contains it.
    fn sort(prefixes: &mut Vec<Prefix<Self>>) {
        prefixes.sort_unstable_by_key(|p| (p.key, p.len));
    }
}

impl Key for u64 {
    const COMPRESSED: bool = false;

    #[inline(always)]
    fn slot(self, offset: u32, width: u32) -> usize {
        ((self << offset) >> (u64::BITS - width)) as usize
    }

    #[inline(always)]
    fn span(self, offset: u32, width: u32) -> u128 {
        (u128::from(self) << 64).span(offset, width)
    }

    fn common_bits(self, other: Self) -> u32 {
        (self ^ other).leading_zeros()
    }

    /// IPv4 address and length fit 38 bits, so a radix sort beats comparisons on large tables.
    fn sort(prefixes: &mut Vec<Prefix<Self>>) {
        radix_sort(prefixes, |p| (p.key >> 26) | u64::from(p.len), 38);
    }
}

impl Key for u128 {
    const COMPRESSED: bool = true;

    #[inline(always)]
    fn slot(self, offset: u32, width: u32) -> usize {
        ((self << offset) >> (u128::BITS - width)) as usize
    }

    #[inline(always)]
    fn span(self, offset: u32, width: u32) -> u128 {
        (self << offset) & !(u128::MAX >> width)
    }

    fn common_bits(self, other: Self) -> u32 {
        (self ^ other).leading_zeros()
    }
}

/// Stable LSD radix sort on the low `bits` bits of `rank`, 10 bits per pass.
pub(super) fn radix_sort<T: Copy>(items: &mut Vec<T>, rank: impl Fn(&T) -> u64, bits: u32) {
    const DIGIT: u32 = 10;
    let mut scratch = items.clone();
    for shift in (0..bits).step_by(DIGIT as usize) {
        let digit = |t: &T| ((rank(t) >> shift) & ((1 << DIGIT) - 1)) as usize;
        let mut starts = vec![0usize; (1 << DIGIT) + 1];
        for t in items.iter() {
            starts[digit(t) + 1] += 1;
        }
        for d in 1..starts.len() {
            starts[d] += starts[d - 1];
        }
        for t in items.iter() {
            let d = digit(t);
            scratch[starts[d]] = *t;
            starts[d] += 1;
        }
        std::mem::swap(items, &mut scratch);
    }
}

/// One input prefix, with the address left-aligned.
#[derive(Clone, Copy)]
struct Prefix<K> {
    key: K,
    len: u32,
    value: u32,
}

/// Longest-prefix-match table for both address families, compiled once and then read-only.
#[derive(Clone, Debug)]
pub struct CompiledTable {
    v4: Poptrie,
    v6: Poptrie,
}

impl CompiledTable {
    /// `v4`: (network address as u32 host-order integer, prefix length 0..=32, value)
    /// `v6`: (network address as u128, prefix length 0..=128, value)
    /// Inputs have host bits already cleared and no duplicate (address, len) pairs; order is arbitrary.
    /// Values are below `u32::MAX`, which the batch lookups use for "no match".
    pub fn build(v4: &[(u32, u8, u32)], v6: &[(u128, u8, u32)]) -> CompiledTable {
        Self::build_with(v4, v6, v4_direct_bits(v4.len()), v6_direct_bits(v6.len()))
    }

    /// Builds from prefixes as (network address, length, value), each family
    /// sorted by address and then length. Values are below `u32::MAX`, and
    /// prefixes may share one.
    pub fn build_sorted(
        v4: impl ExactSizeIterator<Item = (u32, u8, u32)>,
        v6: impl ExactSizeIterator<Item = (u128, u8, u32)>,
    ) -> CompiledTable {
        let v4_bits = v4_direct_bits(v4.len());
        let v6_bits = v6_direct_bits(v6.len());
        let v4: Vec<Prefix<u64>> = v4
            .map(|(addr, len, value)| Prefix {
                key: u64::from(addr) << 32,
                len: u32::from(len),
                value,
            })
            .collect();
        let v6: Vec<Prefix<u128>> = v6
            .map(|(key, len, value)| Prefix {
                key,
                len: u32::from(len),
                value,
            })
            .collect();
        // The two tries share nothing, so a second thread builds the IPv6
        // one while this one builds the IPv4 one.
        std::thread::scope(|scope| {
            let v6 = scope.spawn(move || Poptrie::build(v6, v6_bits));
            let v4 = Poptrie::build(v4, v4_bits);
            let v6 = v6
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            CompiledTable { v4, v6 }
        })
    }

    /// `build` with explicit direct-pointing widths (1..=32 bits), so tests can cover every level layout.
    fn build_with(
        v4: &[(u32, u8, u32)],
        v6: &[(u128, u8, u32)],
        v4_bits: u32,
        v6_bits: u32,
    ) -> CompiledTable {
        let v4: Vec<Prefix<u64>> = v4
            .iter()
            .map(|&(addr, len, value)| Prefix {
                key: u64::from(addr) << 32,
                len: u32::from(len),
                value,
            })
            .collect();
        let v6: Vec<Prefix<u128>> = v6
            .iter()
            .map(|&(key, len, value)| Prefix {
                key,
                len: u32::from(len),
                value,
            })
            .collect();
        CompiledTable {
            v4: Poptrie::build(v4, v4_bits),
            v6: Poptrie::build(v6, v6_bits),
        }
    }

    /// Value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup_v4(&self, addr: u32) -> Option<u32> {
        found(self.v4.lookup(u64::from(addr) << 32))
    }

    /// Value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup_v6(&self, addr: u128) -> Option<u32> {
        found(self.v6.lookup(addr))
    }

    /// `out[i]` = value of the longest prefix containing `addrs[i]`, or `u32::MAX` when none does.
    /// Handles the first `min(addrs.len(), out.len())` addresses.
    pub fn lookup_v4_batch(&self, addrs: &[u32], out: &mut [u32]) {
        let mut keys = [0u64; 256];
        for (chunk, dst) in addrs.chunks(keys.len()).zip(out.chunks_mut(keys.len())) {
            for (k, &a) in keys.iter_mut().zip(chunk) {
                *k = u64::from(a) << 32;
            }
            self.v4.lookup_many(&keys[..chunk.len()], dst);
        }
    }

    /// `out[i]` = value of the longest prefix containing `addrs[i]`, or `u32::MAX` when none does.
    /// Handles the first `min(addrs.len(), out.len())` addresses.
    pub fn lookup_v6_batch(&self, addrs: &[u128], out: &mut [u32]) {
        self.v6.lookup_many(addrs, out);
    }

    /// Heap bytes used by the structure.
    pub fn memory_bytes(&self) -> usize {
        self.v4.memory_bytes() + self.v6.memory_bytes()
    }
}

fn found(value: u32) -> Option<u32> {
    (value != NO_MATCH).then_some(value)
}

/// IPv4 direct-pointing width: at least 16 bits, so the /8 to /16 prefixes of small tables
/// resolve in the direct array (256 KiB, which stays in L2). On the homelab table 16 bits took
/// 6.4 ns per batched address, 12 bits 6.7 ns, 8 bits 9.2 ns and 18 bits 8.2 ns.
fn v4_direct_bits(prefixes: usize) -> u32 {
    direct_bits(prefixes).clamp(16, 18)
}

/// IPv6 direct-pointing width: small tables keep the whole direct array in L1. Large ones get
/// up to 20 bits (4 MiB): on the 134,828 real IPv6 prefixes, batch lookups took 0.84x the time
/// they took with 16 bits, and on 100,000 synthetic ones 0.92x.
fn v6_direct_bits(prefixes: usize) -> u32 {
    direct_bits(prefixes).clamp(8, 20)
}

/// Width that lets big tables skip the sparse top levels.
fn direct_bits(prefixes: usize) -> u32 {
    let log2 = usize::BITS - prefixes.leading_zeros();
    log2 + 2
}

/// One address family's trie.
///
/// Nodes and leaves share one array of 32-bit words, and a node takes
/// `NODE_WORDS` words. The leaves of a root below a direct-pointing slot,
/// the node that most lookups end in, follow it directly. So the node and
/// the leaf it selects are usually in the same or the next cache line.
#[derive(Clone, Debug)]
struct Poptrie {
    /// Width of the direct-pointing top level in bits.
    direct_bits: u32,
    /// Reference per top-level slot: a node's word offset, or `LEAF` and a
    /// leaf's word offset.
    direct: Vec<u32>,
    /// Nodes and leaves. The first node, at offset 0, is reserved so that
    /// no leaf reference is `LEAF | 0`, the mark of a slot without a leaf
    /// while the direct level is built. Its words stay zero, so
    /// `lookup_rounds` can step finished lanes through it.
    words: Vec<u32>,
    /// Whether nodes may be skip nodes, as they are in IPv6 tries.
    skips: bool,
}

impl Poptrie {
    fn build<K: Key>(mut prefixes: Vec<Prefix<K>>, direct_bits: u32) -> Poptrie {
        // In (address, length) order a prefix follows every prefix that contains it, so painting
        // slots in this order lets the more specific prefix win, and each child's range is contiguous.
        if !prefixes.is_sorted_by_key(|p| (p.key, p.len)) {
            K::sort(&mut prefixes);
        }
        let mut builder = Builder {
            prefixes: &prefixes,
            words: vec![0; NODE_WORDS],
        };
        let direct = builder.build_direct(direct_bits);
        let words = on_huge_pages(builder.words);
        let trie = Poptrie {
            direct_bits,
            direct,
            words,
            skips: K::COMPRESSED,
        };
        trie.check_bounds();
        trie
    }

    /// Panics unless every reference that a lookup can follow stays inside `words`, which the
    /// unchecked reads of `root`, `node` and `leaf` rely on. It visits each node once.
    fn check_bounds(&self) {
        let len = self.words.len();
        // `root` shifts a key right by its size minus the width. With a width of 0 that shift
        // overflows, and without overflow checks it leaves the whole key as the slot.
        let width = self.direct_bits;
        assert!((1..=32).contains(&width), "direct width outside 1..=32");
        assert_eq!(self.direct.len(), 1 << width);
        // The reserved node that finished lanes step through.
        assert!(len >= NODE_WORDS);

        // Blocks of nodes still to check, as (word offset, node count).
        let mut pending = Vec::new();
        for &reference in &self.direct {
            if reference & LEAF == 0 {
                let inside = reference as usize + NODE_WORDS <= len;
                assert!(inside, "node outside the trie");
                pending.push((reference, 1));
            } else {
                assert!(
                    ((reference & !LEAF) as usize) < len,
                    "leaf outside the trie"
                );
            }
        }

        while let Some((first, count)) = pending.pop() {
            let inside = first as usize + count * NODE_WORDS <= len;
            assert!(inside, "children outside the trie");
            for at in (0..count).map(|n| first + (n * NODE_WORDS) as u32) {
                let last = self.words[at as usize + NODE_WORDS - 1];
                if last & SKIP != 0 {
                    assert!(self.skips, "skip node in a trie without them");
                    let skip = self.skip_node(at);
                    let strides = (skip.pattern & 0xff) as u32;
                    assert!(
                        (1..=MAX_SKIP_STRIDES).contains(&strides),
                        "skip of {strides} strides"
                    );
                    assert_ne!(skip.fallback & LEAF, 0, "skip fallback is no leaf");
                    let inside = ((skip.fallback & !LEAF) as usize) < len;
                    assert!(inside, "leaf outside the trie");
                    pending.push((skip.child & !SKIP, 1));
                    continue;
                }
                let node = self.node(at);
                assert_eq!(node.vector & node.leafvec, 0, "slot is both child and leaf");
                let leaves = !node.vector;
                if leaves != 0 {
                    // A leaf slot counts the runs up to it, and the first run starts at the
                    // lowest leaf slot, so every leaf reference lands in `base0..base0 + runs`.
                    let first_run = node.leafvec & leaves & leaves.wrapping_neg();
                    assert_ne!(first_run, 0, "lowest leaf slot starts no run");
                    let inside = node.base0 as usize + node.leafvec.count_ones() as usize <= len;
                    assert!(inside, "leaves outside the trie");
                }
                // A child slot counts the children up to and including it, so every child
                // reference lands on one of the `vector.count_ones()` nodes of the block.
                if node.vector != 0 {
                    pending.push((node.base1, node.vector.count_ones() as usize));
                }
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        (self.direct.capacity() + self.words.capacity()) * size_of::<u32>()
    }

    #[inline]
    fn lookup<K: Key>(&self, key: K) -> u32 {
        let mut cur = self.root(key);
        let mut offset = self.direct_bits;
        while cur & LEAF == 0 {
            cur = self.advance(cur, key, &mut offset);
        }
        self.leaf(cur)
    }

    /// Follows the node at `at` for `key`, whose bits before `offset` led there, and moves
    /// `offset` past the bits the node consumed.
    #[inline(always)]
    fn advance<K: Key>(&self, at: u32, key: K, offset: &mut u32) -> u32 {
        if K::COMPRESSED {
            let skip = self.skip_node(at);
            // A skip node keeps its tag in the word where a regular node keeps `base1`.
            if skip.child & SKIP != 0 {
                let bits = (skip.pattern & 0xff) as u32 * STRIDE;
                if key.span(*offset, bits) != skip.pattern & !0xff {
                    return skip.fallback;
                }
                *offset += bits;
                return skip.child & !SKIP;
            }
        }
        let next = self.step(at, key.slot(*offset, STRIDE));
        *offset += STRIDE;
        next
    }

    /// Reads the node at word offset `at` as a skip node. Its `child` keeps the `SKIP` tag, so
    /// reading a regular node shows a `child` without it.
    #[inline(always)]
    fn skip_node(&self, at: u32) -> SkipNode {
        let at = at as usize;
        debug_assert!(at + NODE_WORDS <= self.words.len());
        // SAFETY: as for `node`, which reads the same words.
        let words = unsafe { self.words.get_unchecked(at..at + NODE_WORDS) };
        SkipNode {
            pattern: u128::from(words[0])
                | u128::from(words[1]) << 32
                | u128::from(words[2]) << 64
                | u128::from(words[3]) << 96,
            fallback: words[4],
            child: words[5],
        }
    }

    /// Reads the direct-pointing slot of `key`.
    #[inline(always)]
    fn root<K: Key>(&self, key: K) -> u32 {
        let slot = key.slot(0, self.direct_bits);
        // SAFETY: `check_bounds` confirmed that `direct_bits` is in 1..=32, so `slot` has
        // `direct_bits` bits, and that `direct` has `1 << direct_bits` entries.
        unsafe { *self.direct.get_unchecked(slot) }
    }

    /// Reads the value of the leaf that `reference` (tagged with `LEAF`) refers to.
    #[inline(always)]
    fn leaf(&self, reference: u32) -> u32 {
        let at = (reference & !LEAF) as usize;
        debug_assert!(at < self.words.len());
        // SAFETY: leaf references come from the direct array or from `step` on a node that
        // `check_bounds` visited, and it confirmed that both kinds point inside `words`. The
        // words of node 0 are unchecked, so `lookup_rounds` discards what `step` returns for it.
        unsafe { *self.words.get_unchecked(at) }
    }

    /// Reads the node at word offset `at`.
    #[inline(always)]
    fn node(&self, at: u32) -> Node {
        let at = at as usize;
        debug_assert!(at + NODE_WORDS <= self.words.len());
        // SAFETY: node references come from the direct array or from `step` on a node that
        // `check_bounds` visited, and it confirmed that each such node lies inside `words`.
        // The reserved node 0 does too, because `check_bounds` confirmed that `words` has at
        // least `NODE_WORDS` words.
        let words = unsafe { self.words.get_unchecked(at..at + NODE_WORDS) };
        Node {
            vector: u64::from(words[0]) | u64::from(words[1]) << 32,
            leafvec: u64::from(words[2]) | u64::from(words[3]) << 32,
            base0: words[4],
            base1: words[5],
        }
    }

    /// Follows slot `s` of the node at `at`: to a child node, or to a leaf tagged with `LEAF`.
    #[inline(always)]
    fn step(&self, at: u32, s: usize) -> u32 {
        let node = self.node(at);
        // `2 << 63` wraps to 0, so slot 63 gets the all-ones mask it needs.
        let upto = (2u64 << s).wrapping_sub(1);
        // Popcounts include slot `s` itself, hence the `- 1`.
        let children = (node.vector & upto).count_ones().wrapping_sub(1);
        let leaves = (node.leafvec & upto).count_ones().wrapping_sub(1);
        if node.vector >> s & 1 != 0 {
            node.base1
                .wrapping_add(children.wrapping_mul(NODE_WORDS as u32))
        } else {
            LEAF | node.base0.wrapping_add(leaves)
        }
    }

    /// Resolves `keys` with `LANES` lookups in flight, each lane prefetching what it reads next.
    fn lookup_many<K: Key>(&self, keys: &[K], out: &mut [u32]) {
        if self.memory_bytes() <= CACHE_RESIDENT_BYTES {
            // The plain loop has less bookkeeping, and cached loads leave no misses to overlap.
            for (o, &k) in out.iter_mut().zip(keys) {
                *o = self.lookup(k);
            }
        } else if K::COMPRESSED {
            self.lookup_rounds_skipping(keys, out);
        } else {
            self.lookup_rounds(keys, out);
        }
    }

    /// `lookup_many` for tables that miss the cache, in groups of `LANES` keys that descend one
    /// level per round. A lane that reached its leaf steps through the reserved node 0 and
    /// keeps its leaf by a select, so the only branch per round is the end of the group.
    /// On the 1M-prefix synthetic table it took a median 0.82x the time of a form whose lanes
    /// each took the next key as soon as they finished, over seven interleaved pairs of runs.
    /// Fewer mispredicted branches are the likely cause, by an estimate that no profile checked.
    fn lookup_rounds<K: Key>(&self, keys: &[K], out: &mut [u32]) {
        debug_assert!(!K::COMPRESSED, "these rounds step only regular nodes");
        self.in_groups(keys, out, |group, refs| {
            let mut offset = self.direct_bits;
            while refs.iter().any(|&reference| reference & LEAF == 0) {
                for (reference, key) in refs.iter_mut().zip(group) {
                    let leaf = *reference & LEAF != 0;
                    // The words of node 0 are unchecked, so the select below must drop the
                    // reference that `step` returns for it.
                    let node = if leaf { 0 } else { *reference };
                    let next = self.step(node, key.slot(offset, STRIDE));
                    *reference = if leaf { *reference } else { next };
                    self.prefetch(*reference);
                }
                offset += STRIDE;
            }
        });
    }

    /// `lookup_rounds` for tries with skip nodes, where each lane keeps its own offset and a
    /// finished lane is passed over. On the 1M-prefix synthetic table IPv6 batches took 0.45x
    /// the time of lanes that each took the next key as soon as they finished, and 0.59x on
    /// 100,000 synthetic prefixes. With skip nodes the depths vary less, so a group waits
    /// little for its deepest member.
    fn lookup_rounds_skipping<K: Key>(&self, keys: &[K], out: &mut [u32]) {
        self.in_groups(keys, out, |group, refs| {
            let mut offsets = [self.direct_bits; LANES];
            let mut busy = true;
            while busy {
                busy = false;
                for ((reference, offset), key) in refs.iter_mut().zip(offsets.iter_mut()).zip(group)
                {
                    if *reference & LEAF != 0 {
                        continue;
                    }
                    *reference = self.advance(*reference, *key, offset);
                    self.prefetch(*reference);
                    busy |= *reference & LEAF == 0;
                }
            }
        });
    }

    /// Splits `keys` into groups of `LANES`, loads each group's direct slots (and starts loading
    /// the next group's), lets `descend` take the group's references down to their leaves, and
    /// writes the leaves' values to `out`. Handles the first `min(keys.len(), out.len())` keys.
    #[inline(always)]
    fn in_groups<K: Key>(&self, keys: &[K], out: &mut [u32], descend: impl Fn(&[K], &mut [u32])) {
        let n = keys.len().min(out.len());
        let (keys, out) = (&keys[..n], &mut out[..n]);
        for key in keys.iter().take(LANES) {
            prefetch_at(self.direct.as_ptr(), key.slot(0, self.direct_bits));
        }
        for (number, (group, found)) in keys.chunks(LANES).zip(out.chunks_mut(LANES)).enumerate() {
            for key in keys.iter().skip((number + 1) * LANES).take(LANES) {
                prefetch_at(self.direct.as_ptr(), key.slot(0, self.direct_bits));
            }
            let mut refs = [LEAF; LANES];
            for (reference, key) in refs.iter_mut().zip(group) {
                *reference = self.root(*key);
                self.prefetch(*reference);
            }
            let refs = &mut refs[..group.len()];
            descend(group, refs);
            for (value, &reference) in found.iter_mut().zip(refs.iter()) {
                *value = self.leaf(reference);
            }
        }
    }

    /// Starts loading the node or leaf that `cur` refers to.
    #[inline(always)]
    fn prefetch(&self, cur: u32) {
        prefetch_at(self.words.as_ptr(), (cur & !LEAF) as usize);
    }
}

/// Starts loading `base[index]` into the cache.
#[inline(always)]
fn prefetch_at(base: *const u32, index: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = base.wrapping_add(index).cast::<i8>();
        // SAFETY: a prefetch is only a hint: it never faults and has no visible effect, even
        // for an address outside any allocation. `wrapping_add` keeps the pointer arithmetic
        // itself free of undefined behaviour.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (base, index);
}

/// Size of a transparent huge page on x86-64 and of the common arm64 configuration.
const HUGE_PAGE: usize = 2 << 20;

/// Moves `words` into a fresh allocation whose whole 2 MiB pages the kernel is asked to back
/// with huge pages before they are first written. A lookup on a large table reads a few
/// random words out of tens of MiB, and with 4 KiB pages most of those reads likely also miss
/// the TLB (an estimate from the speed-up, not a count of misses). On the 1M-prefix synthetic
/// table, batch lookups took 0.75-0.81x the time in three interleaved pairs of runs, and the
/// move added about 4 ms per family to the build. The request is only advice: without
/// transparent huge pages it changes nothing.
fn on_huge_pages(words: Vec<u32>) -> Vec<u32> {
    let bytes = words.len() * size_of::<u32>();
    if bytes < 2 * HUGE_PAGE {
        let mut words = words;
        words.shrink_to_fit();
        return words;
    }
    let mut moved = Vec::with_capacity(words.len());
    #[cfg(target_os = "linux")]
    {
        let start = moved.as_ptr() as usize;
        let first = start.next_multiple_of(HUGE_PAGE);
        let last = (start + bytes) / HUGE_PAGE * HUGE_PAGE;
        if first < last {
            // SAFETY: the range lies inside the allocation of `moved`, which nothing reads
            // yet, and this advice changes how its pages are backed, never their contents.
            // A kernel that rejects it leaves the pages as they were.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    moved.extend_from_slice(&words);
    moved
}

/// Builds nodes and leaves depth-first. A node's leaves come right before its block of
/// children, so a root's leaves also follow the root itself.
struct Builder<'a, K> {
    prefixes: &'a [Prefix<K>],
    words: Vec<u32>,
}

impl<K: Key> Builder<'_, K> {
    /// Fills the direct-pointing level, building a subtrie for each slot that longer prefixes split.
    fn build_direct(&mut self, bits: u32) -> Vec<u32> {
        let mut values = vec![NO_MATCH; 1 << bits];
        let mut direct = vec![LEAF; 1 << bits];
        let mut i = 0;
        while i < self.prefixes.len() {
            let p = self.prefixes[i];
            let slot = p.key.slot(0, bits);
            if p.len <= bits {
                values[slot..slot + (1 << (bits - p.len))].fill(p.value);
                i += 1;
                continue;
            }
            // Every prefix covering this slot sorts earlier, so `values[slot]` is already final.
            let end = self.group_end(i, self.prefixes.len(), 0, bits);
            let root = self.reserve_nodes(1);
            self.build_node(root, bits, i, end, values[slot]);
            direct[slot] = index(root);
            i = end;
        }
        self.attach_direct_leaves(&mut direct, &values);
        direct
    }

    /// Points every slot without a node at a leaf, sharing one leaf per run of equal values.
    fn attach_direct_leaves(&mut self, direct: &mut [u32], values: &[u32]) {
        let mut last = None;
        for (d, &v) in direct.iter_mut().zip(values) {
            if *d != LEAF {
                continue;
            }
            if last != Some(v) {
                self.words.push(v);
                last = Some(v);
            }
            *d = LEAF | index(self.words.len() - 1);
        }
    }

    /// Appends room for `count` nodes and returns the word offset of the first.
    fn reserve_nodes(&mut self, count: usize) -> usize {
        let at = self.words.len();
        self.words.resize(at + count * NODE_WORDS, 0);
        at
    }

    /// Returns the end of the run of prefixes in `start..end` that share the slot at (`offset`,
    /// `width`) with `prefixes[start]`. Slots never decrease inside one node, so a binary search works.
    fn group_end(&self, start: usize, end: usize, offset: u32, width: u32) -> usize {
        let slot = self.prefixes[start].key.slot(offset, width);
        let rest = &self.prefixes[start + 1..end];
        start + 1 + rest.partition_point(|p| p.key.slot(offset, width) == slot)
    }

    /// Builds the node at bit `offset` for `prefixes[start..end]`, which are all inside the node,
    /// into the words reserved at `at`. `inherited` is the value of the longest prefix covering
    /// the whole node.
    fn build_node(&mut self, at: usize, offset: u32, start: usize, end: usize, inherited: u32) {
        if K::COMPRESSED {
            let strides = self.shared_strides(offset, start, end);
            // One skipped stride would replace one node with one node.
            if strides >= 2 {
                self.build_skip(at, offset, strides, start, end, inherited);
                return;
            }
        }
        let bottom = offset + STRIDE;
        let mut values = [inherited; 64];
        let mut vector = 0u64;
        let mut edges = 0u64;
        self.for_each_slot(offset, start..end, |slot, p| {
            if p.len <= bottom {
                let end = slot + (1 << (bottom - p.len));
                values[slot..end].fill(p.value);
                edges |= 1 << slot | 1u64.checked_shl(end as u32).unwrap_or(0);
            } else {
                vector |= 1 << slot;
            }
        });

        let leafvec = leafvec(vector, &values, edges);
        let base0 = index(self.words.len());
        self.words.extend(set_bits(leafvec).map(|s| values[s]));
        let base1 = self.reserve_nodes(vector.count_ones() as usize);
        self.words[at..at + NODE_WORDS].copy_from_slice(&[
            vector as u32,
            (vector >> 32) as u32,
            leafvec as u32,
            (leafvec >> 32) as u32,
            base0,
            index(base1),
        ]);

        // The children block is reserved, so each subtrie can append after it.
        let mut next = base1;
        let mut i = start;
        while i < end {
            let p = self.prefixes[i];
            if p.len <= bottom {
                i += 1;
                continue;
            }
            let slot = p.key.slot(offset, STRIDE);
            let group_end = self.group_end(i, end, offset, STRIDE);
            self.build_node(next, bottom, i, group_end, values[slot]);
            next += NODE_WORDS;
            i = group_end;
        }
    }

    /// Returns how many whole strides from `offset` every prefix in `start..end` shares and
    /// continues past, up to `MAX_SKIP_STRIDES`.
    fn shared_strides(&self, offset: u32, start: usize, end: usize) -> u32 {
        let range = &self.prefixes[start..end];
        // Sorted keys share what the first and the last share.
        let common = range[0].key.common_bits(range[range.len() - 1].key);
        // Every prefix in the range is longer than `offset`, so this does not underflow.
        let shortest = range.iter().map(|p| p.len).min().unwrap_or(0);
        let bits = common.min(shortest - 1).saturating_sub(offset);
        (bits / STRIDE).min(MAX_SKIP_STRIDES)
    }

    /// Builds a skip node at `at` over `strides` strides from `offset`, and the node after it.
    fn build_skip(
        &mut self,
        at: usize,
        offset: u32,
        strides: u32,
        start: usize,
        end: usize,
        inherited: u32,
    ) {
        let bits = strides * STRIDE;
        let fallback = index(self.words.len());
        self.words.push(inherited);
        let child = self.reserve_nodes(1);
        let pattern = self.prefixes[start].key.span(offset, bits) | u128::from(strides);
        self.words[at..at + NODE_WORDS].copy_from_slice(&[
            pattern as u32,
            (pattern >> 32) as u32,
            (pattern >> 64) as u32,
            (pattern >> 96) as u32,
            LEAF | fallback,
            SKIP | index(child),
        ]);
        // No prefix ends in the skipped bits, so the next node inherits the same value.
        self.build_node(child, offset + bits, start, end, inherited);
    }

    /// Calls `f(slot, prefix)` for each prefix in `range` that ends inside the node at
    /// `offset`, and once for the first prefix of each group that continues below it.
    fn for_each_slot(
        &self,
        offset: u32,
        range: std::ops::Range<usize>,
        mut f: impl FnMut(usize, Prefix<K>),
    ) {
        let bottom = offset + STRIDE;
        let mut i = range.start;
        while i < range.end {
            let p = self.prefixes[i];
            f(p.key.slot(offset, STRIDE), p);
            i = if p.len <= bottom {
                i + 1
            } else {
                self.group_end(i, range.end, offset, STRIDE)
            };
        }
    }
}

/// Marks leaf slots whose value differs from the previous leaf slot (child slots are skipped,
/// so the popcount up to a slot counts exactly the runs started at or before it). Values can
/// only change at `edges`, the slots where a painted range starts or ends, so only those are compared.
fn leafvec(vector: u64, values: &[u32; 64], edges: u64) -> u64 {
    // Child slots repeat the previous slot's value so they never start or end a run.
    let mut view = *values;
    for s in set_bits(vector & !1) {
        view[s] = view[s - 1];
    }
    let leaves = !vector;
    let mut runs = leaves & leaves.wrapping_neg();
    for s in set_bits((edges | vector << 1) & leaves & !1) {
        if view[s] != view[s - 1] {
            runs |= 1 << s;
        }
    }
    runs
}

/// Positions of the set bits of `bits`, lowest first.
fn set_bits(mut bits: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (bits != 0).then(|| {
            let s = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            s
        })
    })
}

/// Converts a word offset to the 31 bits that a reference has room for.
/// 2^31 words are 8 GiB. A table of 200k random IPv6 /128s took about 130
/// words per prefix, so an estimated 16M of them would fill one trie and
/// panic here. Config loading rejects more than
/// [`super::MAX_PREFIXES_PER_FAMILY`] prefixes of a family, which keeps every
/// loaded table below the limit.
fn index(i: usize) -> u32 {
    let i = u32::try_from(i).expect("trie has more than 2^31 words");
    assert!(i < LEAF, "trie has more than 2^31 words");
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mask4(len: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
    }

    fn mask6(len: u8) -> u128 {
        u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
    }

    fn brute_v4(prefixes: &[(u32, u8, u32)], addr: u32) -> Option<u32> {
        prefixes
            .iter()
            .filter(|&&(net, len, _)| addr & mask4(len) == net)
            .max_by_key(|&&(_, len, _)| len)
            .map(|&(_, _, v)| v)
    }

    fn brute_v6(prefixes: &[(u128, u8, u32)], addr: u128) -> Option<u32> {
        prefixes
            .iter()
            .filter(|&&(net, len, _)| addr & mask6(len) == net)
            .max_by_key(|&&(_, len, _)| len)
            .map(|&(_, _, v)| v)
    }

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    fn v6(s: &str) -> u128 {
        u128::from(s.parse::<std::net::Ipv6Addr>().unwrap())
    }

    /// Every direct-pointing width the tests exercise, from a single bit to wider than `build` picks.
    const WIDTHS: [u32; 6] = [1, 5, 8, 13, 16, 18];

    fn tables(v4: &[(u32, u8, u32)], v6: &[(u128, u8, u32)]) -> Vec<CompiledTable> {
        WIDTHS
            .iter()
            .map(|&w| CompiledTable::build_with(v4, v6, w, w))
            .chain(std::iter::once(CompiledTable::build(v4, v6)))
            .collect()
    }

    /// Value of output slots that a batch lookup has not written. No table in these tests has it.
    const UNWRITTEN: u32 = NO_MATCH - 1;

    /// Checks that `lookup`, given an output shorter or longer than `expected`, fills exactly
    /// the first `min(expected.len(), out.len())` slots with `expected`.
    fn assert_bounded_output(expected: &[u32], lookup: impl Fn(&mut [u32])) {
        let half = expected.len() / 2;
        let mut short = vec![UNWRITTEN; half];
        lookup(&mut short);
        assert_eq!(short, expected[..half], "output shorter than the keys");

        let mut long = vec![UNWRITTEN; expected.len() + 3];
        lookup(&mut long);
        assert_eq!(
            long[..expected.len()],
            *expected,
            "output longer than the keys"
        );
        assert_eq!(
            long[expected.len()..],
            [UNWRITTEN; 3],
            "slots past the keys"
        );
    }

    fn batch4(t: &CompiledTable, addrs: &[u32]) -> Vec<u32> {
        let mut out = vec![0; addrs.len()];
        t.lookup_v4_batch(addrs, &mut out);
        // Small test tables take the plain loop, so check the rounds directly too.
        let keys: Vec<u64> = addrs.iter().map(|&a| u64::from(a) << 32).collect();
        let mut grouped = vec![0; addrs.len()];
        t.v4.lookup_rounds(&keys, &mut grouped);
        assert_eq!(out, grouped);
        assert_bounded_output(&out, |out| t.lookup_v4_batch(addrs, out));
        assert_bounded_output(&out, |out| t.v4.lookup_rounds(&keys, out));
        out
    }

    fn batch6(t: &CompiledTable, addrs: &[u128]) -> Vec<u32> {
        let mut out = vec![0; addrs.len()];
        t.lookup_v6_batch(addrs, &mut out);
        let mut grouped = vec![0; addrs.len()];
        t.v6.lookup_rounds_skipping(addrs, &mut grouped);
        assert_eq!(out, grouped);
        assert_bounded_output(&out, |out| t.lookup_v6_batch(addrs, out));
        assert_bounded_output(&out, |out| t.v6.lookup_rounds_skipping(addrs, out));
        out
    }

    fn encode(v: Option<u32>) -> u32 {
        v.unwrap_or(NO_MATCH)
    }

    /// Builds a trie with a /16 split by a /24, so the direct slot of 10.1.0.0 refers to a node.
    fn split_trie() -> Poptrie {
        let table = CompiledTable::build(&[(v4("10.1.0.0"), 16, 1), (v4("10.1.2.0"), 24, 2)], &[]);
        let trie = table.v4.clone();
        trie.check_bounds();
        trie
    }

    #[test]
    #[should_panic(expected = "node outside the trie")]
    fn bounds_check_rejects_node_past_end() {
        let mut trie = split_trie();
        let slot = (u64::from(v4("10.1.0.0")) << 32).slot(0, trie.direct_bits);
        assert_eq!(trie.direct[slot] & LEAF, 0);
        trie.direct[slot] = (trie.words.len() - NODE_WORDS + 1) as u32;
        trie.check_bounds();
    }

    #[test]
    #[should_panic(expected = "leaf outside the trie")]
    fn bounds_check_rejects_leaf_past_end() {
        let mut trie = split_trie();
        trie.direct[0] = LEAF | trie.words.len() as u32;
        trie.check_bounds();
    }

    #[test]
    #[should_panic(expected = "children outside the trie")]
    fn bounds_check_rejects_children_past_end() {
        let mut trie = split_trie();
        let slot = (u64::from(v4("10.1.0.0")) << 32).slot(0, trie.direct_bits);
        let root = trie.direct[slot] as usize;
        // A /24 under a /16 root leaves one child block of one node.
        trie.words[root + 5] = (trie.words.len() - NODE_WORDS + 1) as u32;
        trie.check_bounds();
    }

    /// Returns the word offset of the root node in `split_trie`, which has one child at slot 0
    /// and one run of leaves that starts at slot 1.
    fn split_root(trie: &Poptrie) -> usize {
        let slot = (u64::from(v4("10.1.0.0")) << 32).slot(0, trie.direct_bits);
        let root = trie.direct[slot] as usize;
        assert_eq!(trie.words[root..root + 4], [1, 0, 1 << 1, 0]);
        root
    }

    #[test]
    #[should_panic(expected = "leaves outside the trie")]
    fn bounds_check_rejects_leaves_past_end() {
        let mut trie = split_trie();
        let root = split_root(&trie);
        trie.words[root + 4] = trie.words.len() as u32;
        trie.check_bounds();
    }

    #[test]
    #[should_panic(expected = "lowest leaf slot starts no run")]
    fn bounds_check_rejects_missing_first_run() {
        let mut trie = split_trie();
        let root = split_root(&trie);
        // Slot 1 would then count no run, and `step` would return the word before `base0`.
        trie.words[root + 2] = 0;
        trie.check_bounds();
    }

    #[test]
    #[should_panic(expected = "direct width outside 1..=32")]
    fn bounds_check_rejects_zero_width() {
        CompiledTable::build_with(&[], &[], 0, 8);
    }

    #[test]
    fn empty_table_matches_nothing() {
        for t in tables(&[], &[]) {
            assert_eq!(t.lookup_v4(0), None);
            assert_eq!(t.lookup_v4(u32::MAX), None);
            assert_eq!(t.lookup_v6(0), None);
            assert_eq!(t.lookup_v6(u128::MAX), None);
            assert_eq!(batch4(&t, &[1, 2, 3]), vec![NO_MATCH; 3]);
            assert_eq!(batch6(&t, &[1, 2, 3]), vec![NO_MATCH; 3]);
        }
    }

    #[test]
    fn default_routes_match_everything() {
        for t in tables(&[(0, 0, 7)], &[(0, 0, 9)]) {
            assert_eq!(t.lookup_v4(0), Some(7));
            assert_eq!(t.lookup_v4(u32::MAX), Some(7));
            assert_eq!(t.lookup_v6(0), Some(9));
            assert_eq!(t.lookup_v6(u128::MAX), Some(9));
        }
    }

    #[test]
    fn host_routes_match_one_address() {
        let a4 = v4("192.168.1.77");
        let a6 = v6("2001:db8::1");
        for t in tables(&[(a4, 32, 1)], &[(a6, 128, 2)]) {
            assert_eq!(t.lookup_v4(a4), Some(1));
            assert_eq!(t.lookup_v4(a4 - 1), None);
            assert_eq!(t.lookup_v4(a4 + 1), None);
            assert_eq!(t.lookup_v6(a6), Some(2));
            assert_eq!(t.lookup_v6(a6 - 1), None);
            assert_eq!(t.lookup_v6(a6 + 1), None);
        }
    }

    #[test]
    fn nested_prefixes_carve_out() {
        let p4 = [
            (v4("10.0.0.0"), 8, 1),
            (v4("10.1.0.0"), 16, 2),
            (v4("10.1.2.0"), 24, 3),
            (v4("10.1.2.128"), 25, 4),
        ];
        let p6 = [(v6("fd00::"), 8, 5), (v6("fd00:1::"), 32, 6)];
        for t in tables(&p4, &p6) {
            assert_eq!(t.lookup_v4(v4("10.9.9.9")), Some(1));
            assert_eq!(t.lookup_v4(v4("10.1.9.9")), Some(2));
            assert_eq!(t.lookup_v4(v4("10.1.2.3")), Some(3));
            assert_eq!(t.lookup_v4(v4("10.1.2.200")), Some(4));
            assert_eq!(t.lookup_v4(v4("11.0.0.0")), None);
            assert_eq!(t.lookup_v6(v6("fd00:1::9")), Some(6));
            assert_eq!(t.lookup_v6(v6("fd00:2::9")), Some(5));
            assert_eq!(t.lookup_v6(v6("fe00::")), None);
        }
    }

    #[test]
    fn adjacent_prefixes_stay_separate() {
        let p4 = [
            (v4("192.168.0.0"), 24, 1),
            (v4("192.168.1.0"), 24, 2),
            (v4("192.168.2.0"), 23, 3),
        ];
        let p6 = [(v6("2001:db8::"), 48, 4), (v6("2001:db8:1::"), 48, 5)];
        for t in tables(&p4, &p6) {
            assert_eq!(t.lookup_v4(v4("192.167.255.255")), None);
            assert_eq!(t.lookup_v4(v4("192.168.0.255")), Some(1));
            assert_eq!(t.lookup_v4(v4("192.168.1.0")), Some(2));
            assert_eq!(t.lookup_v4(v4("192.168.3.255")), Some(3));
            assert_eq!(t.lookup_v4(v4("192.168.4.0")), None);
            assert_eq!(t.lookup_v6(v6("2001:db8:0:ffff::")), Some(4));
            assert_eq!(t.lookup_v6(v6("2001:db8:1::")), Some(5));
            assert_eq!(t.lookup_v6(v6("2001:db8:2::")), None);
        }
    }

    #[test]
    fn every_length_on_one_address() {
        let addr = v4("203.0.113.255");
        let p4: Vec<_> = (0..=32u8)
            .map(|len| (addr & mask4(len), len, u32::from(len)))
            .collect();
        let a6 = v6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff");
        let p6: Vec<_> = (0..=128u8)
            .map(|len| (a6 & mask6(len), len, u32::from(len)))
            .collect();
        for t in tables(&p4, &p6) {
            for len in 0..32u8 {
                // Flipping the bit just past the prefix leaves exactly this length matching.
                let probe = addr ^ (1u32 << (31 - u32::from(len)));
                assert_eq!(t.lookup_v4(probe), Some(u32::from(len)), "v4 /{len}");
            }
            assert_eq!(t.lookup_v4(addr), Some(32));
            for len in 0..128u8 {
                let probe = a6 ^ (1u128 << (127 - u32::from(len)));
                assert_eq!(t.lookup_v6(probe), Some(u32::from(len)), "v6 /{len}");
            }
            assert_eq!(t.lookup_v6(a6), Some(128));
        }
    }

    #[test]
    fn batch_handles_partial_chunks_and_short_output() {
        let p4 = [(v4("10.0.0.0"), 8, 1)];
        let p6 = [(v6("fd00::"), 8, 2)];
        // The default widths keep this table in the cache and 18 bits do not. So the batch
        // lookups take the plain loop in the first table and the grouped rounds in the second.
        let plain = CompiledTable::build(&p4, &p6);
        let grouped = CompiledTable::build_with(&p4, &p6, 18, 18);
        assert!(plain.v4.memory_bytes() <= CACHE_RESIDENT_BYTES);
        assert!(plain.v6.memory_bytes() <= CACHE_RESIDENT_BYTES);
        assert!(grouped.v4.memory_bytes() > CACHE_RESIDENT_BYTES);
        assert!(grouped.v6.memory_bytes() > CACHE_RESIDENT_BYTES);

        // 600 keys span two full chunks of the IPv4 batch and part of a third.
        let addrs4: Vec<u32> = (0..600).map(|i| v4("10.0.0.0") + i * 7).collect();
        let addrs6: Vec<u128> = (0..600).map(|i| v6("fd00::") + i * 7).collect();
        for t in [plain, grouped] {
            assert_eq!(batch4(&t, &addrs4), vec![1; 600]);
            assert_eq!(batch6(&t, &addrs6), vec![2; 600]);
            let mut out = [0u32; 5];
            t.lookup_v4_batch(&addrs4, &mut out);
            assert_eq!(out, [1; 5]);
        }
    }

    #[test]
    fn word_offsets_stop_below_leaf_tag() {
        assert_eq!(index(0), 0);
        assert_eq!(index(LEAF as usize - 1), LEAF - 1);
        for offset in [LEAF as usize, u32::MAX as usize, 1 << 32] {
            let result = std::panic::catch_unwind(|| index(offset));
            assert!(result.is_err(), "offset {offset} was accepted");
        }
    }

    #[test]
    fn lone_host_route_stays_under_30_words() {
        for address in [0u128, 1, u128::MAX, v6("2001:db8::1")] {
            let t = CompiledTable::build(&[], &[(address, 128, 0)]);
            let added = t.v6.words.len() - NODE_WORDS;
            assert!(added < 30, "{added} words for {address:#x}/128");
        }
    }

    #[test]
    fn skip_nodes_match_keys_differing_in_any_bit() {
        let host = v6("2001:db8:0:1::1");
        let prefixes = [
            (0, 0, 1),
            (host, 128, 2),
            (host & mask6(64), 64, 3),
            (v6("::1"), 128, 4),
        ];
        let mut probes = vec![host, v6("::1"), 0];
        for bit in 0..128 {
            probes.push(host ^ 1 << bit);
            probes.push(v6("::1") ^ 1 << bit);
        }
        for t in tables(&[], &prefixes) {
            let want: Vec<u32> = probes
                .iter()
                .map(|&a| encode(brute_v6(&prefixes, a)))
                .collect();
            let single: Vec<u32> = probes.iter().map(|&a| encode(t.lookup_v6(a))).collect();
            assert_eq!(single, want, "direct width {}", t.v6.direct_bits);
            assert_eq!(batch6(&t, &probes), want);
        }
    }

    /// Returns the word offset of the skip node that a lone `::1/128` puts below the direct
    /// array.
    fn skip_root(trie: &Poptrie) -> usize {
        let root = trie.direct[0];
        assert_eq!(root & LEAF, 0);
        let at = root as usize;
        assert_ne!(
            trie.words[at + NODE_WORDS - 1] & SKIP,
            0,
            "no skip node at the root"
        );
        at
    }

    #[test]
    #[should_panic(expected = "children outside the trie")]
    fn bounds_check_rejects_skip_child_past_end() {
        let mut trie = CompiledTable::build(&[], &[(1, 128, 0)]).v6;
        let at = skip_root(&trie);
        trie.words[at + 5] = SKIP | (trie.words.len() - NODE_WORDS + 1) as u32;
        trie.check_bounds();
    }

    #[test]
    #[should_panic(expected = "leaf outside the trie")]
    fn bounds_check_rejects_skip_fallback_past_end() {
        let mut trie = CompiledTable::build(&[], &[(1, 128, 0)]).v6;
        let at = skip_root(&trie);
        trie.words[at + 4] = LEAF | trie.words.len() as u32;
        trie.check_bounds();
    }

    #[test]
    #[should_panic(expected = "skip of 0 strides")]
    fn bounds_check_rejects_empty_skip() {
        let mut trie = CompiledTable::build(&[], &[(1, 128, 0)]).v6;
        let at = skip_root(&trie);
        trie.words[at] &= !0xff;
        trie.check_bounds();
    }

    #[test]
    #[should_panic(expected = "skip node in a trie without them")]
    fn bounds_check_rejects_skip_in_ipv4() {
        let mut trie = split_trie();
        let slot = (u64::from(v4("10.1.0.0")) << 32).slot(0, trie.direct_bits);
        let root = trie.direct[slot] as usize;
        trie.words[root + 5] |= SKIP;
        trie.check_bounds();
    }

    /// Returns the value of the prefix at `index`. Without `classes` each prefix gets its own
    /// value. With it, values repeat as they do in a `Table`, where the prefixes of one set and
    /// length share one.
    fn value(index: usize, classes: Option<u32>) -> u32 {
        let index = index as u32;
        classes.map_or(index, |classes| index % classes)
    }

    /// Prefixes and probes drawn near a few base addresses, so they overlap often.
    fn near_v4() -> impl Strategy<Value = (Vec<(u32, u8, u32)>, Vec<u32>)> {
        let bases = prop::collection::vec(any::<u32>(), 1..4);
        let pfx = prop::collection::vec((0usize..4, any::<u32>(), 0u32..=32, 0u8..=32), 0..60);
        let probes = prop::collection::vec((0usize..4, any::<u32>(), 0u32..=32), 1..40);
        let classes = prop::option::of(1u32..=3);
        (bases, pfx, probes, classes).prop_map(|(bases, pfx, probes, classes)| {
            let near = |b: usize, r: u32, bits: u32| {
                bases[b % bases.len()] ^ (r & !u32::MAX.checked_shl(bits).unwrap_or(0))
            };
            let mut seen = std::collections::HashSet::new();
            let prefixes = pfx
                .iter()
                .map(|&(b, r, bits, len)| (near(b, r, bits) & mask4(len), len))
                .filter(|&p| seen.insert(p))
                .enumerate()
                .map(|(i, (net, len))| (net, len, value(i, classes)))
                .collect();
            let addrs = probes.iter().map(|&(b, r, k)| near(b, r, k)).collect();
            (prefixes, addrs)
        })
    }

    fn near_v6() -> impl Strategy<Value = (Vec<(u128, u8, u32)>, Vec<u128>)> {
        let bases = prop::collection::vec(any::<u128>(), 1..4);
        let pfx = prop::collection::vec((0usize..4, any::<u128>(), 0u32..=128, 0u8..=128), 0..60);
        let probes = prop::collection::vec((0usize..4, any::<u128>(), 0u32..=128), 1..40);
        let classes = prop::option::of(1u32..=3);
        (bases, pfx, probes, classes).prop_map(|(bases, pfx, probes, classes)| {
            let near = |b: usize, r: u128, bits: u32| {
                bases[b % bases.len()] ^ (r & !u128::MAX.checked_shl(bits).unwrap_or(0))
            };
            let mut seen = std::collections::HashSet::new();
            let prefixes = pfx
                .iter()
                .map(|&(b, r, bits, len)| (near(b, r, bits) & mask6(len), len))
                .filter(|&p| seen.insert(p))
                .enumerate()
                .map(|(i, (net, len))| (net, len, value(i, classes)))
                .collect();
            let addrs = probes.iter().map(|&(b, r, k)| near(b, r, k)).collect();
            (prefixes, addrs)
        })
    }

    /// Reads the `VmFlags` of the mapping that contains `address` from `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    fn mapping_flags(address: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line
                .split_whitespace()
                .next()
                .and_then(|r| r.split_once('-'));
            let bounds = range.and_then(|(start, end)| {
                let start = usize::from_str_radix(start, 16).ok()?;
                Some((start, usize::from_str_radix(end, 16).ok()?))
            });
            if let Some((start, end)) = bounds {
                inside = (start..end).contains(&address);
            } else if let Some(flags) = line.strip_prefix("VmFlags:").filter(|_| inside) {
                return flags.trim().to_owned();
            }
        }
        panic!("no mapping contains {address:#x}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_trie_is_advised_for_huge_pages() {
        // /24 prefixes scattered over the address space make a trie of several MiB.
        let p4: Vec<_> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) & 0xffff_ff00, 24, 1))
            .collect();
        let table = CompiledTable::build(&p4, &[]);
        let words = &table.v4.words;
        let bytes = words.len() * size_of::<u32>();
        assert!(bytes >= 2 * HUGE_PAGE, "trie of {bytes} bytes");
        // The middle of a mapping of two huge pages or more lies in a whole huge page.
        let middle = words.as_ptr() as usize + bytes / 2;
        let flags = mapping_flags(middle);
        assert!(
            flags.split(' ').any(|flag| flag == "hg"),
            "VmFlags: {flags}"
        );

        let small = CompiledTable::build(&p4[..10], &[]);
        let flags = mapping_flags(small.v4.words.as_ptr() as usize);
        assert!(
            !flags.split(' ').any(|flag| flag == "hg"),
            "VmFlags: {flags}"
        );
    }

    /// Debug builds run far fewer cases, because each case builds tables with
    /// up to 2^20 direct entries; `cargo test --release` runs the full count.
    const CASES: u32 = if cfg!(debug_assertions) { 300 } else { 3000 };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn v4_matches_brute_force((prefixes, addrs) in near_v4(), width in 1u32..=20) {
            for t in [CompiledTable::build_with(&prefixes, &[], width, 8), CompiledTable::build(&prefixes, &[])] {
                let want: Vec<u32> = addrs.iter().map(|&a| encode(brute_v4(&prefixes, a))).collect();
                let single: Vec<u32> = addrs.iter().map(|&a| encode(t.lookup_v4(a))).collect();
                prop_assert_eq!(&single, &want);
                prop_assert_eq!(batch4(&t, &addrs), want);
            }
        }

        #[test]
        fn v6_matches_brute_force((prefixes, addrs) in near_v6(), width in 1u32..=20) {
            for t in [CompiledTable::build_with(&[], &prefixes, 8, width), CompiledTable::build(&[], &prefixes)] {
                let want: Vec<u32> = addrs.iter().map(|&a| encode(brute_v6(&prefixes, a))).collect();
                let single: Vec<u32> = addrs.iter().map(|&a| encode(t.lookup_v6(a))).collect();
                prop_assert_eq!(&single, &want);
                prop_assert_eq!(batch6(&t, &addrs), want);
            }
        }
    }
}
