//! The Merkle tree over the log (RFC 9162 §2.1, SHA-256), its proofs, and
//! their verification.
//!
//! The hash chain proves an entry's place only to someone who walks the
//! whole chain; a Merkle tree lets a host check, with `log₂ n` hashes, that
//! its own entry is in the log (inclusion) and that today's log extends the
//! one it saw last time (consistency). Leaf `i` (0-based) is entry `seq =
//! i + 1`, and its leaf input is the entry's 32-byte chain hash
//! `Entry.hash`: the chain stays as it was, and the tree is built on top of
//! it, so a v1 database gains a tree without rewriting a row.
//!
//! ```text
//! leaf hash  = SHA-256(0x00 ‖ leaf input)
//! node hash  = SHA-256(0x01 ‖ left ‖ right)
//! MTH({})    = SHA-256("")
//! MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of 2 < n
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::encoding::{base64url_array, to_base64url};

/// A node of the tree: a leaf hash, an inner node or a root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MerkleHash(#[serde(with = "base64url_array")] pub [u8; 32]);

impl fmt::Display for MerkleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_base64url(&self.0))
    }
}

impl fmt::Debug for MerkleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerkleHash({self})")
    }
}

/// `SHA-256(0x00 ‖ input)`. The prefix keeps a leaf from ever being read as
/// an inner node (second-preimage resistance, RFC 9162 §2.1.1).
pub fn leaf_hash(input: &[u8]) -> MerkleHash {
    let mut data = Vec::with_capacity(1 + input.len());
    data.push(0x00);
    data.extend_from_slice(input);
    MerkleHash(atrest_core::sha256(&data))
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &MerkleHash, right: &MerkleHash) -> MerkleHash {
    let mut data = [0u8; 65];
    data[0] = 0x01;
    data[1..33].copy_from_slice(&left.0);
    data[33..].copy_from_slice(&right.0);
    MerkleHash(atrest_core::sha256(&data))
}

/// `MTH({}) = SHA-256("")`, the root of the empty tree.
pub fn empty_root() -> MerkleHash {
    MerkleHash(atrest_core::sha256(&[]))
}

/// The largest power of two strictly below `n` (`n >= 2`): where RFC 9162
/// splits a tree of `n` leaves.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// "Leaf `leaf_index` is in the tree of `tree_size` leaves": the sibling
/// hashes from the leaf up to the root (RFC 9162 §2.1.3.1 `PATH`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// 0-based: the entry with `seq` is leaf `seq - 1`.
    pub leaf_index: u64,
    pub tree_size: u64,
    pub path: Vec<MerkleHash>,
}

/// "The tree of `old_size` leaves is a prefix of the tree of `new_size`
/// leaves" (RFC 9162 §2.1.4.1 `PROOF`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    pub path: Vec<MerkleHash>,
}

/// Why a proof does not verify, or cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("leaf {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("no proof involves an empty tree")]
    EmptyTree,
    #[error("a tree of {new_size} leaves cannot extend one of {old_size}")]
    SizesOutOfOrder { old_size: u64, new_size: u64 },
    #[error("the proof has the wrong number of hashes for its sizes")]
    WrongLength,
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// An append-only Merkle tree kept in memory, answering roots and proofs
/// for any size up to its own in O(log n).
///
/// `levels[k][i]` is the hash of the complete subtree of `2^k` leaves
/// starting at leaf `i·2^k`. Every subtree that RFC 9162's recursion visits
/// is either such a complete, aligned subtree (one lookup) or runs up to the
/// tree's right edge (at most one per proof, `log₂ n` node hashes), so no
/// operation rehashes more than `O(log n)` nodes. The cost is memory:
/// `n + n/2 + n/4 + … < 2n` hashes, about 64 bytes per entry (64 MiB for a
/// million entries).
#[derive(Clone, Debug, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<MerkleHash>>,
}

