//! Type-aware transforms applied to a granule's fixed-width values before the
//! block compressor, as in ClickHouse's specialised codecs:
//!
//! - `delta`: each value minus the previous one (same width). Sorted or
//!   slowly changing integers become small numbers a compressor packs well.
//! - `doubledelta`: the change of the delta, written as zigzag varints.
//!   Regular series (timestamps at a fixed interval) cost about a byte a value.
//! - `gorilla`: Facebook Gorilla's XOR encoding of floats: each value is
//!   XORed with the previous one and only the meaningful bits are written.
//! - `t64`: frame-of-reference bit packing: per frame of 256 values, the
//!   minimum, the offsets' greatest common divisor, and each offset divided
//!   by it in as few bits as needed (decimal quantities stored in cents,
//!   timestamps in whole seconds as nanoseconds, pack to their real range).
//!
//! All four are lossless on any bit pattern (null slots included) and never
//! panic on corrupt input: decoding reports a description instead.

use std::fmt;

use arrow::buffer::Buffer;

/// The numeric ids are part of the on-disk format: never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    Delta,
    DoubleDelta,
    Gorilla,
    T64,
}

/// How the bits of a value are interpreted, which decides what a transform
/// may do with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Unsigned,
    Signed,
    Float,
}

/// Values per `t64` frame: small enough to follow local ranges, large
/// enough that the per-frame header (minimum and width) costs under 4%.
const T64_FRAME: usize = 256;

impl Transform {
    pub(crate) fn id(self) -> u8 {
        match self {
            Transform::Delta => 1,
            Transform::DoubleDelta => 2,
            Transform::Gorilla => 3,
            Transform::T64 => 4,
        }
    }

    pub(crate) fn from_id(id: u8) -> Option<Transform> {
        match id {
            1 => Some(Transform::Delta),
            2 => Some(Transform::DoubleDelta),
            3 => Some(Transform::Gorilla),
            4 => Some(Transform::T64),
            _ => None,
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Transform> {
        match name {
            "delta" => Some(Transform::Delta),
            "doubledelta" => Some(Transform::DoubleDelta),
            "gorilla" => Some(Transform::Gorilla),
            "t64" => Some(Transform::T64),
            _ => None,
        }
    }

    /// Whether this transform can encode values of `kind`.
    pub fn accepts(self, kind: ValueKind) -> bool {
        match self {
            Transform::Gorilla => kind == ValueKind::Float,
            _ => kind != ValueKind::Float,
        }
    }

    /// Whether the output is again fixed-width values another transform can
    /// take (only `delta`; the others write bit streams or varints).
    pub fn keeps_width(self) -> bool {
        self == Transform::Delta
    }

    /// The kind of the values this transform outputs (for the next stage).
    pub fn output_kind(self) -> ValueKind {
        ValueKind::Signed
    }

    /// Appends the encoded form of `values` (`width`-byte little-endian
    /// values) to `out`.
    pub fn encode(self, values: &[u8], width: usize, kind: ValueKind, out: &mut Vec<u8>) {
        match width {
            1 => encode_words::<u8>(self, values, kind, out),
            2 => encode_words::<u16>(self, values, kind, out),
            4 => encode_words::<u32>(self, values, kind, out),
            8 => encode_words::<u64>(self, values, kind, out),
            _ => encode_words::<u128>(self, values, kind, out),
        }
    }

    /// Decodes `rows` values of `width` bytes from `input` into `out`
    /// (exactly `rows * width` bytes). `input` must be fully consumed.
    pub fn decode(
        self,
        input: &[u8],
        width: usize,
        kind: ValueKind,
        out: &mut [u8],
    ) -> Result<(), String> {
        if width == 0 || !out.len().is_multiple_of(width) {
            return Err("output is not a whole number of values".into());
        }
        let values = decode_chain(&[self], input, out.len() / width, width, kind)?;
        out.copy_from_slice(values.as_slice());
        Ok(())
    }
}

/// Decodes `rows` values of `width` bytes that were encoded by `transforms`
/// (in the order they were applied) straight into an Arrow buffer: each
/// value is written once, into memory never zeroed first.
pub fn decode_chain(
    transforms: &[Transform],
    input: &[u8],
    rows: usize,
    width: usize,
    kind: ValueKind,
) -> Result<Buffer, String> {
    match width {
        1 => decode_words::<u8>(transforms, input, rows, kind).map(u8::into_buffer),
        2 => decode_words::<u16>(transforms, input, rows, kind).map(u16::into_buffer),
        4 => decode_words::<u32>(transforms, input, rows, kind).map(u32::into_buffer),
        8 => decode_words::<u64>(transforms, input, rows, kind).map(u64::into_buffer),
        16 => decode_words::<u128>(transforms, input, rows, kind).map(u128::into_buffer),
        _ => Err(format!("no transform for {width}-byte values")),
    }
}

/// Unpacks `rows` t64-packed unsigned 16-bit values (dictionary indices).
pub fn decode_t64_u16(input: &[u8], rows: usize) -> Result<Vec<u16>, String> {
    decode_t64::<u16>(input, ValueKind::Unsigned, rows)
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transform::Delta => "delta",
            Transform::DoubleDelta => "doubledelta",
            Transform::Gorilla => "gorilla",
            Transform::T64 => "t64",
        })
    }
}

