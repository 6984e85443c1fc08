//! The `refacen:face/area` interface: area resampling of a guest's image ([`crate::area`]) into
//! wasi-nn tensors that stay in the host, to be handed to a compute as they are. The image is
//! read where it lies in the guest's memory; the summed-area table a guest keeps for its crops
//! and every tensor made are charged to the guest as its tensors are, and the work runs
//! under the call's deadline.

use wasmtime::component::{ComponentType, Lift, Lower, ResourceType};

use super::*;
use crate::area::{AreaError, Region, Size, SummedArea};

const INTERFACE: &str = "refacen:face/area@0.1.0";

/// The largest table whose memory an instance keeps for its next photo's (a 10 MP photo's):
/// kept memory is charged to no one, so a guest's largest tables are freed when it drops them.
const KEPT_TABLE_BYTES: usize = 128 << 20;

#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug)]
#[component(record)]
struct WitSize {
    width: u32,
    height: u32,
}

#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug)]
#[component(record)]
struct WitRegion {
    x: u32,
    y: u32,
    width: u32,
    height: u32,
}

impl From<WitSize> for Size {
    fn from(s: WitSize) -> Size {
        Size { width: s.width as usize, height: s.height as usize }
    }
}

impl From<WitRegion> for Region {
    fn from(r: WitRegion) -> Region {
        Region { x: r.x as usize, y: r.y as usize, width: r.width as usize, height: r.height as usize }
    }
}

/// A guest's `summed-area`: the table and its charge on the process's account.
pub struct SummedAreaResource {
    sums: SummedArea,
    _hold: Hold,
}

type Summarized = Result<(Resource<SummedAreaResource>, Vec<Resource<TensorResource>>), String>;

/// Adds the `refacen:face/area` imports to `linker`.
pub(super) fn add_to_linker<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    let mut area = linker.instance(INTERFACE)?;
    area.resource("summed-area", ResourceType::host::<SummedAreaResource>(), move |mut store, rep| {
        let view = view(store.data_mut());
        let resource = view.table.delete(Resource::<SummedAreaResource>::new_own(rep))?;
        view.state.usage.tensors -= 1;
        view.state.usage.tensor_bytes -= resource.sums.bytes();
        // The next image's table reuses its memory: tens of MB, faulted in anew otherwise.
        if resource.sums.bytes() <= KEPT_TABLE_BYTES {
            view.state.area_table = resource.sums.into_table();
        }
        Ok(())
    })?;
    type SummarizeParams = (u32, u32, WasmList<u8>, Vec<WitSize>);
    area.func_wrap(
        "summarize",
        move |mut store: StoreContextMut<'_, T>, (width, height, rgb, levels): SummarizeParams| {
            let levels: Vec<Size> = levels.into_iter().map(Size::from).collect();
            let (width, height) = (width as usize, height as usize);
            let (table, deadline) = {
                let view = view(store.data_mut());
                view.check_handles()?;
                if let Err(refused) = view.check_summarize(width, height, rgb.len(), &levels) {
                    return Ok((Err(refused),));
                }
                (std::mem::take(&mut view.state.area_table), view.state.deadline)
            };
            let buffer = |n: usize| nn::take_spare_values(n).unwrap_or_else(|| Vec::with_capacity(n));
            let built =
                SummedArea::build(width, height, rgb.as_le_slice(&store), table, &levels, buffer, &deadline);
            let (sums, outputs) = match built {
                Ok(built) => built,
                Err(AreaError::Deadline) => return Err(CallDeadlineExceeded.into()),
                Err(refused) => return Ok((Err(refused.to_string()),)),
            };
            let mut view = view(store.data_mut());
            let table = view.push_summed_area(sums)?;
            let mut tensors = Vec::with_capacity(outputs.len());
            for (size, values) in levels.iter().zip(outputs) {
                tensors.push(view.push_values(vec![1, size.height, size.width, 3], values)?);
            }
            Ok((Ok((table, tensors)) as Summarized,))
        },
    )?;
    type CropsParams = (Resource<SummedAreaResource>, Vec<WitRegion>, WitSize);
    area.func_wrap(
        "[method]summed-area.crops",
        move |mut store: StoreContextMut<'_, T>, (sums, regions, size): CropsParams| {
            let regions: Vec<Region> = regions.into_iter().map(Region::from).collect();
            let size = Size::from(size);
            let mut view = view(store.data_mut());
            view.check_handles()?;
            let values =
                regions.len().saturating_mul(size.width).saturating_mul(size.height).saturating_mul(3);
            if let Err(refused) = view.check_room(values.saturating_mul(4), "crops") {
                return Ok((Err(refused),));
            }
            let mut out = nn::take_spare_values(values).unwrap_or_default();
            let deadline = view.state.deadline;
            let cropped = view.table.get(&sums)?.sums.crops(&regions, size, &mut out, &deadline);
            match cropped {
                Ok(()) => {
                    let shape = vec![regions.len(), size.height, size.width, 3];
                    Ok((Ok(view.push_values(shape, out)?),))
                }
                Err(AreaError::Deadline) => Err(CallDeadlineExceeded.into()),
                Err(refused) => Ok((Err(refused.to_string()),)),
            }
        },
    )
}

