//! nnd's cascade linked natively, for the benchmarks: its networks on the host's CPU backend
//! (each benchmark brings its own `kit::Network`), its pyramid and crops made by the host's
//! area resampling, the code the sandboxed guest asks for through `refacen:face/area`.

use std::cell::RefCell;
use std::rc::Rc;

use refacen::nn::{self, Deadline};
use refacen::runtime::area::{Region, Size, SummedArea};

pub struct NativeCascade<N> {
    pub pnet: N,
    pub rnet: N,
    pub onet: N,
    /// The last table's memory, for the next photo's, as the host keeps a guest's.
    table: Rc<RefCell<Vec<u32>>>,
}

impl<N> NativeCascade<N> {
    pub fn new(pnet: N, rnet: N, onet: N) -> Self {
        NativeCascade { pnet, rnet, onet, table: Rc::default() }
    }
}

/// A photo's table, whose memory goes back to the cascade when the detection drops it.
pub struct NativeTable {
    sums: Option<SummedArea>,
    home: Rc<RefCell<Vec<u32>>>,
}

impl Drop for NativeTable {
    fn drop(&mut self) {
        if let Some(sums) = self.sums.take() {
            *self.home.borrow_mut() = sums.into_table();
        }
    }
}

/// A network's output, whose memory goes back to the CPU backend's spare buffers when the
/// cascade drops it, as the host takes back the outputs a guest drops.
pub struct Output(kit::Tensor);

impl nnd::mtcnn::Map for Output {
    fn dims(&self) -> &[usize] {
        &self.0.dims
    }

    fn values(&self) -> &[f32] {
        &self.0.data
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        nn::keep_spare_values(std::mem::take(&mut self.0.data));
    }
}

/// Memory for `n` values, from the buffers the CPU backend's last run left, as the host takes it.
fn values(n: usize) -> Vec<f32> {
    nn::take_spare_values(n).unwrap_or_else(|| Vec::with_capacity(n))
}

impl<N: kit::Network> nnd::mtcnn::Host for NativeCascade<N> {
    type Input = kit::Tensor;
    type Output = Output;
    type Table = NativeTable;

    fn pyramid(
        &self,
        image: nnd::mtcnn::Image,
        levels: &[[usize; 2]],
    ) -> Result<(NativeTable, Vec<kit::Tensor>), String> {
        let sizes: Vec<Size> = levels.iter().map(|&[width, height]| Size { width, height }).collect();
        let table = self.table.take();
        let (sums, outputs) =
            SummedArea::build(image.width, image.height, image.rgb, table, &sizes, values, &Deadline::NONE)
                .map_err(|e| e.to_string())?;
        let inputs = levels
            .iter()
            .zip(outputs)
            .map(|(&[w, h], values)| kit::Tensor::new(vec![1, h, w, 3], values))
            .collect();
        Ok((NativeTable { sums: Some(sums), home: self.table.clone() }, inputs))
    }

    fn crops(&self, table: &NativeTable, regions: &[[usize; 4]], size: usize) -> Result<kit::Tensor, String> {
        let regions: Vec<Region> =
            regions.iter().map(|&[x, y, width, height]| Region { x, y, width, height }).collect();
        let mut out = values(regions.len() * size * size * 3);
        let sums = table.sums.as_ref().expect("held until dropped");
        sums.crops(&regions, Size { width: size, height: size }, &mut out, &Deadline::NONE)
            .map_err(|e| e.to_string())?;
        Ok(kit::Tensor::new(vec![regions.len(), size, size, 3], out))
    }

    fn run(&self, stage: nnd::mtcnn::Stage, input: kit::Tensor) -> Result<Vec<Output>, String> {
        use nnd::mtcnn::Stage;
        let network = match stage {
            Stage::PNet => &self.pnet,
            Stage::RNet => &self.rnet,
            Stage::ONet => &self.onet,
        };
        Ok(network.run(input)?.into_iter().map(Output).collect())
    }
}