/// An unsigned machine word of 1 to 16 bytes; all arithmetic wraps.
trait Word: Copy + Eq + Ord + Default + 'static {
    const BYTES: usize;
    const BITS: u32;
    fn load(bytes: &[u8]) -> Self;
    fn store(self, out: &mut [u8]);
    fn to_u128(self) -> u128;
    fn from_u128(v: u128) -> Self;
    fn sub(self, other: Self) -> Self;
    fn add(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    fn xor(self, other: Self) -> Self;
    fn leading_zeros(self) -> u32;
    fn trailing_zeros(self) -> u32;
    /// Flips the sign bit: maps two's complement order onto unsigned order.
    fn flip_sign(self) -> Self;
    fn from_u64(v: u64) -> Self;
    /// The values as an Arrow buffer, without copying them.
    fn into_buffer(values: Vec<Self>) -> Buffer;
}

macro_rules! impl_word {
    // `$native`: the Arrow native type of the same layout.
    ($t:ty, $native:ty) => {
        impl Word for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            const BITS: u32 = <$t>::BITS;
            #[inline]
            fn load(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes[..Self::BYTES].try_into().unwrap())
            }
            #[inline]
            fn store(self, out: &mut [u8]) {
                out[..Self::BYTES].copy_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn to_u128(self) -> u128 {
                self as u128
            }
            #[inline]
            fn from_u128(v: u128) -> Self {
                v as $t
            }
            #[inline]
            fn sub(self, other: Self) -> Self {
                self.wrapping_sub(other)
            }
            #[inline]
            fn add(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
            #[inline]
            fn mul(self, other: Self) -> Self {
                self.wrapping_mul(other)
            }
            #[inline]
            fn xor(self, other: Self) -> Self {
                self ^ other
            }
            #[inline]
            fn leading_zeros(self) -> u32 {
                <$t>::leading_zeros(self)
            }
            #[inline]
            fn trailing_zeros(self) -> u32 {
                <$t>::trailing_zeros(self)
            }
            #[inline]
            fn flip_sign(self) -> Self {
                self ^ (1 << (Self::BITS - 1))
            }
            #[inline]
            fn from_u64(v: u64) -> Self {
                v as $t
            }
            fn into_buffer(values: Vec<Self>) -> Buffer {
                // Same size and alignment: the conversion happens in place.
                let native: Vec<$native> = values.into_iter().map(|v| v as $native).collect();
                Buffer::from_vec(native)
            }
        }
    };
}
impl_word!(u8, u8);
impl_word!(u16, u16);
impl_word!(u32, u32);
impl_word!(u64, u64);
impl_word!(u128, i128);

fn words<W: Word>(values: &[u8]) -> impl Iterator<Item = W> + '_ {
    values.chunks_exact(W::BYTES).map(W::load)
}

fn encode_words<W: Word>(t: Transform, values: &[u8], kind: ValueKind, out: &mut Vec<u8>) {
    match t {
        Transform::Delta => {
            let mut prev = W::default();
            for v in words::<W>(values) {
                let start = out.len();
                out.resize(start + W::BYTES, 0);
                v.sub(prev).store(&mut out[start..]);
                prev = v;
            }
        }
        Transform::DoubleDelta => encode_double_delta::<W>(values, out),
        Transform::Gorilla => encode_gorilla::<W>(values, out),
        Transform::T64 => encode_t64::<W>(values, kind, out),
    }
}

/// Decodes through the chain: the last transform applied reads the bytes,
/// and any before it (only `delta` may precede another) work in place.
fn decode_words<W: Word>(
    transforms: &[Transform],
    input: &[u8],
    rows: usize,
    kind: ValueKind,
) -> Result<Vec<W>, String> {
    let Some((&last, rest)) = transforms.split_last() else {
        return Err("no transform to decode".into());
    };
    // The kind each transform saw when encoding.
    let kind_before = |i: usize| match i {
        0 => kind,
        _ => transforms[i - 1].output_kind(),
    };
    let mut values = decode_stage::<W>(last, input, rows, kind_before(rest.len()))
        .map_err(|e| format!("{last}: {e}"))?;
    for &t in rest.iter().rev() {
        if !t.keeps_width() {
            return Err(format!("'{t}' cannot precede another transform"));
        }
        undo_delta(&mut values);
    }
    Ok(values)
}

