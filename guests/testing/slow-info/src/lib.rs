//! `slow-info`: a test detector whose `info` spins forever, as a guest would that does heavy
//! work (or hangs) before it can say what it is. Dropped into a guest directory, it must not
//! hold up the runs that look another guest up by name there.

use kit::detector::{DetectorInfo, Face, Guest, GuestError, Image, Param};

struct SlowInfo;

kit::export_detector!(SlowInfo);

impl Guest for SlowInfo {
    fn info() -> DetectorInfo {
        loop {
            std::hint::spin_loop();
        }
    }

    fn detect(_image: Image, _params: Vec<Param>) -> Result<Vec<Face>, GuestError> {
        Ok(Vec::new())
    }
}
