//! The postings codec against the lists it encoded: every row, frequency
//! and position back in order; `seek` lands where a linear search does;
//! each block's impacts bound its rows' BM25 scores exactly, whatever the
//! parameters, and its lead exactly under the part's reference scoring and
//! by its scale under any other;
//! damaged bytes are errors or wrong-but-bounded values, never a panic.

use diagon::index::text::bm25::{Bm25, ColumnStats, TermScorer, decode_length, encode_length};
use diagon::index::text::postings::{
    BLOCK_LEN, END, Encoder, PostingList, TermPostings, encode, put_positions,
};
use proptest::prelude::*;

/// Rows from sorted gaps, each with 1 to 4 positions and a length.
fn postings() -> impl Strategy<Value = Vec<Posting>> {
    let gaps = prop_oneof![
        proptest::collection::vec(0u32..3, 1..700),
        proptest::collection::vec(0u32..100_000, 1..300),
        proptest::collection::vec(0u32..2, 255..260),
        // Lists of one or two rows: no header, a singleton's own impacts.
        proptest::collection::vec(0u32..5_000_000, 1..3),
    ];
    gaps.prop_flat_map(|gaps| {
        let n = gaps.len();
        (
            Just(gaps),
            // Position gaps of one to three varint bytes.
            proptest::collection::vec(
                proptest::collection::vec(prop_oneof![0u32..50, 0u32..100_000], 1..5),
                n,
            ),
            proptest::collection::vec(1u32..1000, n),
        )
    })
    .prop_map(|(gaps, positions, lens)| {
        let mut row = 0u32;
        gaps.iter()
            .zip(positions)
            .zip(lens)
            .enumerate()
            .map(|(i, ((gap, position_gaps), len))| {
                row += gap + u32::from(i > 0);
                let mut at = 0;
                let positions = position_gaps
                    .iter()
                    .enumerate()
                    .map(|(j, g)| {
                        at += g + u32::from(j > 0);
                        at
                    })
                    .collect();
                Posting {
                    row,
                    positions,
                    len,
                }
            })
            .collect()
    })
}

/// One row's postings, for the tests.
#[derive(Debug, Clone)]
struct Posting {
    row: u32,
    positions: Vec<u32>,
    len: u32,
}

/// The statistics of the part the tests' lists are in (rows of 30 tokens
/// on average), which pick the blocks' leads.
const STATS: ColumnStats = ColumnStats {
    rows: 1000,
    total_len: 30_000,
};

fn encoded(list: &[Posting]) -> Vec<u8> {
    encoded_by(list, |postings, len_of, out| {
        encode(postings, len_of, STATS, out)
    })
}