fn decode_stage<W: Word>(
    t: Transform,
    input: &[u8],
    rows: usize,
    kind: ValueKind,
) -> Result<Vec<W>, String> {
    match t {
        Transform::Delta => {
            if Some(input.len()) != rows.checked_mul(W::BYTES) {
                return Err(format!(
                    "delta block has {} bytes, expected {rows} values",
                    input.len()
                ));
            }
            let mut values: Vec<W> = words::<W>(input).collect();
            undo_delta(&mut values);
            Ok(values)
        }
        Transform::DoubleDelta => decode_double_delta::<W>(input, rows),
        Transform::Gorilla => decode_gorilla::<W>(input, rows),
        Transform::T64 => decode_t64::<W>(input, kind, rows),
    }
}

/// Running sums: each delta becomes the value it was taken from.
fn undo_delta<W: Word>(values: &mut [W]) {
    let mut prev = W::default();
    for v in values {
        prev = prev.add(*v);
        *v = prev;
    }
}

/// The signed value of a `W`-bit two's complement word.
fn signed<W: Word>(w: W) -> i128 {
    let shift = 128 - W::BITS;
    ((w.to_u128() << shift) as i128) >> shift
}

fn zigzag(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

fn unzigzag(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

fn put_varint(mut v: u128, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &[u8], pos: &mut usize) -> Result<u128, String> {
    let mut v: u128 = 0;
    for shift in (0..128).step_by(7) {
        let byte = *input.get(*pos).ok_or("varint truncated")?;
        *pos += 1;
        v |= u128::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 128 bits".into())
}

fn encode_double_delta<W: Word>(values: &[u8], out: &mut Vec<u8>) {
    let mut prev = W::default();
    let mut prev_delta = W::default();
    for (i, v) in words::<W>(values).enumerate() {
        if i == 0 {
            let start = out.len();
            out.resize(start + W::BYTES, 0);
            v.store(&mut out[start..]);
        } else {
            let delta = v.sub(prev);
            put_varint(zigzag(signed(delta.sub(prev_delta))), out);
            prev_delta = delta;
        }
        prev = v;
    }
}

fn decode_double_delta<W: Word>(input: &[u8], rows: usize) -> Result<Vec<W>, String> {
    let mut values = Vec::with_capacity(rows.min(input.len() + 1));
    if rows == 0 {
        expect_consumed(input, 0)?;
        return Ok(values);
    }
    if input.len() < W::BYTES {
        return Err("doubledelta block truncated".into());
    }
    let mut prev = W::load(input);
    values.push(prev);
    let mut pos = W::BYTES;
    let mut delta = W::default();
    for _ in 1..rows {
        let dd = W::from_u128(unzigzag(get_varint(input, &mut pos)?) as u128);
        delta = delta.add(dd);
        prev = prev.add(delta);
        values.push(prev);
    }
    expect_consumed(input, pos)?;
    Ok(values)
}

fn expect_consumed(input: &[u8], pos: usize) -> Result<(), String> {
    if pos == input.len() {
        Ok(())
    } else {
        Err(format!(
            "{} bytes left after the last value",
            input.len() - pos
        ))
    }
}

/// Writes bit fields least-significant bit first.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u128,
    filled: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter {
            out,
            acc: 0,
            filled: 0,
        }
    }

    /// Writes the low `bits` bits of `value` (`bits` ≤ 128).
    fn put(&mut self, value: u128, bits: u32) {
        if bits > 64 {
            self.put(value, 64);
            self.put(value >> 64, bits - 64);
            return;
        }
        if bits == 0 {
            return;
        }
        let value = value & (u128::MAX >> (128 - bits));
        self.acc |= value << self.filled;
        self.filled += bits;
        while self.filled >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.filled -= 8;
        }
    }

    fn finish(mut self) {
        if self.filled > 0 {
            self.out.push(self.acc as u8);
            self.filled = 0;
        }
    }
}

