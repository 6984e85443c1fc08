//! Convolutions whose edge taps only ever read padding, run without those taps.
//!
//! dlib-resnet-128's last 3x3 conv runs over a 1x1 map padded by one: 8 of its 9 taps read
//! only zeros, yet every kernel multiplied them (0.10 ms at batch 1 against 0.01 for the
//! same conv as a 1x1 one, and 0.027 for onnxruntime, which skips them; 2-core VM,
//! 2026-12-06). Such a conv runs as the conv of its live taps, with its padding shifted to
//! match: the same output positions, the same sums less their zero terms.

use crate::NnError;
use crate::ir::{Conv, Padding};
use crate::shape::{self, ConvGeometry};

use super::conv::PackedConv;

/// The kernel rows [top, bottom) and columns [left, right) that land inside the input for
/// some output position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveTaps {
    rows: [usize; 2],
    cols: [usize; 2],
}

impl LiveTaps {
    /// The live taps of `conv` on `g`, when fewer than all of its kernel's.
    pub fn of(conv: &Conv, g: &ConvGeometry) -> Option<LiveTaps> {
        let [kh, kw] = conv.window.kernel;
        let axis = |a: usize, kernel: usize| {
            let (stride, dilation) = (conv.window.strides[a], conv.window.dilations[a]);
            let pad = g.pads[a] as isize;
            let (size, out) = (g.in_hw[a] as isize, g.out_hw[a] as isize);
            // Tap t reads input row o·stride - pad + t·dilation of output row o: live when
            // the first row o ≥ 0 that reaches the input is inside it.
            let live = |t: usize| {
                let offset = t as isize * dilation as isize - pad;
                let first = ((-offset).max(0) as usize).div_ceil(stride) as isize;
                first < out && first * stride as isize + offset < size
            };
            let first = (0..kernel).find(|&t| live(t))?;
            let last = (0..kernel).rev().find(|&t| live(t))?;
            Some([first, last + 1])
        };
        let taps = LiveTaps { rows: axis(0, kh)?, cols: axis(1, kw)? };
        (taps.rows != [0, kh] || taps.cols != [0, kw]).then_some(taps)
    }
}

/// A conv cut down to its live taps on one input size: its window, weights and packed
/// weights.
#[derive(Debug)]
pub struct Trimmed {
    taps: LiveTaps,
    /// The geometry it was cut for, less the batch: its padding holds for this alone (a
    /// SAME padding's depends on the input's size).
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    pads: [usize; 4],
    pub conv: Conv,
    pub weights: Vec<f32>,
    pub packed: PackedConv,
}

impl Trimmed {
    /// `conv` (weights `w`, [M, C/g, kh, kw]) on `g` cut down to `taps`, or `None` when its
    /// shifted padding would not give the same output positions.
    pub fn new(conv: &Conv, w: &[f32], g: &ConvGeometry, taps: LiveTaps) -> Option<Trimmed> {
        let ([top, bottom], [left, right]) = (taps.rows, taps.cols);
        let [kh, kw] = conv.window.kernel;
        let (kh2, kw2) = (bottom - top, right - left);
        let [d_y, d_x] = conv.window.dilations;
        // The first live tap reads what tap 0 read at the padding less its offset.
        let pad_top = g.pads[0].checked_sub(top * d_y)?;
        let pad_left = g.pads[1].checked_sub(left * d_x)?;
        let end = |a: usize, k: usize, pad: usize| {
            let span = (k - 1) * conv.window.dilations[a] + 1;
            ((g.out_hw[a] - 1) * conv.window.strides[a] + span).saturating_sub(g.in_hw[a] + pad)
        };
        let padding = Padding::Explicit {
            top: pad_top,
            left: pad_left,
            bottom: end(0, kh2, pad_top),
            right: end(1, kw2, pad_left),
        };
        let mut window = conv.window;
        window.kernel = [kh2, kw2];
        window.padding = padding;
        let trimmed = Conv { window, ..conv.clone() };
        let rows = g.out_channels * (g.in_channels / conv.group);
        let weights: Vec<f32> = (0..rows)
            .flat_map(|r| (top..bottom).flat_map(move |y| (left..right).map(move |x| (r, y, x))))
            .map(|(r, y, x)| w[(r * kh + y) * kw + x])
            .collect();
        let same = shape::conv_geometry(
            &trimmed,
            &[g.batch.max(1), g.in_channels, g.in_hw[0], g.in_hw[1]],
            &[g.out_channels, g.in_channels / conv.group, kh2, kw2],
        )
        .is_ok_and(|t| t.out_hw == g.out_hw);
        same.then(|| Trimmed {
            taps,
            in_hw: g.in_hw,
            out_hw: g.out_hw,
            pads: g.pads,
            conv: trimmed,
            weights,
            packed: PackedConv::default(),
        })
    }

    /// Whether this is the conv of `g` cut down to `taps` (at any batch size).
    pub fn fits(&self, taps: LiveTaps, g: &ConvGeometry) -> bool {
        (self.taps, self.in_hw, self.out_hw, self.pads) == (taps, g.in_hw, g.out_hw, g.pads)
    }

