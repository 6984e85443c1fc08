//! Area resampling of an RGB image into networks' inputs, done natively for guests (the
//! `refacen:face/area` interface, `wasi_nn::area`): torch's `interpolate(mode="area")`
//! (adaptive average pooling), output cell i covering input cells [floor(i·in/out),
//! ceil((i+1)·in/out)) on each axis, normalized to (v − 127.5) / 128, laid out
//! `[height][width][3]`.
//!
//! A detector's image pyramid and crops are most of its own work: in WebAssembly they took
//! 24 ms per photo of obama3.jpg (1434x2333), 8 ms more than the same code natively, and
//! their 17 MB of levels were copied out of the guest again (2026-12-06, 2-core VM). Here
//! they run natively, into values that stay in the host.
//!
//! The sums come from a summed-area table kept modulo 2^32: a rectangle's sum is the wrapping
//! combination of four entries, exact whenever the true sum fits in 32 bits, which holds for
//! every rectangle of at most 2^32 / 255 pixels (16.8 million). So an output pixel may average
//! at most that many (a 4100x4100 window: far beyond any pyramid level's or crop's).

use refacen_nn::Deadline;

/// Most pixels one output pixel may average: the sum of one channel over them fits in 32
/// bits, so the table's wrapping sums give it exactly.
pub const MAX_WINDOW_PIXELS: u64 = (u32::MAX / 255) as u64;

/// A resampled size, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub width: usize,
    pub height: usize,
}

/// A rectangle of an image: left, top, width, height, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// What is wrong with a request, for the guest that made it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AreaError {
    #[error("an image of {width}x{height} pixels has {expected} bytes of RGB, got {got}")]
    ImageBytes { width: usize, height: usize, expected: u128, got: usize },
    #[error("an image of {width}x{height} pixels is empty, or its table too large to address")]
    ImageSize { width: usize, height: usize },
    #[error("{what} {index} is {width}x{height}: a resampled size must be at least 1x1")]
    EmptySize { what: &'static str, index: usize, width: usize, height: usize },
    #[error(
        "{what} {index}: an output pixel would average up to {pixels} pixels, over the {MAX_WINDOW_PIXELS} \
         whose sums fit in 32 bits"
    )]
    Window { what: &'static str, index: usize, pixels: u64 },
    #[error(
        "region {index} ({x}, {y}, {width}x{height}) is empty or leaves the {image_width}x{image_height} image"
    )]
    Region {
        index: usize,
        x: usize,
        y: usize,
        width: usize,
        height: usize,
        image_width: usize,
        image_height: usize,
    },
    #[error("the resampling ran past the call's time limit")]
    Deadline,
}

/// Input span [start, end) of output cell `i` when `input` cells shrink or grow to `output`.
fn span(i: usize, input: usize, output: usize) -> (usize, usize) {
    (i * input / output, ((i + 1) * input).div_ceil(output))
}

/// Per output column: the table offsets (within a row) of its window's left and right edges,
/// and 1 / its width folded with the normalization's 1/128.
fn column_windows(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    (0..output)
        .map(|ox| {
            let (xs, xe) = span(ox, input, output);
            (xs * 3, xe * 3, 0.0078125 / (xe - xs) as f32)
        })
        .collect()
}

/// (v - 127.5) / 128 of the mean of a window whose RGB sum is `sum`, `scale` being 1 / its
/// size / 128.
fn normalized(sum: u32, scale: f32) -> f32 {
    sum as f32 * scale - 0.99609375
}

/// An RGB image's summed-area table: entry (y, x, c) is the sum of channel c over the
/// pixels above and left of (x, y), modulo 2^32.
pub struct SummedArea {
    width: usize,
    height: usize,
    /// Row stride in entries: (width + 1) * 3.
    stride: usize,
    table: Vec<u32>,
}

impl SummedArea {
    /// Entries the table of a `width` x `height` image has; `None` past what memory can
    /// address.
    pub fn entries(width: usize, height: usize) -> Option<usize> {
        width.checked_add(1)?.checked_mul(3)?.checked_mul(height.checked_add(1)?)
    }

