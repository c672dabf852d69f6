//! A file's BLAKE3 digest from digests of its 1 MiB blocks, so neither side
//! of a resumed transfer reads again what it already hashed: the standard
//! BLAKE3 of the whole file (the `H` key, unchanged on the wire) is the root
//! of a tree whose subtrees of 1 MiB at 1 MiB offsets have chaining values
//! (CVs) of their own (`blake3::hazmat`, tested against `blake3::hash`).
//!
//! A file of at most one block has one digest: its plain BLAKE3 (the root
//! itself); a longer one has the CV of each block, merged into the root.

use blake3::hazmat::{
    HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// Bytes per block (a power of two, a multiple of BLAKE3's 1 KiB chunk).
pub const BLOCK: u64 = 1 << 20;

/// A block's digest: a CV, or the root of a file of one block.
pub type Digest = [u8; 32];

/// The digest of block `index` (`bytes`, all of it) of a file of `total`
/// bytes.
pub fn block_digest(total: u64, index: u64, bytes: &[u8]) -> Digest {
    let mut h = BlockHasher::new(total, index);
    h.update(bytes);
    h.finish()
}

/// Hashes one block as its bytes come.
#[derive(Clone)]
pub struct BlockHasher {
    h: blake3::Hasher,
    single: bool,
}

impl BlockHasher {
    /// For block `index` of a file of `total` bytes.
    pub fn new(total: u64, index: u64) -> Self {
        let mut h = blake3::Hasher::new();
        let single = total <= BLOCK;
        if !single {
            h.set_input_offset(index * BLOCK);
        }
        BlockHasher { h, single }
    }

    /// Feeds bytes of the block.
    pub fn update(&mut self, bytes: &[u8]) {
        self.h.update(bytes);
    }

    /// The block's digest.
    pub fn finish(&self) -> Digest {
        if self.single {
            *self.h.finalize().as_bytes()
        } else {
            self.h.finalize_non_root()
        }
    }
}

/// Blocks in a file of `total` bytes (an empty file has one, empty).
pub fn blocks(total: u64) -> u64 {
    total.div_ceil(BLOCK).max(1)
}

/// The BLAKE3 of a file of `total` bytes from the digests of all its blocks;
/// `None` when there are not exactly [`blocks`] of them.
pub fn root(total: u64, digests: &[Digest]) -> Option<blake3::Hash> {
    if digests.len() as u64 != blocks(total) {
        return None;
    }
    if total <= BLOCK {
        return Some(blake3::Hash::from_bytes(digests[0]));
    }
    let left = left_subtree_len(total);
    let k = (left / BLOCK) as usize;
    let l = merge(&digests[..k], left);
    let r = merge(&digests[k..], total - left);
    Some(merge_subtrees_root(&l, &r, Mode::Hash))
}

/// The CV of a subtree of `len` bytes whose blocks have `cvs`.
fn merge(cvs: &[Digest], len: u64) -> Digest {
    if cvs.len() <= 1 || len <= BLOCK {
        return cvs.first().copied().unwrap_or_default();
    }
    let left = left_subtree_len(len);
    let k = ((left / BLOCK) as usize).min(cvs.len());
    merge_subtrees_non_root(
        &merge(&cvs[..k], left),
        &merge(&cvs[k..], len - left),
        Mode::Hash,
    )
}

/// Lowercase hex of a digest.
pub fn hex(d: &Digest) -> String {
    blake3::Hash::from_bytes(*d).to_hex().to_string()
}

/// A digest from 64 hex digits.
pub fn from_hex(s: &str) -> Option<Digest> {
    blake3::Hash::from_hex(s).ok().map(|h| *h.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(n: u64) -> Vec<u8> {
        (0..n)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    fn via_blocks(d: &[u8]) -> blake3::Hash {
        let total = d.len() as u64;
        let digests: Vec<Digest> = (0..blocks(total))
            .map(|i| {
                let s = (i * BLOCK) as usize;
                let e = ((i + 1) * BLOCK).min(total) as usize;
                block_digest(total, i, &d[s..e])
            })
            .collect();
        root(total, &digests).unwrap()
    }

    #[test]
    fn the_root_is_the_files_blake3_at_block_edges() {
        let b = BLOCK;
        for n in [
            0,
            1,
            1023,
            1024,
            b - 1,
            b,
            b + 1,
            2 * b,
            2 * b + 1,
            3 * b + 5,
            4 * b,
            5 * b - 7,
        ] {
            let d = data(n);
            assert_eq!(via_blocks(&d), blake3::hash(&d), "{n} bytes");
        }
        assert_eq!(root(3 * b, &[[0; 32]; 2]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn the_root_is_the_files_blake3(n in 0u64..(9 * BLOCK)) {
            let d = data(n);
            prop_assert_eq!(via_blocks(&d), blake3::hash(&d));
        }
    }
}