/// `list` encoded by `encode`, given its postings as an index builder
/// holds them and each row's length.
fn encoded_by(
    list: &[Posting],
    encode: impl FnOnce(TermPostings<'_>, &dyn Fn(u32) -> u32, &mut Vec<u8>),
) -> Vec<u8> {
    let rows: Vec<u32> = list.iter().map(|p| p.row).collect();
    let freqs: Vec<u32> = list.iter().map(|p| p.positions.len() as u32).collect();
    let mut positions = Vec::new();
    for p in list {
        put_positions(&p.positions, &mut positions);
    }
    let len_of = |row: u32| list.iter().find(|p| p.row == row).unwrap().len;
    let mut bytes = Vec::new();
    let postings = TermPostings {
        rows: &rows,
        freqs: &freqs,
        positions: &positions,
    };
    encode(postings, &len_of, &mut bytes);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_posting_reads_back(list in postings()) {
        let bytes = encoded(&list);
        let reader = PostingList::open(&bytes, list.len() as u32).unwrap();
        prop_assert_eq!(reader.len() as usize, list.len());
        prop_assert_eq!(reader.blocks(), list.len().div_ceil(BLOCK_LEN));
        let mut cursor = reader.cursor().unwrap();
        let mut positions = Vec::new();
        for (i, p) in list.iter().enumerate() {
            prop_assert_eq!(cursor.row(), p.row, "row {}", i);
            prop_assert_eq!(cursor.freq() as usize, p.positions.len());
            prop_assert_eq!(cursor.block(), i / BLOCK_LEN);
            cursor.positions(&mut positions).unwrap();
            prop_assert_eq!(&positions, &p.positions);
            cursor.advance().unwrap();
        }
        prop_assert_eq!(cursor.row(), END);
        for (b, block) in list.chunks(BLOCK_LEN).enumerate() {
            prop_assert_eq!(reader.last_row(b), block.last().unwrap().row);
            prop_assert_eq!(reader.block_of(block[0].row), Some(b));
            for (k1, b_param, avg) in [(1.2f32, 0.75f32, 30f32), (0.3, 1.0, 2.0), (3.0, 0.0, 500.0)] {
                let score = |freq: u32, code: u8| {
                    let len = decode_length(code) as f32;
                    let f = freq as f32;
                    f / (f + k1 * (1.0 - b_param + b_param * len / avg))
                };
                let best = block
                    .iter()
                    .map(|p| score(p.positions.len() as u32, encode_length(p.len)))
                    .fold(0f32, f32::max);
                prop_assert_eq!(reader.block_max(b, score).unwrap(), best, "block {}", b);
            }
            // The lead scores best under the reference scoring, and
            // bounds every row's normalised frequency by its scale under
            // others (a part's statistics apart from the table's).
            let reference = TermScorer::reference(STATS);
            let tf = |scorer: &TermScorer, p: &Posting| {
                scorer.tf(p.positions.len() as f32, encode_length(p.len))
            };
            let (freq, code) = reader.lead(b).unwrap();
            let lead = reference.tf(freq as f32, code);
            let best = block.iter().map(|p| tf(&reference, p)).fold(0f32, f32::max);
            prop_assert_eq!(lead, best, "block {}", b);
            let (freq, code) = reader.list_lead().unwrap();
            let best = list.iter().map(|p| tf(&reference, p)).fold(0f32, f32::max);
            prop_assert_eq!(reference.tf(freq as f32, code), best);
            prop_assert!(reference.same_norms(&reference));
            for (k1, b_param, rows, total_len) in
                [(1.2f32, 0.75f32, 1000, 29_000), (1.2, 0.75, 1000, 31_000), (0.3, 1.0, 7, 9), (3.0, 0.0, 1, 500)]
            {
                let stats = ColumnStats { rows, total_len };
                let scorer = TermScorer::with_weight(Bm25::new(k1, b_param).unwrap(), stats, 1.0);
                let scale = scorer.norms_scale(&reference).unwrap();
                for p in block {
                    prop_assert!(tf(&scorer, p) <= scale * lead, "block {} row {}", b, p.row);
                }
            }
        }
        prop_assert_eq!(reader.block_of(list.last().unwrap().row + 1), None);
    }

    #[test]
    fn seek_lands_on_the_first_row_at_or_after_its_target(
        list in postings(),
        targets in proptest::collection::vec(0u32..400_000, 1..20),
    ) {
        let bytes = encoded(&list);
        let reader = PostingList::open(&bytes, list.len() as u32).unwrap();
        let mut targets = targets;
        targets.sort_unstable();
        let mut cursor = reader.cursor().unwrap();
        let mut positions = Vec::new();
        for target in targets {
            let expected = list.iter().find(|p| p.row >= target);
            let found = cursor.seek(target).unwrap();
            prop_assert_eq!(found, expected.map_or(END, |p| p.row), "seek {}", target);
            if let Some(p) = expected {
                prop_assert_eq!(cursor.freq() as usize, p.positions.len());
                cursor.positions(&mut positions).unwrap();
                prop_assert_eq!(&positions, &p.positions);
            }
        }
    }

    /// A list as version 3 of the text index wrote it, without the lead
    /// in its header (its blocks' impacts were in another order, which
    /// their bounds do not depend on), reads back whole and has no leads.
    #[test]
    fn version_3_lists_read_without_leads(list in postings()) {
        let mut bytes = encoded(&list);
        if list.len() >= BLOCK_LEN {
            // The header: last row, skip entries, two varints, the lead.
            let varint_end = |at: usize| at + bytes[at..].iter().position(|&b| b < 0x80).unwrap() + 1;
            let lead_at = varint_end(varint_end(4 + list.len() / BLOCK_LEN * 16));
            bytes.drain(lead_at..varint_end(lead_at) + 1);
        }
        let reader = PostingList::open_without_leads(&bytes, list.len() as u32).unwrap();
        let mut cursor = reader.cursor().unwrap();
        let mut positions = Vec::new();
        for p in &list {
            prop_assert_eq!(cursor.row(), p.row);
            prop_assert_eq!(cursor.freq() as usize, p.positions.len());
            cursor.positions(&mut positions).unwrap();
            prop_assert_eq!(&positions, &p.positions);
            cursor.advance().unwrap();
        }
        prop_assert_eq!(cursor.row(), END);
        let reference = TermScorer::reference(STATS);
        for (b, block) in list.chunks(BLOCK_LEN).enumerate() {
            let best = block
                .iter()
                .map(|p| reference.tf(p.positions.len() as f32, encode_length(p.len)))
                .fold(0f32, f32::max);
            let bound = reader.block_max(b, |freq, code| reference.tf(freq as f32, code));
            prop_assert_eq!(bound.unwrap(), best);
            prop_assert!(reader.lead(b).is_err());
        }
        prop_assert!(reader.list_lead().is_err());
    }

    /// One encoder reused from list to list writes each as a fresh one
    /// does: nothing of a list is left in its buffers for the next.
    #[test]
    fn a_reused_encoder_writes_each_list_as_a_fresh_one(
        lists in proptest::collection::vec(postings(), 1..5),
    ) {
        let mut encoder = Encoder::new(STATS);
        for list in &lists {
            let reused = encoded_by(list, |postings, len_of, out| {
                encoder.encode(postings, len_of, out)
            });
            prop_assert_eq!(reused, encoded(list));
        }
    }

    /// Truncated or altered bytes: open, iteration and seeks return errors
    /// or values, and never panic or loop.
    #[test]
    fn damaged_lists_never_panic(
        list in postings(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        claimed in proptest::option::of(1u32..1000),
    ) {
        let mut bytes = encoded(&list);
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        // A damaged term info may claim another number of rows.
        let rows = claimed.unwrap_or(list.len() as u32);
        let Ok(reader) = PostingList::open(&bytes, rows) else {
            return Ok(());
        };
        let Ok(mut cursor) = reader.cursor() else {
            return Ok(());
        };
        let mut positions = Vec::new();
        for _ in 0..list.len() + BLOCK_LEN {
            if cursor.row() == END || cursor.positions(&mut positions).is_err() {
                break;
            }
            if cursor.advance().is_err() {
                break;
            }
        }
        if let Ok(mut cursor) = reader.cursor() {
            let _ = cursor.seek(list[list.len() / 2].row);
        }
        let _ = reader.list_lead();
        for b in 0..reader.blocks() {
            let _ = reader.lead(b);
            let _ = reader.block_max(b, |freq, code| freq as f32 / f32::from(code));
        }
    }
}

#[test]
fn an_empty_or_short_list_is_an_error() {
    assert!(PostingList::open(&[], 1).is_err());
    assert!(PostingList::open(&[0, 0], 0).is_err());
    // One row whose frequency is missing; a block's header without skips.
    assert!(PostingList::open(&[5], 1).is_err());
    assert!(PostingList::open(&200u32.to_le_bytes(), 200).is_err());
}
