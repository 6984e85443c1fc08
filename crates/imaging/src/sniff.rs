//! What a file is, by its content and, for well-known junk, by its name: a photo refacen
//! reads, an image in a format it does not read, or something that is no image at all (a
//! video, a sidecar, an operating system's folder metadata).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The formats refacen decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhotoFormat {
    Jpeg,
    Png,
    Gif,
    Bmp,
    WebP,
    Tiff,
    /// HEIC/HEIF (HEVC in the HEIF container; the iPhone default).
    Heif,
    /// AV1 in the HEIF container.
    Avif,
}

impl PhotoFormat {
    pub fn name(self) -> &'static str {
        match self {
            PhotoFormat::Jpeg => "JPEG",
            PhotoFormat::Png => "PNG",
            PhotoFormat::Gif => "GIF",
            PhotoFormat::Bmp => "BMP",
            PhotoFormat::WebP => "WebP",
            PhotoFormat::Tiff => "TIFF",
            PhotoFormat::Heif => "HEIC/HEIF",
            PhotoFormat::Avif => "AVIF",
        }
    }
}

/// The formats refacen reads, for messages and `--help`.
pub const SUPPORTED_FORMATS: &str = "JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC/HEIF, AVIF";

/// What a file's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    Photo(PhotoFormat),
    /// An image format refacen does not decode (named).
    Unsupported(&'static str),
    /// A recognized file that is not a still image (named).
    NotAnImage(&'static str),
    /// No signature refacen knows.
    Unknown,
}

/// Sniffs `data` (the whole file or at least its first few KiB).
pub fn sniff(data: &[u8]) -> Content {
    if let Some(content) = iso_media(data) {
        return content;
    }
    let starts = |magic: &[u8]| data.starts_with(magic);
    // Formats the `image` crate does not recognize, or would take for another.
    let unsupported: [(&[u8], &str); 8] = [
        (b"\xff\x0a", "JPEG XL"),
        (b"\0\0\0\x0cJXL \r\n\x87\n", "JPEG XL"),
        (b"\0\0\0\x0cjP  \r\n\x87\n", "JPEG 2000"),
        (b"8BPS", "Photoshop (PSD)"),
        (b"FUJIFILMCCD-RAW", "Fujifilm RAF raw"),
        (b"IIRO", "Olympus ORF raw"),
        (b"IIU\0", "Panasonic RW2 raw"),
        (b"%PDF", "PDF"),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(magic, _)| starts(magic)) {
        return Content::Unsupported(name);
    }
    let not_images: [(&[u8], &str); 5] = [
        (b"\0\0\0\x01Bud1", "macOS folder metadata (.DS_Store)"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE compound file (e.g. Windows Thumbs.db)"),
        (b"\0\x05\x16\x07", "AppleDouble resource fork"),
        (b"RIFF", "a RIFF file that is not WebP (e.g. AVI or WAV)"),
        (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    ];
    match image::guess_format(data) {
        Ok(image::ImageFormat::Jpeg) => Content::Photo(PhotoFormat::Jpeg),
        Ok(image::ImageFormat::Png) => Content::Photo(PhotoFormat::Png),
        Ok(image::ImageFormat::Gif) => Content::Photo(PhotoFormat::Gif),
        Ok(image::ImageFormat::Bmp) => Content::Photo(PhotoFormat::Bmp),
        Ok(image::ImageFormat::WebP) => Content::Photo(PhotoFormat::WebP),
        Ok(image::ImageFormat::Tiff) => Content::Photo(PhotoFormat::Tiff),
        Ok(other) => Content::Unsupported(format_name(other)),
        Err(_) => match not_images.iter().find(|(magic, _)| starts(magic)) {
            Some((_, what)) => Content::NotAnImage(what),
            None => Content::Unknown,
        },
    }
}

fn format_name(format: image::ImageFormat) -> &'static str {
    use image::ImageFormat as F;
    match format {
        F::Pnm => "PNM",
        F::Tga => "TGA",
        F::Dds => "DDS",
        F::Hdr => "Radiance HDR",
        F::OpenExr => "OpenEXR",
        F::Farbfeld => "Farbfeld",
        F::Avif => "AVIF",
        F::Qoi => "QOI",
        F::Ico => "ICO",
        _ => "an image format",
    }
}

/// An ISO base media file (`ftyp` box first): HEIF and AVIF photos, but also the MOV and MP4
/// videos phones put beside them.
fn iso_media(data: &[u8]) -> Option<Content> {
    if data.len() < 16 || &data[4..8] != b"ftyp" {
        return None;
    }
    let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let end = size.clamp(16, 4096).min(data.len());
    let major = &data[8..12];
    // Compatible brands follow the major brand and its minor version.
    let compatible: Vec<&[u8]> = data[16..end].chunks_exact(4).collect();
    let any = |brands: &[&[u8]]| brands.contains(&major) || compatible.iter().any(|b| brands.contains(b));
    const AVIF: [&[u8]; 2] = [b"avif", b"avis"];
    const HEIF: [&[u8]; 8] = [b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"];
    Some(if AVIF.contains(&major) {
        Content::Photo(PhotoFormat::Avif)
    } else if HEIF.contains(&major) {
        Content::Photo(PhotoFormat::Heif)
    } else if major == b"crx " {
        Content::Unsupported("Canon CR3 raw")
    } else if any(&AVIF) {
        Content::Photo(PhotoFormat::Avif)
    } else if any(&HEIF) {
        Content::Photo(PhotoFormat::Heif)
    } else {
        Content::NotAnImage("a video or other ISO media file (QuickTime/MP4)")
    })
}

/// Why a file is junk by its name alone (never read): what cameras, phones, operating
/// systems and sync tools leave beside photos.
pub fn junk_name(file_name: &OsStr) -> Option<&'static str> {
    let bytes = file_name.as_bytes();
    let lower = bytes.to_ascii_lowercase();
    let named: [(&[u8], &str); 5] = [
        (b".ds_store", "macOS folder metadata"),
        (b"thumbs.db", "Windows thumbnail cache"),
        (b"ehthumbs.db", "Windows thumbnail cache"),
        (b"desktop.ini", "Windows folder settings"),
        (b".picasa.ini", "Picasa metadata"),
    ];
    if let Some((_, why)) = named.iter().find(|(name, _)| lower == *name) {
        return Some(why);
    }
    if bytes.starts_with(b"._") {
        return Some("AppleDouble resource fork");
    }
    let extension = Path::new(file_name).extension()?.as_bytes().to_ascii_lowercase();
    let by_extension: [(&[&[u8]], &str); 4] = [
        (&[b"mov", b"mp4", b"m4v", b"3gp", b"avi", b"mkv", b"mts", b"m2ts", b"wmv", b"webm"], "a video"),
        (&[b"aae", b"xmp", b"thm", b"json"], "a photo sidecar (edits, metadata)"),
        (&[b"txt", b"md", b"log", b"ini", b"db", b"tmp", b"part"], "not a photo file"),
        (&[b"wav", b"m4a", b"mp3"], "audio"),
    ];
    by_extension
        .iter()
        .find(|(extensions, _)| extensions.contains(&extension.as_slice()))
        .map(|(_, why)| *why)
}

/// The photo format a file's name claims, if any.
pub fn claimed_format(path: &Path) -> Option<&'static str> {
    let extension = path.extension()?.as_bytes().to_ascii_lowercase();
    let claimed: [(&[&[u8]], &str); 8] = [
        (&[b"jpg", b"jpeg", b"jpe", b"jfif"], "JPEG"),
        (&[b"png"], "PNG"),
        (&[b"gif"], "GIF"),
        (&[b"bmp"], "BMP"),
        (&[b"webp"], "WebP"),
        (&[b"tif", b"tiff"], "TIFF"),
        (&[b"heic", b"heif", b"hif"], "HEIC"),
        (&[b"avif"], "AVIF"),
    ];
    claimed.iter().find(|(extensions, _)| extensions.contains(&extension.as_slice())).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_media_brands_tell_photos_from_videos() {
        let ftyp = |major: &[u8; 4], compatible: &[&[u8; 4]]| {
            let mut b = Vec::new();
            b.extend_from_slice(&(16 + 4 * compatible.len() as u32).to_be_bytes());
            b.extend_from_slice(b"ftyp");
            b.extend_from_slice(major);
            b.extend_from_slice(&[0; 4]);
            compatible.iter().for_each(|c| b.extend_from_slice(*c));
            b
        };
        assert_eq!(sniff(&ftyp(b"heic", &[b"mif1", b"heic"])), Content::Photo(PhotoFormat::Heif));
        assert_eq!(sniff(&ftyp(b"avif", &[b"avif", b"mif1"])), Content::Photo(PhotoFormat::Avif));
        assert_eq!(sniff(&ftyp(b"mif1", &[b"avif"])), Content::Photo(PhotoFormat::Heif));
        assert!(matches!(sniff(&ftyp(b"qt  ", &[b"qt  "])), Content::NotAnImage(_)));
        assert!(matches!(sniff(&ftyp(b"isom", &[b"iso2", b"mp41"])), Content::NotAnImage(_)));
        assert!(matches!(sniff(&ftyp(b"crx ", &[])), Content::Unsupported(_)));
    }

    #[test]
    fn junk_is_known_by_name_and_photos_by_extension() {
        for junk in [".DS_Store", "Thumbs.db", "IMG_0001.MOV", "._IMG_0001.JPG", "IMG_0001.AAE", "notes.txt"]
        {
            assert!(junk_name(OsStr::new(junk)).is_some(), "{junk}");
        }
        for photo in ["IMG_0001.JPG", "a.heic", "b.png", "noext"] {
            assert!(junk_name(OsStr::new(photo)).is_none(), "{photo}");
        }
        assert_eq!(claimed_format(Path::new("x/IMG.JPEG")), Some("JPEG"));
        assert_eq!(claimed_format(Path::new("x/notes.txt")), None);
    }
}