    /// `g` with this conv's padding.
    pub fn geometry(&self, g: &ConvGeometry) -> Result<ConvGeometry, NnError> {
        let [kh, kw] = self.conv.window.kernel;
        let x = [g.batch, g.in_channels, g.in_hw[0], g.in_hw[1]];
        shape::conv_geometry(&self.conv, &x, &[g.out_channels, g.in_channels / self.conv.group, kh, kw])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Activation, Window};

    fn conv(kernel: [usize; 2], strides: [usize; 2], dilations: [usize; 2], pads: [usize; 4]) -> Conv {
        let [top, left, bottom, right] = pads;
        Conv {
            window: Window {
                kernel,
                strides,
                dilations,
                padding: Padding::Explicit { top, left, bottom, right },
            },
            group: 1,
            activation: Activation::None,
            residual: false,
        }
    }

    fn geometry(conv: &Conv, in_hw: [usize; 2]) -> ConvGeometry {
        let [kh, kw] = conv.window.kernel;
        shape::conv_geometry(conv, &[1, 2, in_hw[0], in_hw[1]], &[3, 2, kh, kw]).unwrap()
    }

    #[test]
    fn taps_that_only_read_padding_are_found_on_each_side_of_each_axis() {
        let cases = [
            // A 3x3 conv padded by one over a 1x1 map: only the centre reads the input.
            (conv([3, 3], [1, 1], [1, 1], [1; 4]), [1, 1], Some(([1, 2], [1, 2]))),
            // 5x5 padded by two over 2x2: the outer ring is dead.
            (conv([5, 5], [1, 1], [1, 1], [2; 4]), [2, 2], Some(([1, 4], [1, 4]))),
            // One row, six columns: only the rows are cut.
            (conv([3, 3], [1, 1], [1, 1], [1; 4]), [1, 6], Some(([1, 2], [0, 3]))),
            // Stride 2 over one row: the third tap would read row 1 of 1.
            (conv([3, 3], [2, 2], [1, 1], [1; 4]), [1, 5], Some(([1, 2], [0, 3]))),
            // Dilation 2 padded by two over 2x2: the middle tap alone.
            (conv([3, 3], [1, 1], [2, 2], [2; 4]), [2, 2], Some(([1, 2], [1, 2]))),
            // Every tap reads the input somewhere: nothing to cut.
            (conv([3, 3], [1, 1], [1, 1], [1; 4]), [8, 8], None),
            (conv([3, 3], [2, 2], [1, 1], [0; 4]), [3, 3], None),
        ];
        for (c, in_hw, want) in cases {
            let want = want.map(|(rows, cols)| LiveTaps { rows, cols });
            assert_eq!(LiveTaps::of(&c, &geometry(&c, in_hw)), want, "{:?} over {in_hw:?}", c.window);
        }
    }

    #[test]
    fn a_trimmed_conv_keeps_the_output_positions_and_the_live_weights() {
        let c = conv([3, 3], [1, 1], [1, 1], [1; 4]);
        let g = geometry(&c, [1, 1]);
        let w: Vec<f32> = (0..3 * 2 * 9).map(|v| v as f32).collect();
        let trimmed = Trimmed::new(&c, &w, &g, LiveTaps::of(&c, &g).unwrap()).unwrap();
        assert_eq!(trimmed.conv.window.kernel, [1, 1]);
        assert_eq!(trimmed.geometry(&g).unwrap().pads, [0; 4]);
        assert_eq!(trimmed.geometry(&g).unwrap().out_hw, g.out_hw);
        // The centre of each [3][3] kernel, channel by channel.
        assert_eq!(trimmed.weights, (0..6).map(|r| (r * 9 + 4) as f32).collect::<Vec<_>>());

        let c = conv([5, 3], [1, 1], [1, 1], [3, 1, 1, 1]);
        let g = geometry(&c, [2, 5]);
        let w = vec![1.0; 3 * 2 * 15];
        let trimmed = Trimmed::new(&c, &w, &g, LiveTaps::of(&c, &g).unwrap()).unwrap();
        assert_eq!(trimmed.conv.window.kernel, [3, 3]);
        let t = trimmed.geometry(&g).unwrap();
        assert_eq!((t.pads, t.out_hw), ([1, 1, 1, 1], g.out_hw));
    }

    #[test]
    fn a_trimmed_conv_serves_only_the_geometry_it_was_cut_for() {
        let c = conv([3, 3], [1, 1], [1, 1], [1; 4]);
        let g = geometry(&c, [1, 1]);
        let taps = LiveTaps::of(&c, &g).unwrap();
        let trimmed = Trimmed::new(&c, &[0.0; 3 * 2 * 9], &g, taps).unwrap();
        // At any batch size.
        assert!(trimmed.fits(taps, &ConvGeometry { batch: 16, ..g }));
        // Not on another padding or input size, even with the same live taps: its shifted
        // padding holds for this one alone (and a SAME padding changes with the input).
        assert!(!trimmed.fits(taps, &ConvGeometry { pads: [1, 1, 2, 2], ..g }));
        assert!(!trimmed.fits(taps, &ConvGeometry { in_hw: [1, 2], ..g }));
    }
}