impl NnView<'_> {
    /// Whether a `summarize` of a `width` x `height` image of `rgb_len` bytes into `levels`
    /// may run: a valid request, whose table and levels fit in what the guest may still hold.
    fn check_summarize(
        &self,
        width: usize,
        height: usize,
        rgb_len: usize,
        levels: &[Size],
    ) -> Result<(), String> {
        SummedArea::check_image(width, height, rgb_len).map_err(|e| e.to_string())?;
        SummedArea::check_sizes("level", Size { width, height }, levels).map_err(|e| e.to_string())?;
        // Every level is a tensor, and the table a handle: refused before any is made.
        let (held, limit) = (self.state.usage.handles(), self.state.host.limits.max_handles_per_instance);
        if held.saturating_add(levels.len()).saturating_add(1) > limit {
            return Err(format!(
                "{} levels and a table would bring the guest's wasi-nn handles from {held} past {limit}",
                levels.len()
            ));
        }
        let level_values = levels
            .iter()
            .fold(0usize, |sum, s| sum.saturating_add(s.width.saturating_mul(s.height).saturating_mul(3)));
        let entries = SummedArea::entries(width, height).unwrap_or(usize::MAX);
        let bytes = entries.saturating_add(level_values).saturating_mul(4);
        self.check_room(bytes, "a summed-area table and its levels").map_err(|refused| {
            format!("{refused}: the photo is too large for this; detect it at a smaller size (--max-size)")
        })
    }

    /// Refuses `bytes` more of tensors (`what`) where they would take the guest over what it
    /// may hold.
    fn check_room(&self, bytes: usize, what: &str) -> Result<(), String> {
        if bytes > self.tensor_room() {
            return Err(format!(
                "{what} would take {} MiB, and this guest may hold only {} MiB more of tensors in the host",
                bytes >> 20,
                self.tensor_room() >> 20
            ));
        }
        Ok(())
    }

    /// Hands the guest `sums`, charged to it as a tensor of the table's bytes.
    fn push_summed_area(&mut self, sums: SummedArea) -> wasmtime::Result<Resource<SummedAreaResource>> {
        let bytes = sums.bytes();
        if bytes > self.tensor_room() {
            return Err(self.too_many_tensor_bytes(bytes));
        }
        let hold =
            self.process_hold(bytes as u64, 1, || format!("a summed-area table of {} MiB", bytes >> 20))?;
        let handle = self.table.push(SummedAreaResource { sums, _hold: hold })?;
        self.state.usage.tensors += 1;
        self.state.usage.tensor_bytes += bytes;
        Ok(handle)
    }

    /// Hands the guest FP32 `values` of `shape` as a tensor.
    fn push_values(
        &mut self,
        shape: Vec<usize>,
        values: Vec<f32>,
    ) -> wasmtime::Result<Resource<TensorResource>> {
        let dimensions = shape.iter().map(|&d| d as u32).collect();
        let data = TensorData::Fp32(Arc::new(values));
        self.push_tensor(TensorResource { dimensions, ty: TensorType::Fp32, data, hold: None })
    }
}