    /// Checks that `rgb_len` bytes of RGB are a `width` x `height` image this module takes.
    pub fn check_image(width: usize, height: usize, rgb_len: usize) -> Result<(), AreaError> {
        if width == 0 || height == 0 || Self::entries(width, height).is_none() {
            return Err(AreaError::ImageSize { width, height });
        }
        let expected = width as u128 * height as u128 * 3;
        if rgb_len as u128 != expected {
            return Err(AreaError::ImageBytes { width, height, expected, got: rgb_len });
        }
        Ok(())
    }

    /// Checks every size `sizes` resamples an `input` of to (`what` names them in messages):
    /// at least 1x1, and output pixels whose sums the table gives exactly.
    pub fn check_sizes(what: &'static str, input: Size, sizes: &[Size]) -> Result<(), AreaError> {
        sizes.iter().enumerate().try_for_each(|(index, s)| Self::check_size(what, index, input, *s))
    }

    /// [`check_sizes`](Self::check_sizes) of the `index`th size, `s`.
    fn check_size(what: &'static str, index: usize, input: Size, s: Size) -> Result<(), AreaError> {
        if s.width == 0 || s.height == 0 {
            return Err(AreaError::EmptySize { what, index, width: s.width, height: s.height });
        }
        // An output cell spans at most ceil(in / out) + 1 input cells, and never more than all.
        let span = |input: usize, output: usize| input.min(input.div_ceil(output) + 1) as u64;
        let pixels = span(input.width, s.width).saturating_mul(span(input.height, s.height));
        if pixels > MAX_WINDOW_PIXELS {
            return Err(AreaError::Window { what, index, pixels });
        }
        Ok(())
    }

    /// Builds the table of the `width` x `height` image `rgb` in `table`'s memory (its
    /// contents do not matter: every entry is written) and resamples the whole image to each
    /// of `levels` in the same pass, each into the buffer `buffer` gives for its values (any
    /// contents; it is cleared). Each level takes only the table rows at its rows' edges, and
    /// takes each while it is still in the cache, instead of reading the whole table again.
    pub fn build(
        width: usize,
        height: usize,
        rgb: &[u8],
        mut table: Vec<u32>,
        levels: &[Size],
        mut buffer: impl FnMut(usize) -> Vec<f32>,
        deadline: &Deadline,
    ) -> Result<(SummedArea, Vec<Vec<f32>>), AreaError> {
        Self::check_image(width, height, rgb.len())?;
        Self::check_sizes("level", Size { width, height }, levels)?;
        let mut levels: Vec<Level> = levels
            .iter()
            .map(|s| {
                let mut out = buffer(s.width * s.height * 3);
                out.clear();
                Level::new(width, height, *s, out)
            })
            .collect();
        let stride = (width + 1) * 3;
        // Rewritten entry by entry below: zeroing the memory first (40 MB for a 1434x2333
        // photo) would be a second pass over it. A table over twice as large as needed is let
        // go: its memory is charged to the guest.
        let entries = Self::entries(width, height).expect("checked");
        if table.capacity() / 2 > entries {
            table = Vec::new();
        }
        if table.len() > entries {
            table.truncate(entries);
        } else {
            table.resize(entries, 0);
        }
        table[..stride].fill(0);
        levels.iter_mut().for_each(|level| level.visit(0, &table[..stride]));
        for y in 0..height {
            if y % 64 == 0 && deadline.expired() {
                return Err(AreaError::Deadline);
            }
            let src = &rgb[y * width * 3..][..width * 3];
            let (above, below) = table.split_at_mut((y + 1) * stride);
            let above = &above[y * stride + 3..][..width * 3];
            below[..3].fill(0);
            let sums = &mut below[3..stride];
            // Running sums along the row (three independent chains) plus the row above.
            let mut run = [0u32; 3];
            for ((sum, pixels), up) in
                sums.chunks_exact_mut(3).zip(src.chunks_exact(3)).zip(above.chunks_exact(3))
            {
                for c in 0..3 {
                    run[c] = run[c].wrapping_add(pixels[c] as u32);
                    sum[c] = run[c].wrapping_add(up[c]);
                }
            }
            let row = &below[..stride];
            levels.iter_mut().for_each(|level| level.visit(y + 1, row));
        }
        let outputs = levels.into_iter().map(|l| l.out).collect();
        Ok((SummedArea { width, height, stride, table }, outputs))
    }