/// Reads bit fields written by [`BitWriter`], with bounds checks.
struct BitReader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(input: &'a [u8]) -> Self {
        BitReader { input, pos: 0 }
    }

    /// Reads `bits` ≤ 64 bits.
    #[inline]
    fn get64(&mut self, bits: u32) -> Result<u64, String> {
        if bits == 0 {
            return Ok(0);
        }
        let end = self.pos + bits as usize;
        if end > self.input.len() * 8 {
            return Err("bit stream truncated".into());
        }
        let byte = self.pos / 8;
        let shift = self.pos % 8;
        let mut word = [0u8; 16];
        let avail = (self.input.len() - byte).min(16);
        word[..avail].copy_from_slice(&self.input[byte..byte + avail]);
        let v = (u128::from_le_bytes(word) >> shift) as u64;
        self.pos = end;
        Ok(if bits == 64 {
            v
        } else {
            v & ((1u64 << bits) - 1)
        })
    }

    fn get(&mut self, bits: u32) -> Result<u128, String> {
        if bits > 64 {
            let low = self.get64(64)?;
            let high = self.get64(bits - 64)?;
            return Ok(u128::from(low) | (u128::from(high) << 64));
        }
        self.get64(bits).map(u128::from)
    }

    /// Succeeds when only the final byte's padding is left.
    fn finish(&self) -> Result<(), String> {
        if self.pos.div_ceil(8) == self.input.len() {
            Ok(())
        } else {
            Err("bytes left after the last value".into())
        }
    }
}

fn encode_gorilla<W: Word>(values: &[u8], out: &mut Vec<u8>) {
    // Field widths: leading zeros and meaningful length each fit in log2(BITS).
    let field = W::BITS.trailing_zeros();
    let mut bits = BitWriter::new(out);
    let mut prev = W::default();
    let mut window: Option<(u32, u32)> = None; // (leading, trailing) zeros
    for (i, v) in words::<W>(values).enumerate() {
        if i == 0 {
            bits.put(v.to_u128(), W::BITS);
            prev = v;
            continue;
        }
        let x = v.xor(prev);
        prev = v;
        if x == W::default() {
            bits.put(0, 1);
            continue;
        }
        bits.put(1, 1);
        let (lead, trail) = (x.leading_zeros(), x.trailing_zeros());
        match window {
            Some((wl, wt)) if lead >= wl && trail >= wt => {
                bits.put(0, 1);
                bits.put(x.to_u128() >> wt, W::BITS - wl - wt);
            }
            _ => {
                let meaningful = W::BITS - lead - trail;
                bits.put(1, 1);
                bits.put(u128::from(lead), field);
                bits.put(u128::from(meaningful - 1), field);
                bits.put(x.to_u128() >> trail, meaningful);
                window = Some((lead, trail));
            }
        }
    }
    bits.finish();
}

fn decode_gorilla<W: Word>(input: &[u8], rows: usize) -> Result<Vec<W>, String> {
    let field = W::BITS.trailing_zeros();
    let mut bits = BitReader::new(input);
    let mut prev = W::default();
    let mut window: Option<(u32, u32)> = None;
    // Every value takes at least a bit: a corrupt count cannot over-allocate.
    let mut values = Vec::with_capacity(rows.min(input.len() * 8));
    for i in 0..rows {
        if i > 0 && bits.get64(1)? == 1 {
            let (lead, trail) = if bits.get64(1)? == 0 {
                window.ok_or("gorilla block reuses a window it never set")?
            } else {
                let lead = bits.get64(field)? as u32;
                let meaningful = bits.get64(field)? as u32 + 1;
                if lead + meaningful > W::BITS {
                    return Err("gorilla window wider than the value".into());
                }
                let w = (lead, W::BITS - lead - meaningful);
                window = Some(w);
                w
            };
            let x = bits.get(W::BITS - lead - trail)? << trail;
            prev = prev.xor(W::from_u128(x));
        } else if i == 0 {
            prev = W::from_u128(bits.get(W::BITS)?);
        }
        values.push(prev);
    }
    bits.finish()?;
    Ok(values)
}

/// Bits needed to hold `v`.
fn bit_width(v: u128) -> u32 {
    128 - v.leading_zeros()
}

fn encode_t64<W: Word>(values: &[u8], kind: ValueKind, out: &mut Vec<u8>) {
    let order = |w: W| {
        if kind == ValueKind::Signed {
            w.flip_sign()
        } else {
            w
        }
    };
    let all: Vec<W> = words::<W>(values).map(order).collect();
    for frame in all.chunks(T64_FRAME) {
        let min = *frame.iter().min().unwrap();
        let divisor = frame_gcd(frame.iter().map(|v| v.sub(min).to_u128()));
        let max = *frame.iter().max().unwrap();
        let width = bit_width(max.sub(min).to_u128() / divisor);
        let start = out.len();
        out.resize(start + W::BYTES, 0);
        min.store(&mut out[start..]);
        out.push(width as u8);
        put_varint(divisor, out);
        let mut bits = BitWriter::new(out);
        for &v in frame {
            bits.put(v.sub(min).to_u128() / divisor, width);
        }
        bits.finish();
    }
}

