//! BM25 against its formula computed in f64 over the decoded lengths, the
//! one-byte length code against Lucene's SmallFloat properties, and block
//! bounds that no row of the block exceeds.

use diagon::index::text::bm25::{Bm25, ColumnStats, TermScorer, decode_length, encode_length, idf};
use proptest::prelude::*;

fn reference(bm25: Bm25, stats: ColumnStats, df: u64, boost: f64, freq: u32, len: u32) -> f64 {
    let (n, df) = (stats.rows as f64, df as f64);
    let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
    let avg = stats.total_len as f64 / stats.rows as f64;
    let (k1, b) = (f64::from(bm25.k1), f64::from(bm25.b));
    let tf = f64::from(freq);
    boost * idf * tf / (tf + k1 * (1.0 - b + b * f64::from(len) / avg))
}

#[test]
fn lengths_up_to_40_are_exact_and_the_code_is_monotone() {
    for len in 0..=40 {
        assert_eq!(decode_length(encode_length(len)), len);
    }
    // Lucene's steps above 40: 41 rounds down to 40, 42 is a code.
    assert_eq!(decode_length(encode_length(41)), 40);
    assert_eq!(decode_length(encode_length(42)), 42);
    assert_eq!(encode_length(i32::MAX as u32), 255);
    assert_eq!(encode_length(u32::MAX), 255);
    let mut last = 0;
    for len in 0..100_000 {
        let code = encode_length(len);
        assert!(code >= last, "not monotone at {len}");
        last = code;
    }
    let samples = (0..100_000).chain((0..32).flat_map(|s| {
        let p = 1u32 << s;
        [p - 1, p, p.saturating_add(1)]
    }));
    for len in samples {
        let code = encode_length(len);
        // Rounded down, and the next code is above.
        assert!(decode_length(code) <= len, "{len}");
        if code < 255 {
            assert!(decode_length(code + 1) > len, "{len}");
        }
    }
}

#[test]
fn bad_parameters_name_their_option() {
    assert!(Bm25::new(1.2, 0.75).is_ok());
    for (k1, b, option) in [
        (-1.0, 0.5, "bm25.k1"),
        (f32::NAN, 0.5, "bm25.k1"),
        (1.0, 1.5, "bm25.b"),
        (1.0, -0.1, "bm25.b"),
    ] {
        let error = Bm25::new(k1, b).unwrap_err().to_string();
        assert!(error.contains(option), "{error}");
    }
}

#[test]
fn idf_is_lucenes() {
    assert!((idf(1000, 10) - (1.0f64 + 990.5 / 10.5).ln() as f32).abs() < 1e-6);
    assert!(idf(10, 10) > 0.0, "a term in every row still scores");
}

proptest! {
    #[test]
    fn scores_follow_the_formula(
        k1 in 0.1f32..3.0,
        b in 0.0f32..=1.0,
        rows in 1u64..1_000_000,
        df_share in 0.0f64..=1.0,
        avg in 1u64..500,
        boost in 0.1f64..10.0,
        freqs in proptest::collection::vec(1u32..100, 1..40),
        lens in proptest::collection::vec(0u32..5_000, 40),
    ) {
        let bm25 = Bm25::new(k1, b).unwrap();
        let stats = ColumnStats { rows, total_len: rows * avg };
        let df = ((rows as f64 * df_share) as u64).max(1);
        let scorer = TermScorer::new(bm25, stats, df, boost as f32);
        let norms: Vec<u8> = lens.iter().map(|&l| encode_length(l)).collect();
        let mut block = vec![0f32; freqs.len()];
        scorer.score_block(&freqs, &norms, &mut block);
        for (i, &freq) in freqs.iter().enumerate() {
            let expected = reference(bm25, stats, df, f64::from(boost as f32), freq, decode_length(norms[i]));
            let got = scorer.score(freq, norms[i]);
            // Lucene's f32 `weight - weight / (1 + x)` loses a few ulps of
            // the weight when a score is a small share of it.
            let weight = boost * f64::from(idf(rows, df));
            let tolerance = 1e-5 * expected + 4.0 * f64::from(f32::EPSILON) * weight;
            prop_assert!((f64::from(got) - expected).abs() <= tolerance,
                "freq {} len {}: {} against {}", freq, lens[i], got, expected);
            prop_assert_eq!(block[i], got);
        }
    }
}