    /// Each of `regions` resampled to `size`, one after the other, appended to `out`.
    pub fn crops(
        &self,
        regions: &[Region],
        size: Size,
        out: &mut Vec<f32>,
        deadline: &Deadline,
    ) -> Result<(), AreaError> {
        for (index, r) in regions.iter().enumerate() {
            let inside = r.width > 0
                && r.height > 0
                && r.x.checked_add(r.width).is_some_and(|e| e <= self.width)
                && r.y.checked_add(r.height).is_some_and(|e| e <= self.height);
            if !inside {
                let (image_width, image_height) = (self.width, self.height);
                let (x, y, width, height) = (r.x, r.y, r.width, r.height);
                return Err(AreaError::Region { index, x, y, width, height, image_width, image_height });
            }
            Self::check_size("crop of region", index, Size { width: r.width, height: r.height }, size)?;
        }
        out.reserve(regions.len() * size.width * size.height * 3);
        for r in regions {
            if deadline.expired() {
                return Err(AreaError::Deadline);
            }
            self.resample(*r, size, out);
        }
        Ok(())
    }

    /// Appends `region` resampled to `size`. Only the corners of each output's window are
    /// read: for small crops, a fraction of a pass over whole rows.
    fn resample(&self, region: Region, size: Size, out: &mut Vec<f32>) {
        let columns = column_windows(region.width, size.width);
        let start = out.len();
        out.resize(start + size.width * size.height * 3, 0.0);
        let row_len = (region.width + 1) * 3;
        for (oy, dst_row) in out[start..].chunks_exact_mut(size.width * 3).enumerate() {
            let (ys, ye) = span(oy, region.height, size.height);
            let top = &self.table[(region.y + ys) * self.stride + region.x * 3..][..row_len];
            let bottom = &self.table[(region.y + ye) * self.stride + region.x * 3..][..row_len];
            let inv_height = 1.0 / (ye - ys) as f32;
            for (cell, &(left, right, inv_width)) in dst_row.chunks_exact_mut(3).zip(&columns) {
                let scale = inv_width * inv_height;
                let (tl, tr) = (&top[left..left + 3], &top[right..right + 3]);
                let (bl, br) = (&bottom[left..left + 3], &bottom[right..right + 3]);
                for c in 0..3 {
                    let sum = br[c].wrapping_sub(bl[c]).wrapping_sub(tr[c].wrapping_sub(tl[c]));
                    cell[c] = normalized(sum, scale);
                }
            }
        }
    }

    /// The image's size.
    pub fn image_size(&self) -> Size {
        Size { width: self.width, height: self.height }
    }

    /// Bytes the table holds.
    pub fn bytes(&self) -> usize {
        self.table.capacity() * 4
    }

    /// The table's memory, for the next image's.
    pub fn into_table(self) -> Vec<u32> {
        self.table
    }
}

/// One level of the whole image, resampled while the table is built: an output row needs the
/// table rows at its window's top and bottom edges, and from each only the entries at its
/// columns' edges.
struct Level {
    width: usize,
    height: usize,
    /// Input rows of the image.
    input_height: usize,
    columns: Vec<(usize, usize, f32)>,
    /// The next output row to start (at its top edge) and to finish (at its bottom edge).
    next_top: usize,
    next_bottom: usize,
    /// Column-edge differences of the top edge of the rows started and not yet finished,
    /// row `oy` at slot `oy % open_rows`.
    tops: Vec<u32>,
    open_rows: usize,
    out: Vec<f32>,
}

impl Level {
    fn new(input_width: usize, input_height: usize, size: Size, out: Vec<f32>) -> Self {
        let Size { width, height } = size;
        // At most this many rows are open at once: those whose top edge lies at or above the
        // bottom edge of the first of them.
        let mut open_rows = 1;
        let mut last = 0;
        for oy in 0..height {
            let (_, bottom) = span(oy, input_height, height);
            last = last.max(oy);
            while last + 1 < height && span(last + 1, input_height, height).0 <= bottom {
                last += 1;
            }
            open_rows = open_rows.max(last - oy + 1);
        }
        Level {
            width,
            height,
            input_height,
            columns: column_windows(input_width, width),
            next_top: 0,
            next_bottom: 0,
            tops: vec![0; open_rows * width * 3],
            open_rows,
            out,
        }
    }

