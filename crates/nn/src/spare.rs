//! Buffers of values a run no longer needs, given to later conv, pooling, Transpose, Concat
//! and Pad outputs and to convs' padded input copies instead of fresh zeroed memory. A fresh
//! output costs a memset (glibc's `calloc` zeroes memory it reuses) or page faults (memory it
//! maps anew): by perf, 5% and 5% of a detection's time on the 2-core VM (2026-12-05). The
//! ops handed a spare buffer write every value of it. Between runs the wasi-nn host takes
//! from them for the inputs guests hand over and leaves them the outputs guests drop.

use std::cell::Cell;

use crate::{NnError, Tensor, element_count, zeroed_values};

/// The most a thread keeps between runs: the largest activations of the shipped graphs, bounded
/// whatever a guest's graphs are. The MMOD network on the tiled pyramid of a 1200 px photo
/// frees a 40 MB input and a 53 MB conv output, which at 48 MB were mapped, faulted in and
/// zeroed anew on every run (perf: 18% of the samples in the kernel): 131.8 -> 110.5 ms by
/// `scripts/bench-nn` at 128 MB (onnxruntime 110-112; 2-core VM, 2026-12-05). This is memory
/// the runs hold at their peak anyway; it stays held between them, as onnxruntime's arena does.
const KEPT_BYTES: usize = 128 << 20;
/// And at most this many, the largest: a conv or pool takes the smallest that fits.
const KEPT_BUFFERS: usize = 32;
/// Buffers of fewer values are not kept: allocating them costs little.
const SMALLEST: usize = 64;

thread_local! {
    /// The spare buffers of the last run on this thread. A run takes them when it starts and
    /// leaves its own when it ends, so runs never share one, and each thread keeps at most
    /// `KEPT_BYTES`.
    static KEPT: Cell<Spare> = const { Cell::new(Spare(Vec::new())) };
}

/// A run's spare buffers, each holding stale but initialized values.
#[derive(Default)]
pub struct Spare(Vec<Vec<f32>>);

// Without the CPU backend only the wasi-nn host's calls below use them.
#[cfg_attr(not(feature = "cpu"), allow(dead_code))]
impl Spare {
    /// What the last run on this thread left.
    pub fn take_kept() -> Spare {
        KEPT.take()
    }

    /// Leaves these for the next run on this thread.
    pub fn keep_for_next_run(self) {
        KEPT.set(self);
    }

    /// A tensor of `shape` for an op that writes every one of its values: the smallest spare
    /// buffer large enough, holding stale values, or zeroed memory when none is.
    pub fn output(&mut self, shape: Vec<usize>) -> Result<Tensor, NnError> {
        let values = self.values(element_count(&shape)?)?;
        Tensor::new(shape, values)
    }

    /// `n` values for a caller that writes every one of them (a conv's padded input copy), as
    /// [`Spare::output`] finds them.
    pub fn values(&mut self, n: usize) -> Result<Vec<f32>, NnError> {
        let Some(mut data) = self.take_room_for(n) else { return zeroed_values(n) };
        // Shortens it, or zeroes only the values past its stale ones (within its capacity).
        data.resize(n, 0.0);
        Ok(data)
    }

    /// The smallest buffer with room for `n` values, if any.
    fn take_room_for(&mut self, n: usize) -> Option<Vec<f32>> {
        let fit = (self.0.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= n)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        fit.map(|i| self.0.swap_remove(i))
    }

    /// Keeps `tensor`'s buffer when it is worth it: the largest buffers are kept first, each
    /// while it fits in what is left of `KEPT_BYTES`, and `KEPT_BUFFERS` at most.
    pub fn give(&mut self, tensor: Tensor) {
        self.give_values(tensor.into_data());
    }

    /// Keeps `data` as [`Spare::give`] keeps a tensor's.
    pub fn give_values(&mut self, data: Vec<f32>) {
        if data.capacity() < SMALLEST {
            return;
        }
        self.0.push(data);
        self.0.sort_unstable_by_key(|b| std::cmp::Reverse(b.capacity()));
        // One buffer too large to keep does not take the smaller ones with it.
        let mut bytes = 0;
        self.0.retain(|b| {
            let fits = bytes + b.capacity() * 4 <= KEPT_BYTES;
            if fits {
                bytes += b.capacity() * 4;
            }
            fits
        });
        self.0.truncate(KEPT_BUFFERS);
    }
}