impl MerkleTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf whose hash is already computed ([`leaf_hash`]).
    pub fn push(&mut self, leaf: MerkleHash) {
        let mut node = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let nodes = &mut self.levels[level];
            nodes.push(node);
            if !nodes.len().is_multiple_of(2) {
                break;
            }
            node = node_hash(&nodes[nodes.len() - 2], &nodes[nodes.len() - 1]);
            level += 1;
        }
    }

    /// Drops the leaves from `size` on (a batch whose commit failed).
    pub fn truncate(&mut self, size: u64) {
        for (k, nodes) in self.levels.iter_mut().enumerate() {
            nodes.truncate(usize::try_from(size >> k).unwrap_or(usize::MAX));
        }
    }

    /// The root of the whole tree.
    pub fn root(&self) -> MerkleHash {
        self.subtree(0, self.size())
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<MerkleHash, PathError> {
        if size > self.size() {
            return Err(PathError::IndexOutOfRange {
                index: size,
                size: self.size(),
            });
        }
        Ok(self.subtree(0, size))
    }

    /// `MTH(D[lo:hi])`, for `hi <= size()`.
    fn subtree(&self, lo: u64, hi: u64) -> MerkleHash {
        let n = hi - lo;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            // In range: a complete aligned subtree inside the first
            // size() leaves is always cached.
            return self.levels[level][(lo >> level) as usize];
        }
        let k = split(n);
        node_hash(&self.subtree(lo, lo + k), &self.subtree(lo + k, hi))
    }

    /// The proof that leaf `index` is in the tree of the first `size`
    /// leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof, PathError> {
        if size > self.size() || index >= size {
            return Err(PathError::IndexOutOfRange { index, size });
        }
        let (mut lo, mut hi) = (0, size);
        let mut path = Vec::new();
        while hi - lo > 1 {
            let k = split(hi - lo);
            if index < lo + k {
                path.push(self.subtree(lo + k, hi));
                hi = lo + k;
            } else {
                path.push(self.subtree(lo, lo + k));
                lo += k;
            }
        }
        path.reverse();
        Ok(InclusionProof {
            leaf_index: index,
            tree_size: size,
            path,
        })
    }

    /// The proof that the tree of `old_size` leaves is a prefix of the tree
    /// of `new_size` leaves. `old_size == new_size` gives an empty proof;
    /// `old_size == 0` is refused (RFC 9162 defines proofs for `0 < m`).
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, PathError> {
        if new_size > self.size() {
            return Err(PathError::IndexOutOfRange {
                index: new_size,
                size: self.size(),
            });
        }
        if old_size == 0 {
            return Err(PathError::EmptyTree);
        }
        if old_size > new_size {
            return Err(PathError::SizesOutOfOrder { old_size, new_size });
        }
        // SUBPROOF(m, D[lo:hi], b), unrolled: each step either descends
        // left (recording the right sibling) or right (the left one).
        let (mut lo, mut hi, mut m) = (0, new_size, old_size);
        let mut complete = true;
        let mut path = Vec::new();
        while m != hi - lo {
            let k = split(hi - lo);
            if m <= k {
                path.push(self.subtree(lo + k, hi));
                hi = lo + k;
            } else {
                path.push(self.subtree(lo, lo + k));
                lo += k;
                m -= k;
                complete = false;
            }
        }
        if !complete {
            path.push(self.subtree(lo, hi));
        }
        path.reverse();
        Ok(ConsistencyProof {
            old_size,
            new_size,
            path,
        })
    }
}

