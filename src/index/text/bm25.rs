//! BM25 as Lucene computes it (`BM25Similarity`, Lucene 8 and later), so a
//! row scores what it would in Lucene given the same statistics:
//!
//! ```text
//! idf(t)    = ln(1 + (N - df + 0.5) / (df + 0.5))
//! score     = boost · idf · tf / (tf + k1 · (1 - b + b · len / avg_len))
//! ```
//! `N` is the number of rows with a value in the column, `df` how many
//! hold the term, `avg_len` the mean length in tokens; over the whole
//! snapshot, deleted rows excluded. As in Lucene, a row's length is kept
//! in one byte (see [`encode_length`]): exact up to 40 tokens, then with
//! four significant bits, rounded down; scores use the decoded length,
//! and the arithmetic is `f32` in Lucene's order of operations.

use crate::error::{Error, Result};

/// Lucene's defaults.
pub const DEFAULT_K1: f32 = 1.2;
pub const DEFAULT_B: f32 = 0.75;

/// Codes below this stand for themselves (Lucene's
/// `SmallFloat.NUM_FREE_VALUES`: 255 minus the code of `i32::MAX`); the
/// codes above hold `len - 24` as a 4-bit float, exact up to 40.
const FREE_VALUES: u32 = 24;

/// The BM25 parameters of a column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bm25 {
    pub k1: f32,
    pub b: f32,
}

impl Default for Bm25 {
    fn default() -> Self {
        Bm25 {
            k1: DEFAULT_K1,
            b: DEFAULT_B,
        }
    }
}

impl Bm25 {
    /// Checked parameters: `k1` finite and at least 0, `b` within 0 to 1
    /// (errors name the options `bm25.k1` and `bm25.b`).
    pub fn new(k1: f32, b: f32) -> Result<Self> {
        if !(k1.is_finite() && k1 >= 0.0) {
            return Err(Error::option(
                "bm25.k1",
                format!("must be a number of at least 0, not {k1}"),
            ));
        }
        if !(0.0..=1.0).contains(&b) {
            return Err(Error::option(
                "bm25.b",
                format!("must be between 0 and 1, not {b}"),
            ));
        }
        Ok(Bm25 { k1, b })
    }
}

/// What BM25 needs to know about a column over the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ColumnStats {
    /// Rows with a value.
    pub rows: u64,
    /// Their lengths summed.
    pub total_len: u64,
}

impl ColumnStats {
    /// The mean length, 1 for a column with no rows (as in Lucene).
    pub fn avg_len(&self) -> f32 {
        match self.rows {
            0 => 1.0,
            n => (self.total_len as f64 / n as f64) as f32,
        }
    }
}

/// Lucene's inverse document frequency.
pub fn idf(rows: u64, doc_freq: u64) -> f32 {
    let (n, df) = (rows as f64, doc_freq as f64);
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln() as f32
}

/// A length in one byte (Lucene's `SmallFloat.intToByte4`): exact up to
/// 40, above a 4-bit float rounded down. Monotone.
pub fn encode_length(len: u32) -> u8 {
    let len = len.min(i32::MAX as u32);
    match len < FREE_VALUES {
        true => len as u8,
        false => (FREE_VALUES + int4(len - FREE_VALUES)) as u8,
    }
}

/// The length each code stands for, as a float.
static CODE_LENGTHS: std::sync::LazyLock<[f32; 256]> =
    std::sync::LazyLock::new(|| std::array::from_fn(|code| decode_length(code as u8) as f32));

/// The length a byte from [`encode_length`] stands for.
pub fn decode_length(code: u8) -> u32 {
    let code = u32::from(code);
    match code < FREE_VALUES {
        true => code,
        false => FREE_VALUES + int4_to_u32(code - FREE_VALUES),
    }
}

/// Four significant bits and a shift (`SmallFloat.longToInt4`).
fn int4(value: u32) -> u32 {
    let bits = 32 - value.leading_zeros();
    if bits < 4 {
        return value;
    }
    let shift = bits - 4;
    ((value >> shift) & 0x07) | ((shift + 1) << 3)
}

fn int4_to_u32(code: u32) -> u32 {
    let bits = code & 0x07;
    match (code >> 3).checked_sub(1) {
        None => bits,
        Some(shift) => (bits | 0x08) << shift,
    }
}