    /// Takes table row `t` (rows come in order, 0 to the image's height).
    fn visit(&mut self, t: usize, row: &[u32]) {
        let row_len = self.width * 3;
        while self.next_bottom < self.height && span(self.next_bottom, self.input_height, self.height).1 == t
        {
            let oy = self.next_bottom;
            let (ys, ye) = span(oy, self.input_height, self.height);
            let inv_height = 1.0 / (ye - ys) as f32;
            let top = &self.tops[oy % self.open_rows * row_len..][..row_len];
            // Rows finish in order: each is appended, then written in place.
            let start = self.out.len();
            self.out.resize(start + row_len, 0.0);
            let cells = self.out[start..].chunks_exact_mut(3).zip(top.chunks_exact(3));
            for ((cell, top), &(left, right, inv_width)) in cells.zip(&self.columns) {
                let scale = inv_width * inv_height;
                let (l, r) = (&row[left..left + 3], &row[right..right + 3]);
                for c in 0..3 {
                    cell[c] = normalized(r[c].wrapping_sub(l[c]).wrapping_sub(top[c]), scale);
                }
            }
            self.next_bottom += 1;
        }
        while self.next_top < self.height && span(self.next_top, self.input_height, self.height).0 == t {
            let oy = self.next_top;
            let top = &mut self.tops[oy % self.open_rows * row_len..][..row_len];
            for (edges, &(left, right, _)) in top.chunks_exact_mut(3).zip(&self.columns) {
                let (l, r) = (&row[left..left + 3], &row[right..right + 3]);
                for c in 0..3 {
                    edges[c] = r[c].wrapping_sub(l[c]);
                }
            }
            self.next_top += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(w: usize, h: usize, rgb: &[u8], levels: &[Size]) -> (SummedArea, Vec<Vec<f32>>) {
        SummedArea::build(w, h, rgb, Vec::new(), levels, Vec::with_capacity, &Deadline::NONE).unwrap()
    }

    /// The mean of each output cell's window, summed pixel by pixel, normalized: the
    /// definition, without the table.
    fn by_definition(w: usize, rgb: &[u8], r: Region, size: Size) -> Vec<f32> {
        let mut out = Vec::new();
        for oy in 0..size.height {
            let (ys, ye) = span(oy, r.height, size.height);
            for ox in 0..size.width {
                let (xs, xe) = span(ox, r.width, size.width);
                for c in 0..3 {
                    let mut sum = 0u64;
                    for y in r.y + ys..r.y + ye {
                        for x in r.x + xs..r.x + xe {
                            sum += rgb[(y * w + x) * 3 + c] as u64;
                        }
                    }
                    let mean = sum as f64 / ((ye - ys) * (xe - xs)) as f64;
                    out.push(((mean - 127.5) / 128.0) as f32);
                }
            }
        }
        out
    }

    #[test]
    fn area_resampling_averages_windows() {
        // 4x2 image, columns 0..4 valued 0, 40, 80, 120 (all channels), down to 2x1.
        let rgb: Vec<u8> = (0..2).flat_map(|_| (0..4u8).flat_map(|x| [x * 40; 3])).collect();
        let (_, levels) = build(4, 2, &rgb, &[Size { width: 2, height: 1 }]);
        let expect = |v: f32| (v - 127.5) * 0.0078125;
        assert_eq!(
            levels[0],
            vec![expect(20.0); 3].into_iter().chain(vec![expect(100.0); 3]).collect::<Vec<_>>()
        );
    }

    #[test]
    fn levels_and_crops_match_the_definition() {
        let (w, h) = (37, 23);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 97 % 251) as u8).collect();
        // Shrinking by non-integer and integer ratios, the same size, and growing.
        let sizes =
            [(15, 9), (12, 12), (37, 23), (80, 51), (5, 3)].map(|(width, height)| Size { width, height });
        // A table's memory left over from a larger image, dirty: every entry must be rewritten.
        let dirty = vec![u32::MAX; (w + 9) * (h + 5) * 3];
        let stale = |n: usize| vec![7.0; n + 5];
        let (sums, levels) = SummedArea::build(w, h, &rgb, dirty, &sizes, stale, &Deadline::NONE).unwrap();
        let whole = Region { x: 0, y: 0, width: w, height: h };
        for (size, level) in sizes.iter().zip(&levels) {
            let expected = by_definition(w, &rgb, whole, *size);
            let worst = level.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(level.len() == expected.len() && worst < 1e-6, "{size:?}: off by {worst}");
            let mut crop = Vec::new();
            sums.crops(&[whole], *size, &mut crop, &Deadline::NONE).unwrap();
            assert_eq!(&crop, level, "the whole image as a crop is the level, {size:?}");
        }
        let regions = [
            Region { x: 3, y: 2, width: 11, height: 17 },
            Region { x: 36, y: 22, width: 1, height: 1 },
            Region { x: 0, y: 5, width: 37, height: 4 },
        ];
        let mut crops = vec![9.0; 4];
        sums.crops(&regions, Size { width: 6, height: 5 }, &mut crops, &Deadline::NONE).unwrap();
        assert_eq!(crops[..4], [9.0; 4], "appended");
        for (r, crop) in regions.iter().zip(crops[4..].chunks(6 * 5 * 3)) {
            let expected = by_definition(w, &rgb, *r, Size { width: 6, height: 5 });
            let worst = crop.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-6, "{r:?}: off by {worst}");
        }
    }

    #[test]
    fn a_table_twice_as_large_as_needed_is_let_go() {
        let rgb = vec![7u8; 4 * 3 * 3];
        let entries = SummedArea::entries(4, 3).unwrap();
        let build =
            |table| SummedArea::build(4, 3, &rgb, table, &[], Vec::with_capacity, &Deadline::NONE).unwrap().0;
        assert_eq!(build(Vec::with_capacity(entries + 10)).bytes(), (entries + 10) * 4, "reused");
        assert_eq!(build(Vec::with_capacity(entries * 2 + 2)).bytes(), entries * 4, "let go");
    }

    #[test]
    fn bad_requests_are_refused_with_what_is_wrong() {
        let rgb = vec![0u8; 4 * 3 * 3];
        let level = |width, height| [Size { width, height }];
        let refuse = |w: usize, h: usize, rgb: &[u8], levels: &[Size]| {
            SummedArea::build(w, h, rgb, Vec::new(), levels, Vec::with_capacity, &Deadline::NONE).err()
        };
        assert!(matches!(refuse(4, 3, &rgb[1..], &level(2, 2)), Some(AreaError::ImageBytes { .. })));
        assert!(matches!(refuse(0, 3, &[], &level(2, 2)), Some(AreaError::ImageSize { .. })));
        assert!(matches!(refuse(usize::MAX, 2, &rgb, &level(2, 2)), Some(AreaError::ImageSize { .. })));
        assert!(matches!(refuse(1 << 20, 1 << 20, &rgb, &level(2, 2)), Some(AreaError::ImageBytes { .. })));
        assert!(matches!(refuse(4, 3, &rgb, &level(0, 2)), Some(AreaError::EmptySize { index: 0, .. })));
        // One output pixel over 4200x4200 input pixels: its sums would wrap.
        let wide = SummedArea::check_sizes("level", Size { width: 8400, height: 8400 }, &level(2, 2));
        assert!(matches!(wide, Err(AreaError::Window { pixels: 17_648_401, .. })), "{wide:?}");
        let fits = SummedArea::check_sizes("level", Size { width: 8200, height: 8200 }, &level(2, 2));
        assert!(fits.is_ok(), "4101x4101 windows: {fits:?}");
        let (sums, _) = build(4, 3, &rgb, &[]);
        let mut out = Vec::new();
        let crop = |r: Region, out: &mut Vec<f32>| {
            sums.crops(&[r], Size { width: 2, height: 2 }, out, &Deadline::NONE)
        };
        for bad in [
            Region { x: 3, y: 0, width: 2, height: 1 },
            Region { x: 0, y: 0, width: 0, height: 1 },
            Region { x: usize::MAX, y: 0, width: 2, height: 1 },
            Region { x: 0, y: 1, width: 1, height: 3 },
        ] {
            assert!(matches!(crop(bad, &mut out), Err(AreaError::Region { index: 0, .. })), "{bad:?}");
        }
        assert!(out.is_empty(), "nothing written for a refused request");
        let expired = Deadline::at(std::time::Instant::now());
        let late = SummedArea::build(4, 3, &rgb, Vec::new(), &[], Vec::with_capacity, &expired);
        assert!(matches!(late.err(), Some(AreaError::Deadline)));
    }
}
