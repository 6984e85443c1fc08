//! Bad photos among good ones: each is reported, the rest are detected, the run fails.

use crate::support::{faces, photo, refacen, write};

#[test]
fn bad_files_are_reported_per_file_and_the_rest_detected() {
    let dir = tempfile::tempdir().unwrap();
    let obama = std::fs::read(photo("obama2.jpg")).unwrap();
    let mut corrupt = obama.clone();
    // Destroy entropy-coded data in the middle of the file.
    let middle = corrupt.len() / 2;
    corrupt[middle..middle + 2000].iter_mut().for_each(|b| *b = 0xff);
    let inputs = [
        photo("astronaut.png"),
        write(dir.path(), "corrupt.jpg", &corrupt),
        write(dir.path(), "truncated.jpg", &obama[..obama.len() / 3]),
        write(dir.path(), "empty.jpg", b""),
        write(dir.path(), "notes.jpg", b"this is a text file, not a photo\n"),
        photo("biden.jpg"),
    ];
    let out = refacen(&[&["detect".to_string(), "--json".into()][..], &inputs[..]].concat());
    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines = out.json_lines();
    assert_eq!(lines.len(), inputs.len());
    assert_eq!(faces(&lines[0]).len(), 1);
    assert_eq!(faces(&lines[5]).len(), 1);
    let expect = [
        (1, "corrupt image", "corrupt.jpg"),
        (2, "corrupt image", "truncated.jpg"),
        (3, "corrupt image", "empty.jpg"),
        // Named like a photo: a damaged photo, not junk.
        (4, "corrupt image", "notes.jpg"),
    ];
    for (i, cause, name) in expect {
        assert_eq!(lines[i]["cause"], cause, "{}", lines[i]);
        assert!(lines[i]["error"].as_str().unwrap().contains(name), "{}", lines[i]);
    }
    assert!(out.stderr.contains("6 photo(s), 2 ok, 4 failed (4 corrupt image)"), "{}", out.stderr);
}

#[test]
fn a_missing_file_is_reported() {
    let out = refacen(&["detect", "/nonexistent/photo.jpg", &photo("astronaut.png")]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("/nonexistent/photo.jpg: cannot read"), "{}", out.stderr);
}