/// Scores one term's rows: BM25 with the term's weight and the column's
/// length normalisation precomputed for each of the 256 length codes.
#[derive(Debug, Clone)]
pub struct TermScorer {
    weight: f32,
    /// `1 / (k1 · (1 - b + b · len / avg_len))` per length code.
    norm_inverse: [f32; 256],
}

impl TermScorer {
    /// A scorer for a term in `doc_freq` rows of a column with `stats`,
    /// its score multiplied by `boost`.
    pub fn new(bm25: Bm25, stats: ColumnStats, doc_freq: u64, boost: f32) -> Self {
        Self::with_weight(bm25, stats, boost * idf(stats.rows, doc_freq))
    }

    /// A scorer whose weight (boost times idf) is given: a phrase weighs
    /// the sum of its terms' idfs, as in Lucene.
    pub fn with_weight(bm25: Bm25, stats: ColumnStats, weight: f32) -> Self {
        let avg_len = stats.avg_len();
        let mut norm_inverse = [0f32; 256];
        // The lengths decoded once per process: decoding them took most
        // of a query's setup, and the loop over the table vectorises.
        for (slot, &len) in norm_inverse.iter_mut().zip(CODE_LENGTHS.iter()) {
            *slot = 1.0 / (bm25.k1 * ((1.0 - bm25.b) + bm25.b * len / avg_len));
        }
        TermScorer {
            weight,
            norm_inverse,
        }
    }

    /// The scoring a part's index picks its blocks' leads by: BM25's
    /// default parameters and the part's own statistics (`stats`), weight 1.
    pub fn reference(stats: ColumnStats) -> Self {
        Self::with_weight(Bm25::default(), stats, 1.0)
    }

    /// Whether this scorer's length factors are `other`'s to the bit:
    /// then both order (frequency, length code) pairs alike.
    pub fn same_norms(&self, other: &TermScorer) -> bool {
        self.norm_inverse == other.norm_inverse
    }

    /// At most how many times a row's normalised frequency under this
    /// scorer is its normalised frequency under `reference`: the largest
    /// ratio of their length factors, rounded up past the roundings of
    /// the products it scales (`None` when that is not finite: a `k1` of
    /// 0). Rows of no tokens hold no term, so their factor (infinite when
    /// `b` is 1) is left out.
    pub fn norms_scale(&self, reference: &TermScorer) -> Option<f32> {
        let ratio = self.norm_inverse[1..]
            .iter()
            .zip(&reference.norm_inverse[1..])
            .map(|(query, reference)| query / reference)
            .fold(0f32, f32::max);
        let scale = ratio * (1.0 + 1e-6);
        scale.is_finite().then_some(scale)
    }

    /// This scorer with another weight (the length normalisation kept: it
    /// depends on the column, not the term).
    pub fn with_same_norms(&self, weight: f32) -> Self {
        TermScorer {
            weight,
            norm_inverse: self.norm_inverse,
        }
    }

    /// The score of a row holding the term `freq` times, of length code
    /// `norm` (Lucene's `weight - weight / (1 + freq · norm_inverse)`).
    #[inline]
    pub fn score(&self, freq: u32, norm: u8) -> f32 {
        self.score_freq(freq as f32, norm)
    }

    /// [`Self::score`] for a fractional frequency (a sloppy phrase's).
    #[inline]
    pub fn score_freq(&self, freq: f32, norm: u8) -> f32 {
        self.score_tf(self.tf(freq, norm))
    }

    /// The frequency normalised by the length, `freq · norm_inverse`: the
    /// score grows with it, computed as here (every step of
    /// [`Self::score_tf`] rounds monotonically), so the row with the
    /// largest has the largest score.
    #[inline]
    pub fn tf(&self, freq: f32, norm: u8) -> f32 {
        freq * self.norm_inverse[norm as usize]
    }

    /// The score of a normalised frequency from [`Self::tf`].
    #[inline]
    pub fn score_tf(&self, tf: f32) -> f32 {
        self.weight - self.weight / (1.0 + tf)
    }

    /// Scores a block of rows into `out`, one loop the compiler can
    /// vectorise: the per-row lookup is the only gather.
    pub fn score_block(&self, freqs: &[u32], norms: &[u8], out: &mut [f32]) {
        let n = freqs.len().min(norms.len()).min(out.len());
        let (freqs, norms, out) = (&freqs[..n], &norms[..n], &mut out[..n]);
        let weight = self.weight;
        for i in 0..n {
            let x = freqs[i] as f32 * self.norm_inverse[norms[i] as usize];
            out[i] = weight - weight / (1.0 + x);
        }
    }
}
