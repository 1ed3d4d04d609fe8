//! Term infos against what was encoded: every term's document frequency
//! and list span read back, whatever the widths of its group; damaged
//! blocks are errors, never a panic.

use diagon::index::text::terminfo::{Entry, GROUP, TERMS_PER_BLOCK, encode, entry};
use proptest::prelude::*;

/// (document frequency, list length) per term: runs of rare terms with
/// now and then a frequent one, as a dictionary has.
fn terms() -> impl Strategy<Value = Vec<(u32, u64)>> {
    let term = prop_oneof![
        8 => (1u32..4, 1u64..40),
        1 => (1u32..200_000, 1u64..5_000_000),
        1 => (Just(u32::MAX), Just(1u64 << 40)),
    ];
    prop_oneof![
        proptest::collection::vec(term.clone(), 1..300),
        proptest::collection::vec(term, TERMS_PER_BLOCK - 2..TERMS_PER_BLOCK + GROUP + 3),
    ]
}

fn spans(terms: &[(u32, u64)]) -> (Vec<u32>, Vec<u64>, Vec<Entry>) {
    let (mut ends, mut entries, mut at) = (Vec::new(), Vec::new(), 0);
    for &(doc_freq, len) in terms {
        entries.push(Entry {
            doc_freq,
            start: at,
            end: at + len,
        });
        at += len;
        ends.push(at);
    }
    (terms.iter().map(|t| t.0).collect(), ends, entries)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_term_info_reads_back(terms in terms()) {
        let (doc_freqs, ends, expected) = spans(&terms);
        let blocks = encode(&doc_freqs, &ends).unwrap();
        prop_assert_eq!(blocks.len(), terms.len().div_ceil(TERMS_PER_BLOCK));
        for (i, want) in expected.iter().enumerate() {
            let (b, k) = (i / TERMS_PER_BLOCK, i % TERMS_PER_BLOCK);
            let in_block = (terms.len() - b * TERMS_PER_BLOCK).min(TERMS_PER_BLOCK);
            prop_assert_eq!(entry(&blocks[b], in_block, k).unwrap(), *want, "term {}", i);
        }
        let last = terms.len() - 1;
        let in_block = last % TERMS_PER_BLOCK + 1;
        prop_assert!(entry(&blocks[last / TERMS_PER_BLOCK], in_block, in_block).is_err());
    }

    #[test]
    fn damaged_term_infos_never_panic(
        terms in terms(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
    ) {
        let (doc_freqs, ends, _) = spans(&terms);
        let mut block = encode(&doc_freqs, &ends).unwrap().swap_remove(0);
        for (at, mask) in flips {
            let i = at.index(block.len());
            block[i] ^= mask;
        }
        block.truncate(cut.index(block.len() + 1));
        let n = terms.len().min(TERMS_PER_BLOCK);
        for i in 0..n {
            if let Ok(e) = entry(&block, n, i) {
                prop_assert!(e.doc_freq > 0 && e.start < e.end);
            }
        }
    }
}

#[test]
fn a_group_spanning_more_than_56_bits_is_refused() {
    let err = encode(&[1, 1], &[1, 1 << 57]).unwrap_err();
    assert!(err.contains("span"), "{err}");
}