/// RFC 9162 §2.1.3.2: does `proof` lead from `leaf` to `root`?
pub fn verify_inclusion_path(
    leaf: &MerkleHash,
    proof: &InclusionProof,
    root: &MerkleHash,
) -> Result<(), PathError> {
    if proof.leaf_index >= proof.tree_size {
        return Err(PathError::IndexOutOfRange {
            index: proof.leaf_index,
            size: proof.tree_size,
        });
    }
    let mut fnode = proof.leaf_index;
    let mut snode = proof.tree_size - 1;
    let mut r = *leaf;
    for p in &proof.path {
        if snode == 0 {
            return Err(PathError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(PathError::WrongLength);
    }
    if r != *root {
        return Err(PathError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: is the tree with `old_root` a prefix of the tree with
/// `new_root`, by `proof`? Equal sizes need an empty proof and equal roots
/// (outside the RFC's `m < n`, as every CT client does); an old size of 0
/// is refused, since no signed head is ever of an empty tree.
pub fn verify_consistency_path(
    proof: &ConsistencyProof,
    old_root: &MerkleHash,
    new_root: &MerkleHash,
) -> Result<(), PathError> {
    let (first, second) = (proof.old_size, proof.new_size);
    if first == 0 {
        return Err(PathError::EmptyTree);
    }
    if first > second {
        return Err(PathError::SizesOutOfOrder {
            old_size: first,
            new_size: second,
        });
    }
    if first == second {
        if !proof.path.is_empty() {
            return Err(PathError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(PathError::RootMismatch)
        };
    }
    // Step 1: an empty path never proves m < n.
    if proof.path.is_empty() {
        return Err(PathError::WrongLength);
    }
    // Step 2: a power-of-two old tree is itself a node of the new one.
    let mut path = proof.path.iter();
    let first_node = if first.is_power_of_two() {
        old_root
    } else {
        path.next().ok_or(PathError::WrongLength)?
    };
    let mut fnode = first - 1;
    let mut snode = second - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *first_node;
    let mut sr = *first_node;
    for c in path {
        if snode == 0 {
            return Err(PathError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(PathError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(PathError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn leaves(n: u64) -> Vec<MerkleHash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn tree(leaves: &[MerkleHash]) -> MerkleTree {
        let mut t = MerkleTree::new();
        for l in leaves {
            t.push(*l);
        }
        t
    }

    /// RFC 9162's recursive definitions, word for word, as the reference.
    fn mth(d: &[MerkleHash]) -> MerkleHash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    fn naive_path(m: usize, d: &[MerkleHash]) -> Vec<MerkleHash> {
        if d.len() <= 1 {
            return vec![];
        }
        let k = split(d.len() as u64) as usize;
        if m < k {
            let mut p = naive_path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn naive_subproof(m: usize, d: &[MerkleHash], b: bool) -> Vec<MerkleHash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = split(n as u64) as usize;
        if m <= k {
            let mut p = naive_subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn check_size(n: u64) {
        let d = leaves(n);
        let t = tree(&d);
        for size in 0..=n {
            let root = mth(&d[..size as usize]);
            assert_eq!(t.root_at(size).unwrap(), root, "root at {size}");
            for index in 0..size {
                let proof = t.inclusion_proof(index, size).unwrap();
                assert_eq!(proof.path, naive_path(index as usize, &d[..size as usize]));
                verify_inclusion_path(&d[index as usize], &proof, &root).unwrap();
            }
            for old in 1..=size {
                let proof = t.consistency_proof(old, size).unwrap();
                if old < size {
                    assert_eq!(
                        proof.path,
                        naive_subproof(old as usize, &d[..size as usize], true)
                    );
                }
                let old_root = mth(&d[..old as usize]);
                verify_consistency_path(&proof, &old_root, &root).unwrap();
            }
        }
    }

    #[test]
    fn the_cached_tree_matches_the_definition_up_to_70_leaves() {
        for n in 0..=70 {
            check_size(n);
        }
    }

    #[test]
    fn the_empty_tree_and_a_single_leaf() {
        assert_eq!(MerkleTree::new().root(), empty_root());
        let t = tree(&leaves(1));
        assert_eq!(t.root(), leaf_hash(&0u64.to_be_bytes()));
        assert_eq!(t.inclusion_proof(0, 1).unwrap().path, vec![]);
    }

    #[test]
    fn edge_cases_are_refused() {
        let d = leaves(10);
        let t = tree(&d);
        let root = t.root();
        assert_eq!(
            t.inclusion_proof(10, 10),
            Err(PathError::IndexOutOfRange {
                index: 10,
                size: 10
            })
        );
        assert!(t.inclusion_proof(0, 11).is_err());
        assert_eq!(t.consistency_proof(0, 5), Err(PathError::EmptyTree));
        assert!(matches!(
            t.consistency_proof(6, 5),
            Err(PathError::SizesOutOfOrder { .. })
        ));
        // Equal sizes: an empty proof, and the roots must agree.
        let same = t.consistency_proof(10, 10).unwrap();
        assert!(same.path.is_empty());
        verify_consistency_path(&same, &root, &root).unwrap();
        let other = t.root_at(9).unwrap();
        assert_eq!(
            verify_consistency_path(&same, &root, &other),
            Err(PathError::RootMismatch)
        );
        let mut padded = same.clone();
        padded.path.push(root);
        assert_eq!(
            verify_consistency_path(&padded, &root, &root),
            Err(PathError::WrongLength)
        );
        // m < n with an empty path never verifies (RFC step 1).
        let empty = ConsistencyProof {
            old_size: 4,
            new_size: 8,
            path: vec![],
        };
        assert_eq!(
            verify_consistency_path(&empty, &t.root_at(4).unwrap(), &t.root_at(8).unwrap()),
            Err(PathError::WrongLength)
        );
        // An index past the size, in a proof handed over the wire.
        let mut proof = t.inclusion_proof(3, 10).unwrap();
        proof.leaf_index = 10;
        assert!(matches!(
            verify_inclusion_path(&d[3], &proof, &root),
            Err(PathError::IndexOutOfRange { .. })
        ));
    }

    #[test]
    fn truncate_returns_to_an_earlier_tree() {
        let d = leaves(37);
        let mut t = tree(&d);
        let at_20 = t.root_at(20).unwrap();
        t.truncate(20);
        assert_eq!((t.size(), t.root()), (20, at_20));
        for l in &d[20..] {
            t.push(*l);
        }
        assert_eq!(t.root(), mth(&d));
    }

    fn flip(h: &mut MerkleHash, bit: usize) {
        h.0[bit / 8 % 32] ^= 1 << (bit % 8);
    }

    proptest! {
        #[test]
        fn larger_trees_match_the_definition(n in 71u64..600, a in any::<u64>(), b in any::<u64>()) {
            let d = leaves(n);
            let t = tree(&d);
            prop_assert_eq!(t.root(), mth(&d));
            let size = 1 + a % n;
            let index = b % size;
            let root = mth(&d[..size as usize]);
            let proof = t.inclusion_proof(index, size).unwrap();
            prop_assert_eq!(&proof.path, &naive_path(index as usize, &d[..size as usize]));
            verify_inclusion_path(&d[index as usize], &proof, &root).unwrap();
            let old = 1 + b % size;
            let cproof = t.consistency_proof(old, size).unwrap();
            verify_consistency_path(&cproof, &mth(&d[..old as usize]), &root).unwrap();
        }

        #[test]
        fn any_single_bit_change_fails(n in 2u64..200, a in any::<u64>(), b in any::<u64>(), bit in 0usize..256, pick in any::<usize>()) {
            let d = leaves(n);
            let t = tree(&d);
            let size = 2 + a % (n - 1);
            let index = b % size;
            let root = t.root_at(size).unwrap();
            let proof = t.inclusion_proof(index, size).unwrap();

            let mut leaf = d[index as usize];
            flip(&mut leaf, bit);
            prop_assert!(verify_inclusion_path(&leaf, &proof, &root).is_err());
            let mut bad_root = root;
            flip(&mut bad_root, bit);
            prop_assert!(verify_inclusion_path(&d[index as usize], &proof, &bad_root).is_err());
            let mut bad = proof.clone();
            let i = pick % bad.path.len();
            flip(&mut bad.path[i], bit);
            prop_assert!(verify_inclusion_path(&d[index as usize], &bad, &root).is_err());
            let mut bad = proof.clone();
            bad.leaf_index ^= 1 << (pick % 8);
            if bad.leaf_index != index {
                prop_assert!(verify_inclusion_path(&d[index as usize], &bad, &root).is_err());
            }
            let mut short = proof.clone();
            short.path.pop();
            prop_assert!(verify_inclusion_path(&d[index as usize], &short, &root).is_err());
            let mut long = proof;
            long.path.push(root);
            prop_assert!(verify_inclusion_path(&d[index as usize], &long, &root).is_err());

            let old = 1 + b % (size - 1);
            let old_root = t.root_at(old).unwrap();
            let cproof = t.consistency_proof(old, size).unwrap();
            let mut bad = cproof.clone();
            let i = pick % bad.path.len();
            flip(&mut bad.path[i], bit);
            prop_assert!(verify_consistency_path(&bad, &old_root, &root).is_err());
            let mut bad_old = old_root;
            flip(&mut bad_old, bit);
            prop_assert!(verify_consistency_path(&cproof, &bad_old, &root).is_err());
            prop_assert!(verify_consistency_path(&cproof, &old_root, &bad_root).is_err());
            let mut short = cproof.clone();
            short.path.pop();
            prop_assert!(verify_consistency_path(&short, &old_root, &root).is_err());
            let mut long = cproof;
            long.path.push(root);
            prop_assert!(verify_consistency_path(&long, &old_root, &root).is_err());
        }
    }
}
