//! What `guests/kit` hands every guest agrees with the host.

use refacen_imaging::align::CANONICAL;

/// kit's canonical template is a copy of the host's, so that a model declaring it gets the
/// host's normalized faces as they are (no second warp): the copy must be the very same
/// f32 values, in the host's landmark order.
#[test]
fn kit_canonical_template_is_the_hosts() {
    let kit = kit::canonical_template();
    assert_eq!((kit.width, kit.height), (CANONICAL.width, CANONICAL.height), "template size");
    let l = &kit.landmarks;
    let kit_points = [
        ("left eye", l.left_eye),
        ("right eye", l.right_eye),
        ("nose", l.nose),
        ("mouth left", l.mouth_left),
        ("mouth right", l.mouth_right),
    ];
    for ((name, point), [x, y]) in kit_points.into_iter().zip(CANONICAL.landmarks) {
        assert_eq!(
            (point.x.to_bits(), point.y.to_bits()),
            (x.to_bits(), y.to_bits()),
            "{name}: kit has ({}, {}), the host ({x}, {y})",
            point.x,
            point.y
        );
    }
}
