//! dlib's serialization primitives (dlib/serialize.h, dlib/float_details.h): the integer,
//! float, string and tensor encodings that the module above describes.

use anyhow::{Context, Result, bail, ensure};

/// A cursor over dlib-serialized bytes (also used by the shape predictor converter).
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// A `matrix<float,0,1>` (a column vector; dlib writes negated dimensions).
    pub(crate) fn float_column(&mut self) -> Result<Vec<f32>> {
        let rows = self.int()?.unsigned_abs() as usize;
        let cols = self.int()?.unsigned_abs() as usize;
        ensure!(cols == 1 || rows == 0, "a {rows}x{cols} matrix where a column vector was expected");
        ensure!(rows <= 1 << 20, "implausible matrix of {rows} rows");
        (0..rows).map(|_| self.f32()).collect()
    }

    pub(crate) fn byte(&mut self) -> Result<u8> {
        let b = *self.bytes.get(self.pos).context("unexpected end of file")?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).context("unexpected end of file")?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// An integer of any C++ type (dlib's `pack_int`).
    pub(crate) fn int(&mut self) -> Result<i64> {
        let control = self.byte()?;
        let negative = control & 0x80 != 0;
        let size = (control & 0x0f) as usize;
        ensure!((1..=8).contains(&size), "invalid integer control byte {control:#04x}");
        let mut magnitude = 0u64;
        for (i, &b) in self.take(size)?.iter().enumerate() {
            magnitude |= u64::from(b) << (8 * i);
        }
        let value = i64::try_from(magnitude).with_context(|| format!("integer {magnitude} out of range"))?;
        Ok(if negative { -value } else { value })
    }

    pub(crate) fn usize(&mut self) -> Result<usize> {
        let v = self.int()?;
        usize::try_from(v).with_context(|| format!("expected a size, found {v}"))
    }

    /// A `float_details` (dlib's portable float): mantissa · 2^exponent.
    pub(crate) fn f64(&mut self) -> Result<f64> {
        let first = *self.bytes.get(self.pos).context("unexpected end of file")?;
        ensure!(
            first & 0x70 == 0,
            "a floating point number in dlib's old ASCII format (byte {first:#04x}); not supported"
        );
        let mantissa = self.int()?;
        let exponent = self.int()?;
        ensure!(i16::try_from(exponent).is_ok(), "float exponent {exponent} out of range");
        Ok(match exponent {
            32000 => f64::INFINITY,
            32001 => f64::NEG_INFINITY,
            32002 => f64::NAN,
            // mantissa has at most 53 significant bits for a double (24 for a float), so the
            // conversion is exact; scaling by a power of two is exact too (barring underflow).
            e => ldexp(mantissa as f64, e as i32),
        })
    }

    /// A float field: read as dlib reads it into a `float`.
    pub(crate) fn f32(&mut self) -> Result<f32> {
        Ok(self.f64()? as f32)
    }

    pub(crate) fn bool(&mut self) -> Result<bool> {
        match self.byte()? {
            b'1' => Ok(true),
            b'0' => Ok(false),
            other => bail!("invalid bool byte {other:#04x}"),
        }
    }

    pub(crate) fn string(&mut self) -> Result<String> {
        let len = self.usize()?;
        ensure!(len <= 1 << 16, "implausible string length {len}");
        let s = self.take(len)?;
        String::from_utf8(s.to_vec()).context("string is not UTF-8")
    }

    /// A `resizable_tensor`: its values, row-major `[num_samples, k, nr, nc]`.
    pub(crate) fn tensor(&mut self) -> Result<Vec<f32>> {
        let version = self.int()?;
        ensure!(version == 2, "tensor version {version}, expected 2");
        let mut count = 1usize;
        for _ in 0..4 {
            count = count.checked_mul(self.usize()?).context("tensor too large")?;
        }
        let bytes = self.take(count.checked_mul(4).context("tensor too large")?)?;
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// An `alias_tensor`: only its dimensions `[num_samples, k, nr, nc]`.
    pub(crate) fn alias_tensor(&mut self) -> Result<[usize; 4]> {
        let version = self.int()?;
        ensure!(version == 1, "alias_tensor version {version}, expected 1");
        Ok([self.usize()?, self.usize()?, self.usize()?, self.usize()?])
    }
}

/// `x · 2^e`, exact whenever the result is a normal number.
fn ldexp(x: f64, e: i32) -> f64 {
    // Split the scaling so that neither factor overflows for exponents of doubles.
    let half = e / 2;
    x * 2f64.powi(half) * 2f64.powi(e - half)
}