/// The greatest common divisor of a frame's offsets from its minimum (1 when
/// all are zero, so the divisor is never 0).
fn frame_gcd(offsets: impl Iterator<Item = u128>) -> u128 {
    let mut g: u128 = 0;
    for d in offsets {
        if g == 1 {
            return 1;
        }
        // Most offsets are multiples of the running divisor: one remainder.
        if g == 0 || rem(d, g) != 0 {
            g = gcd(g, d);
        }
    }
    g.max(1)
}

/// `a % b` (b > 0), in 64-bit arithmetic when both fit: u128 division is
/// several times slower.
fn rem(a: u128, b: u128) -> u128 {
    match (u64::try_from(a), u64::try_from(b)) {
        (Ok(a), Ok(b)) => u128::from(a % b),
        _ => a % b,
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, rem(a, b));
    }
    a
}

fn decode_t64<W: Word>(input: &[u8], kind: ValueKind, rows: usize) -> Result<Vec<W>, String> {
    let mut pos = 0;
    // A frame header takes at least 2 bytes: a corrupt count cannot
    // over-allocate.
    let mut values = Vec::with_capacity(rows.min(input.len() / 2 * T64_FRAME));
    let mut remaining = rows;
    while remaining > 0 {
        let n = remaining.min(T64_FRAME);
        remaining -= n;
        if input.len() < pos + W::BYTES + 1 {
            return Err("t64 frame header truncated".into());
        }
        let min = W::load(&input[pos..]);
        let width = u32::from(input[pos + W::BYTES]);
        if width > W::BITS {
            return Err(format!(
                "t64 frame of {width} bits in a {}-bit type",
                W::BITS
            ));
        }
        pos += W::BYTES + 1;
        let divisor = W::from_u128(get_varint(input, &mut pos)?);
        let len = (n * width as usize).div_ceil(8);
        let packed = input
            .get(pos..pos + len)
            .ok_or("t64 frame values truncated")?;
        pos += len;
        // Adding the sign bit flips it: the signed flip folds into the base.
        let base = match kind {
            ValueKind::Signed => min.flip_sign(),
            _ => min,
        };
        if width > 57 {
            let mut bits = BitReader::new(packed);
            for _ in 0..n {
                values.push(base.add(W::from_u128(bits.get(width)?).mul(divisor)));
            }
        } else if divisor == W::from_u64(1) {
            unpack_frame(packed, n, width, &mut values, |offset| {
                base.add(W::from_u64(offset))
            });
        } else {
            unpack_frame(packed, n, width, &mut values, |offset| {
                base.add(W::from_u64(offset).mul(divisor))
            });
        }
    }
    expect_consumed(input, pos)?;
    Ok(values)
}

/// Unpacks one frame of `n` offsets of `width` ≤ 57 bits and appends
/// `value(offset)` for each. Any such field lies within the 8 bytes from its
/// first byte, so one load reads it; the last few values, whose 8 bytes would
/// run past the frame, are read from a zero-padded copy.
#[inline]
fn unpack_frame<W: Word>(
    packed: &[u8],
    n: usize,
    width: u32,
    values: &mut Vec<W>,
    value: impl Fn(u64) -> W,
) {
    if width == 0 {
        values.extend(std::iter::repeat_n(value(0), n));
        return;
    }
    let width = width as usize;
    let mask = (1u64 << width) - 1;
    // Values whose 8-byte load stays inside `packed`.
    let direct = match packed.len() {
        len if len >= 8 => (((len - 7) * 8 - 1) / width + 1).min(n),
        _ => 0,
    };
    values.extend((0..direct).map(|i| {
        let bit = i * width;
        let word = u64::from_le_bytes(packed[bit / 8..bit / 8 + 8].try_into().unwrap());
        value((word >> (bit % 8)) & mask)
    }));
    let tail_start = packed.len().saturating_sub(8);
    let mut tail = [0u8; 16];
    tail[..packed.len() - tail_start].copy_from_slice(&packed[tail_start..]);
    values.extend((direct..n).map(|i| {
        let bit = i * width;
        let at = bit / 8 - tail_start;
        let word = u64::from_le_bytes(tail[at..at + 8].try_into().unwrap());
        value((word >> (bit % 8)) & mask)
    }));
}