/// For a caller between runs that writes `n` values (the wasi-nn host copying a guest's
/// input in): the smallest of the buffers the last run on this thread left with room for
/// them, emptied. Unlike fresh memory it is mapped and in use already: no page faults, no
/// zeroing.
pub fn take_spare_values(n: usize) -> Option<Vec<f32>> {
    with_kept(|kept| kept.take_room_for(n)).map(|mut values| {
        values.clear();
        values
    })
}

/// Leaves `values`, which a caller between runs no longer needs (the wasi-nn host, when a
/// guest drops a compute's output), to the next run on this thread, as a run leaves its own.
pub fn keep_spare_values(values: Vec<f32>) {
    with_kept(|kept| kept.give_values(values));
}

/// `f` on the buffers the last run on this thread left, which stay for the next.
fn with_kept<R>(f: impl FnOnce(&mut Spare) -> R) -> R {
    let mut kept = Spare::take_kept();
    let result = f(&mut kept);
    kept.keep_for_next_run();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_smallest_buffer_that_fits_and_bounds_what_it_keeps() {
        let mut spare = Spare::default();
        spare.give(Tensor::new(vec![1 << 20], vec![1.0; 1 << 20]).unwrap());
        spare.give(Tensor::new(vec![1 << 16], vec![2.0; 1 << 16]).unwrap());
        spare.give(Tensor::new(vec![8], vec![3.0; 8]).unwrap()); // too small to keep
        assert_eq!(spare.0.len(), 2);
        let out = spare.output(vec![1000]).unwrap();
        assert_eq!((out.len(), out.data()[0]), (1000, 2.0), "the smaller buffer, stale values");
        spare.give(out);
        // Longer than its stale values, within its capacity: the values past them are zero.
        let out = spare.output(vec![5000]).unwrap();
        assert_eq!((out.data()[999], out.data()[1000]), (2.0, 0.0));
        let out = spare.output(vec![2 << 20]).unwrap();
        assert!(out.data().iter().all(|&v| v == 0.0), "no buffer fits: fresh zeros");
        // 8 MB buffers, more than KEPT_BYTES of them: the byte bound holds before the count's.
        for _ in 0..KEPT_BYTES / (8 << 20) + 4 {
            spare.give(Tensor::new(vec![2 << 20], vec![0.0; 2 << 20]).unwrap());
        }
        let kept: usize = spare.0.iter().map(|b| b.capacity() * 4).sum();
        assert!(kept <= KEPT_BYTES && spare.0.len() == KEPT_BYTES / (8 << 20), "kept {kept} bytes");
        assert!(spare.0.len() < KEPT_BUFFERS);
    }

    #[test]
    fn callers_between_runs_take_and_leave_this_threads_buffers() {
        // On a thread of its own: what other tests' runs kept is not in the way.
        std::thread::spawn(|| {
            assert!(take_spare_values(10).is_none(), "nothing kept yet");
            keep_spare_values(vec![1.0; 1000]);
            keep_spare_values(vec![2.0; 100]);
            keep_spare_values(vec![3.0; SMALLEST - 1]); // too small to keep
            let taken = take_spare_values(500).expect("the buffer of 1000 has room");
            assert_eq!((taken.len(), taken.capacity()), (0, 1000), "emptied, the smallest that fits");
            assert!(take_spare_values(500).is_none(), "taken once");
            // The next run on this thread finds what is left.
            let kept = Spare::take_kept();
            assert_eq!(kept.0.iter().map(Vec::capacity).collect::<Vec<_>>(), vec![100]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_buffer_too_large_to_keep_leaves_the_others_kept() {
        let mut spare = Spare::default();
        spare.give(Tensor::new(vec![1 << 20], vec![1.0; 1 << 20]).unwrap());
        spare.give_values(vec![0.0; KEPT_BYTES / 4 + 1]);
        assert_eq!(spare.0.iter().map(Vec::capacity).collect::<Vec<_>>(), vec![1 << 20]);
        // Beside a kept buffer of three quarters of the room, one of half is dropped and one of
        // a thirty-second kept.
        let [three_quarters, half, small] = [KEPT_BYTES / 16 * 3, KEPT_BYTES / 8, KEPT_BYTES / 128];
        let mut spare = Spare::default();
        for values in [three_quarters, half, small] {
            spare.give_values(vec![0.0; values]);
        }
        assert_eq!(spare.0.iter().map(Vec::capacity).collect::<Vec<_>>(), vec![three_quarters, small]);
    }
}
