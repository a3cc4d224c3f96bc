"""Generate the image corpus that the effnet-imaging tests decode.

From one sample photo this writes every encoding variant the server must
accept: JPEG baseline, progressive, restart markers, grayscale, CMYK, YCCK,
RGB colour space and EXIF orientations 1..8; PNG 8/16-bit, grayscale, alpha,
palette with transparency and Adam7 interlacing; WebP; GIF; BMP. It also
writes hostile inputs the server must reject: empty, random bytes, truncated
files, oversized headers and formats that are detected but unsupported. ``cases.json`` lists
each file with its expected outcome and, for decodable files, the reference
PNG whose pixels the decode must match and the bound on the mean absolute
difference after preprocessing (in 8-bit levels).

The ``reference`` subcommand writes Pillow's preprocessing (exif_transpose,
convert("RGB"), centre crop, BICUBIC resize) as PNG files, the
evaluation pipeline that the Rust preprocessing must reproduce.

Everything is generated locally from the given photos; nothing is downloaded.
Pillow cannot write YCCK JPEGs, so that case is encoded with libjpeg-turbo
through imagecodecs.

Usage:
    .venv/bin/python tools/make_image_corpus.py corpus PHOTO OUT_DIR
    .venv/bin/python tools/make_image_corpus.py reference OUT_DIR PHOTO...
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image, ImageOps

# Size of the base photo. Landscape, so that a missing or wrong EXIF rotation
# changes the decoded dimensions, and a multiple of 16, so that JPEG blocks
# line up after rotation.
BASE_WIDTH = 64
BASE_HEIGHT = 48

# The crop padding of the EfficientNet evaluation preprocessing.
CROP_PADDING = 32

# Pillow transpose that exif_transpose applies for each EXIF orientation.
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Inverse of each transpose: the stored pixels for orientation k are the
# upright photo with the inverse applied, so that exif_transpose restores it.
INVERSE_TRANSPOSE = {
    Image.Transpose.FLIP_LEFT_RIGHT: Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.ROTATE_180: Image.Transpose.ROTATE_180,
    Image.Transpose.FLIP_TOP_BOTTOM: Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE: Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.TRANSVERSE: Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}

EXIF_ORIENTATION_TAG = 0x0112

# Bounds on the mean absolute difference (8-bit levels, after preprocessing to 32x32)
# between a lossy encoding and the lossless photo. They cover the compression loss of the
# 64x48 photo: about 3.5 for 4:2:0 chroma at quality 92 and 1.7 for 4:4:4 at quality 95.
# A wrong orientation, colour conversion or frame differs by tens of levels.
JPEG_420_BOUND = 4.5
JPEG_444_BOUND = 2.5
# YCCK goes through two colour conversions (RGB to CMYK, inverted CMY to YCbCr) and four
# quantised channels: 2.8 at quality 95, measured on the house finch photo of the committed
# corpus. The decode itself equals Pillow's exactly.
JPEG_YCCK_BOUND = 3.5

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Adam7 passes as (x start, y start, x step, y step).
ADAM7_PASSES = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


class Corpus:
    """Writes files into one directory and records their expected outcome."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.cases: list[dict] = []

    def write(self, name: str, data: bytes, expect: str, note: str, **fields) -> None:
        (self.out_dir / name).write_bytes(data)
        self.cases.append({"file": name, "expect": expect, "note": note, **fields})

    def ok(self, name: str, data: bytes, reference: str, bound: float, note: str) -> None:
        """Record a file that must decode to the pixels of `reference` within `bound` levels."""
        self.write(name, data, "ok", note, reference=reference, max_mean_abs_diff=bound)

    def reference(self, name: str, image: Image.Image) -> None:
        """Write a lossless PNG that decodable cases are compared against."""
        image.save(self.out_dir / name, format="PNG")

    def save_cases(self) -> None:
        text = json.dumps({"cases": self.cases}, indent=1) + "\n"
        (self.out_dir / "cases.json").write_text(text)


# === encoders Pillow lacks ===


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_ihdr(width: int, height: int, bit_depth: int, color_type: int, interlace: int) -> bytes:
    payload = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    return png_chunk(b"IHDR", payload)


def png_scanlines(pixels: np.ndarray) -> bytes:
    """Serialise rows of an (h, w, c) uint8 or big-endian uint16 array with filter type 0."""
    rows = pixels.reshape(pixels.shape[0], -1).tobytes()
    row_len = len(rows) // pixels.shape[0]
    return b"".join(b"\x00" + rows[i : i + row_len] for i in range(0, len(rows), row_len))


def encode_png(pixels: np.ndarray, color_type: int, interlace: bool = False) -> bytes:
    """Encode an (h, w, c) array as PNG: uint8 gives 8-bit samples, uint16 gives 16-bit."""
    height, width = pixels.shape[:2]
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    if bit_depth == 16:
        pixels = pixels.astype(">u2")

    if interlace:
        data = b""
        for x0, y0, dx, dy in ADAM7_PASSES:
            sub = pixels[y0::dy, x0::dx]
            if sub.size:
                data += png_scanlines(sub)
    else:
        data = png_scanlines(pixels)

    return (
        PNG_SIGNATURE
        + png_ihdr(width, height, bit_depth, color_type, 1 if interlace else 0)
        + png_chunk(b"IDAT", zlib.compress(data, 9))
        + png_chunk(b"IEND", b"")
    )


def png_bomb(width: int, height: int, rows: int) -> bytes:
    """A PNG declaring `width` x `height` gray8 whose IDAT inflates to `rows` real zero rows.

    The compressed data is about a thousandth of what it inflates to, as in a
    decompression bomb; only the header tells a decoder how large it would be.
    """
    row = b"\x00" * (width + 1)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    return (
        PNG_SIGNATURE
        + png_ihdr(width, height, 8, 0, 0)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def gif_huge_screen(width: int, height: int) -> bytes:
    """A GIF whose logical screen is `width` x `height` with a single 1x1 frame."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    # LZW minimum code size 2; one sub-block: clear, index 0, end of information.
    pixels = b"\x02\x02\x44\x01\x00"
    return header + palette + descriptor + pixels + b"\x3b"


def webp_huge_canvas(lossy: bytes, width: int, height: int) -> bytes:
    """Wrap the VP8 chunk of a simple lossy WebP in a VP8X header declaring a larger canvas."""
    if lossy[12:16] != b"VP8 ":
        raise ValueError("expected a simple lossy WebP")
    vp8 = lossy[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + vp8
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png_header_only(width: int, height: int) -> bytes:
    """Build a PNG that declares `width` x `height` RGB8 but carries almost no pixel data."""
    return (
        PNG_SIGNATURE
        + png_ihdr(width, height, 8, 2, 0)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def jpeg_with_dimensions(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOF0 or SOF2) of a JPEG to declare other dimensions."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = jpeg.find(marker)
        if at >= 0:
            # SOFn: marker, length (2), precision (1), height (2), width (2).
            patched = bytearray(jpeg)
            patched[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(patched)
    raise ValueError("no SOF0 or SOF2 marker in the JPEG")


def isobmff_ftyp(major_brand: bytes, compatible: list[bytes]) -> bytes:
    """Build an ISO base media file (AVIF, HEIC) with only an ftyp box and an empty meta box."""
    body = major_brand + struct.pack(">I", 0) + b"".join(compatible)
    ftyp = struct.pack(">I", 8 + len(body)) + b"ftyp" + body
    meta = struct.pack(">I", 12) + b"meta" + struct.pack(">I", 0)
    return ftyp + meta


# === corpus ===


def base_photo(path: Path, size: tuple[int, int]) -> Image.Image:
    """Centre-crop the photo to the aspect ratio of `size` and downscale it to `size`."""
    with Image.open(path) as image:
        photo = ImageOps.exif_transpose(image).convert("RGB")
    return ImageOps.fit(photo, size, Image.Resampling.LANCZOS)


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def alpha_mask(width: int, height: int) -> np.ndarray:
    """Alpha with transparent, half-transparent and opaque vertical bands plus a ramp row band."""
    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[:, : width // 4] = 0
    alpha[:, width // 4 : width // 2] = 128
    alpha[: height // 4, :] = np.linspace(0, 255, width).astype(np.uint8)
    return alpha


def composite_on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend onto white, rounded to nearest: the transparency rule of effnet-imaging."""
    a = alpha.astype(np.uint32)[..., None]
    c = colour.astype(np.uint32)
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def encode_ycck(photo: Image.Image) -> bytes:
    """Encode `photo` as an Adobe YCCK JPEG.

    Adobe applications store CMYK inverted and write an APP14 marker. With
    transform 2 in that marker, libjpeg converts the inverted C, M and Y to
    YCbCr and keeps K.
    """
    inverted_cmyk = 255 - np.asarray(photo.convert("CMYK"))
    data = imagecodecs.jpeg8_encode(
        inverted_cmyk, level=95, colorspace="CMYK", outcolorspace="YCCK", subsampling=(1, 1)
    )
    with Image.open(io.BytesIO(data)) as decoded:
        if decoded.mode != "CMYK" or decoded.info.get("adobe_transform") != 2:
            raise RuntimeError("imagecodecs did not write an Adobe YCCK JPEG")
    return bytes(data)


def write_jpeg_variants(corpus: Corpus, photo: Image.Image, gray: Image.Image) -> bytes:
    baseline = encode(photo, "JPEG", quality=92)
    corpus.ok("baseline.jpg", baseline, "rgb.png", JPEG_420_BOUND, "baseline JPEG, 4:2:0, quality 92")
    corpus.ok(
        "progressive.jpg",
        encode(photo, "JPEG", quality=92, progressive=True),
        "rgb.png",
        JPEG_420_BOUND,
        "progressive JPEG",
    )
    corpus.ok(
        "restart.jpg",
        encode(photo, "JPEG", quality=92, restart_marker_blocks=1),
        "rgb.png",
        JPEG_420_BOUND,
        "baseline JPEG with a restart marker after every MCU",
    )
    corpus.ok(
        "progressive_restart.jpg",
        encode(photo, "JPEG", quality=92, progressive=True, restart_marker_rows=1),
        "rgb.png",
        JPEG_420_BOUND,
        "progressive JPEG with a restart marker after every MCU row",
    )
    corpus.ok("gray.jpg", encode(gray, "JPEG", quality=92), "gray.png", JPEG_444_BOUND, "grayscale JPEG")
    corpus.ok(
        "cmyk.jpg",
        encode(photo.convert("CMYK"), "JPEG", quality=95),
        "rgb.png",
        JPEG_444_BOUND,
        "Adobe CMYK JPEG (inverted, as Photoshop and Pillow write it), K = 0",
    )
    corpus.ok(
        "ycck.jpg",
        encode_ycck(photo),
        "rgb.png",
        JPEG_YCCK_BOUND,
        "Adobe YCCK JPEG (APP14 transform 2, inverted CMYK), as Photoshop writes CMYK",
    )
    corpus.ok(
        "rgb_colourspace.jpg",
        encode(photo, "JPEG", quality=95, keep_rgb=True),
        "rgb.png",
        JPEG_444_BOUND,
        "JPEG with RGB components and no YCbCr transform (Adobe transform 0)",
    )

    for orientation in range(1, 9):
        stored = photo
        if orientation in EXIF_TRANSPOSE:
            stored = photo.transpose(INVERSE_TRANSPOSE[EXIF_TRANSPOSE[orientation]])
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = orientation
        data = encode(stored, "JPEG", quality=95, subsampling=0, exif=exif)
        check_exif_transpose(data, photo, tolerance=4.0)
        corpus.ok(
            f"orientation{orientation}.jpg",
            data,
            "rgb.png",
            JPEG_444_BOUND,
            f"JPEG with EXIF orientation {orientation}; upright after the transform",
        )
    return baseline


def write_png_variants(corpus: Corpus, rgb: np.ndarray, gray: np.ndarray) -> bytes:
    height, width = gray.shape

    png = encode_png(rgb, color_type=2)
    corpus.ok("rgb8.png", png, "rgb.png", 0.0, "PNG RGB 8-bit")
    corpus.ok(
        "interlaced.png",
        encode_png(rgb, color_type=2, interlace=True),
        "rgb.png",
        0.0,
        "PNG RGB 8-bit, Adam7 interlaced",
    )

    # 16-bit samples whose rounding v / 257 gives back the 8-bit photo exactly:
    # offsets of -128, 0 and +128 in a diagonal pattern exercise the rounding.
    y, x = np.mgrid[0:height, 0:width]
    jitter = np.repeat((((x + y) % 3 - 1) * 128)[..., None], 3, axis=2)
    rgb16 = np.clip(rgb.astype(np.int64) * 257 + jitter, 0, 65535).astype(np.uint16)
    corpus.ok("rgb16.png", encode_png(rgb16, color_type=2), "rgb.png", 0.0, "PNG RGB 16-bit")
    gray16 = np.clip(gray.astype(np.int64) * 257 + jitter[..., 0], 0, 65535).astype(np.uint16)
    corpus.ok(
        "gray16.png", encode_png(gray16[..., None], color_type=0), "gray.png", 0.0, "PNG gray 16-bit"
    )
    corpus.ok("gray8.png", encode_png(gray[..., None], color_type=0), "gray.png", 0.0, "PNG gray 8-bit")

    alpha = alpha_mask(width, height)
    corpus.reference("gray_alpha_on_white.png", Image.fromarray(composite_on_white(gray[..., None], alpha)[..., 0]))
    corpus.ok(
        "gray_alpha.png",
        encode_png(np.dstack([gray, alpha]), color_type=4),
        "gray_alpha_on_white.png",
        0.0,
        "PNG gray + alpha 8-bit; transparent pixels become white",
    )
    corpus.reference("rgba_on_white.png", Image.fromarray(composite_on_white(rgb, alpha)))
    corpus.ok(
        "rgba8.png",
        encode_png(np.dstack([rgb, alpha]), color_type=6),
        "rgba_on_white.png",
        0.0,
        "PNG RGBA 8-bit; transparent pixels become white",
    )
    rgba16 = np.dstack([rgb, alpha]).astype(np.uint16) * 257
    corpus.ok(
        "rgba16.png",
        encode_png(rgba16, color_type=6),
        "rgba_on_white.png",
        0.0,
        "PNG RGBA 16-bit; transparent pixels become white",
    )

    # Palette of 64 colours; the left quarter uses an extra, fully transparent entry.
    palette_image = Image.fromarray(rgb).quantize(colors=64, dither=Image.Dither.NONE)
    indices = np.array(palette_image)
    indices[:, : width // 4] = 64
    palette = palette_image.getpalette()[: 64 * 3] + [0, 0, 0]
    paletted = Image.fromarray(indices, mode="P")
    paletted.putpalette(palette)
    colours = np.array(palette, dtype=np.uint8).reshape(-1, 3)[indices]
    transparent = np.where(indices == 64, 0, 255).astype(np.uint8)
    corpus.reference("palette_on_white.png", Image.fromarray(composite_on_white(colours, transparent)))
    corpus.ok(
        "palette_trns.png",
        encode(paletted, "PNG", transparency=64),
        "palette_on_white.png",
        0.0,
        "PNG palette with a tRNS entry; transparent pixels become white",
    )

    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    rotated = Image.fromarray(rgb).transpose(INVERSE_TRANSPOSE[EXIF_TRANSPOSE[6]])
    data = encode(rotated, "PNG", exif=exif)
    check_exif_transpose(data, Image.fromarray(rgb), tolerance=0.0)
    corpus.ok("orientation6.png", data, "rgb.png", 0.0, "PNG with an eXIf chunk, orientation 6")
    return png


def write_other_variants(corpus: Corpus, photo: Image.Image) -> None:
    corpus.ok("lossy.webp", encode(photo, "WEBP", quality=90), "rgb.png", JPEG_420_BOUND, "WebP lossy, quality 90")
    corpus.ok(
        "lossless.webp", encode(photo, "WEBP", lossless=True), "rgb.png", 0.0, "WebP lossless"
    )
    corpus.ok("rgb24.bmp", encode(photo, "BMP"), "rgb.png", 0.0, "BMP 24-bit")

    first = photo.quantize(colors=128, dither=Image.Dither.NONE)
    second = ImageOps.invert(photo).quantize(colors=128, dither=Image.Dither.NONE)
    corpus.reference("gif_frame0.png", first.convert("RGB"))
    corpus.ok(
        "animated.gif",
        encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0),
        "gif_frame0.png",
        0.0,
        "GIF with two frames; the first one is decoded",
    )


def write_hostile(corpus: Corpus, photo: Image.Image, baseline_jpeg: bytes, png: bytes) -> None:
    rng = np.random.default_rng(7)
    corpus.write("empty.bin", b"", "empty", "zero bytes")

    random_bytes = bytes([0x00]) + rng.integers(0, 256, size=1023, dtype=np.uint8).tobytes()
    corpus.write("random.bin", random_bytes, "unknown_format", "1 KiB of random bytes")
    corpus.write("text.txt", b"this is not an image\n", "unknown_format", "plain text")

    corpus.write(
        "truncated.jpg",
        baseline_jpeg[: len(baseline_jpeg) // 2],
        "invalid",
        "baseline JPEG cut in half",
    )
    corpus.write("truncated.png", png[: len(png) // 2], "invalid", "PNG cut in half")
    corpus.write(
        "jpeg_garbage.jpg",
        b"\xff\xd8\xff" + rng.integers(0, 256, size=512, dtype=np.uint8).tobytes(),
        "invalid",
        "JPEG signature followed by random bytes",
    )

    corpus.write(
        "bomb.png",
        png_header_only(100_000, 100_000),
        "too_large",
        "PNG header declaring 100000x100000 (decompression bomb)",
        width=100_000,
        height=100_000,
    )
    corpus.write(
        "bomb_idat.png",
        png_bomb(100_000, 100_000, rows=640),
        "too_large",
        "PNG declaring 100000x100000 gray with 64 MB of real zero rows deflated in its IDAT",
        width=100_000,
        height=100_000,
    )
    corpus.write(
        "huge_screen.gif",
        gif_huge_screen(65_535, 65_535),
        "too_large",
        "GIF with a 65535x65535 logical screen and one 1x1 frame",
        width=65_535,
        height=65_535,
    )
    corpus.write(
        "huge_canvas.webp",
        webp_huge_canvas(encode(photo, "WEBP", quality=90), 20_000, 20_000),
        "too_large",
        "WebP whose VP8X header declares a 20000x20000 canvas around a small frame",
        width=20_000,
        height=20_000,
    )
    corpus.write(
        "wide.png",
        png_header_only(20_000, 300),
        "too_large",
        "PNG header declaring 20000x300, wider than 16384",
        width=20_000,
        height=300,
    )
    corpus.write(
        "pixels.png",
        png_header_only(8_000, 6_000),
        "too_large",
        "PNG header declaring 8000x6000, more than 40000000 pixels",
        width=8_000,
        height=6_000,
    )
    corpus.write(
        "huge.jpg",
        jpeg_with_dimensions(baseline_jpeg, 65_000, 65_000),
        "too_large",
        "JPEG frame header declaring 65000x65000",
        width=65_000,
        height=65_000,
    )

    corpus.write(
        "photo.tiff", encode(photo.resize((16, 16)), "TIFF"), "unsupported_format", "TIFF", format="tiff"
    )
    corpus.write(
        "ftyp.avif",
        isobmff_ftyp(b"avif", [b"avif", b"mif1", b"miaf"]),
        "unsupported_format",
        "ISO BMFF ftyp box with brand avif",
        format="avif",
    )
    corpus.write(
        "ftyp.heic",
        isobmff_ftyp(b"heic", [b"mif1", b"heic"]),
        "unsupported_format",
        "ISO BMFF ftyp box with brand heic",
        format="heic",
    )


def check_exif_transpose(data: bytes, upright: Image.Image, tolerance: float) -> None:
    """Fail unless Pillow's exif_transpose of `data` gives the upright photo."""
    with Image.open(io.BytesIO(data)) as image:
        restored = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.float64)
    expected = np.asarray(upright, dtype=np.float64)
    if restored.shape != expected.shape:
        raise AssertionError(f"exif_transpose gives {restored.shape}, expected {expected.shape}")
    diff = np.abs(restored - expected).mean()
    if diff > tolerance:
        raise AssertionError(f"exif_transpose differs from the upright photo by {diff:.2f} levels")


def make_corpus(photo_path: Path, out_dir: Path, size: tuple[int, int]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(out_dir)

    photo = base_photo(photo_path, size)
    gray_image = photo.convert("L")
    corpus.reference("rgb.png", photo)
    corpus.reference("gray.png", gray_image)

    rgb = np.asarray(photo)
    gray = np.asarray(gray_image)
    baseline_jpeg = write_jpeg_variants(corpus, photo, gray_image)
    png = write_png_variants(corpus, rgb, gray)
    write_other_variants(corpus, photo)
    write_hostile(corpus, photo, baseline_jpeg, png)
    corpus.save_cases()

    total = sum(path.stat().st_size for path in out_dir.iterdir())
    print(f"wrote {len(corpus.cases)} cases to {out_dir} ({total} bytes)")


# === Pillow preprocessing reference ===


def pillow_preprocess(image: Image.Image, resolution: int) -> np.ndarray:
    """The evaluation preprocessing up to the resize: returns (res, res, 3) uint8."""
    image = ImageOps.exif_transpose(image).convert("RGB")
    width, height = image.size
    crop = int(resolution / (resolution + CROP_PADDING) * min(width, height))
    top = (height - crop + 1) // 2
    left = (width - crop + 1) // 2
    image = image.crop((left, top, left + crop, top + crop))
    resized = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return np.asarray(resized)


def synthetic_pattern(width: int, height: int) -> np.ndarray:
    """Gradients, hard edges and fine stripes: compresses well and stresses the filter."""
    y, x = np.mgrid[0:height, 0:width]
    red = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    green = np.where((x // 7 + y // 5) % 2 == 0, 230, 20).astype(np.uint8)
    blue = np.where(x % 3 == 0, 255, (y * 255 // max(height - 1, 1))).astype(np.uint8)
    return np.dstack([red, green, blue])


def make_reference(
    out_dir: Path, photos: list[Path], resolutions: list[int], max_side: int | None
) -> None:
    """Write the inputs and Pillow's resized crops as PNG, plus an index.

    With `max_side`, photos are first downscaled to fit, which keeps committed fixtures
    small. Without it, each entry also names the original photo file (`source`), so that a
    decoder can be compared with Pillow's decode as well.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = [("pattern.png", Image.fromarray(synthetic_pattern(321, 243)), None)]
    for path in photos:
        with Image.open(path) as image:
            photo = ImageOps.exif_transpose(image).convert("RGB")
        if max_side:
            photo = ImageOps.contain(photo, (max_side, max_side), Image.Resampling.LANCZOS)
        # Only unscaled photos can be compared from their original encoding.
        inputs.append((path.stem + ".png", photo, None if max_side else path.name))

    entries = []
    for name, image, source in inputs:
        image.save(out_dir / name, format="PNG")
        for resolution in resolutions:
            expected = pillow_preprocess(image, resolution)
            output = f"{Path(name).stem}.{resolution}.png"
            Image.fromarray(expected).save(out_dir / output, format="PNG")
            entry = {"input": name, "resolution": resolution, "expected": output}
            if source:
                entry["source"] = source
            entries.append(entry)

    text = json.dumps({"crop_padding": CROP_PADDING, "entries": entries}, indent=1) + "\n"
    (out_dir / "reference.json").write_text(text)
    print(f"wrote {len(entries)} reference outputs to {out_dir}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    corpus = commands.add_parser("corpus", help="write the decode corpus and cases.json")
    corpus.add_argument("photo", type=Path, help="sample photo, any format Pillow reads")
    corpus.add_argument("out_dir", type=Path)
    corpus.add_argument(
        "--size",
        default=f"{BASE_WIDTH}x{BASE_HEIGHT}",
        help="WxH of the base photo, landscape, multiples of 16 (default: %(default)s)",
    )

    reference = commands.add_parser(
        "reference", help="write Pillow preprocessing outputs for PNG copies of the photos"
    )
    reference.add_argument("out_dir", type=Path)
    reference.add_argument("photos", type=Path, nargs="*", help="photos to add to the pattern")
    reference.add_argument(
        "--resolution",
        type=int,
        action="append",
        help="output side in pixels; repeatable (default: 24, 64 and 224)",
    )
    reference.add_argument(
        "--max-side", type=int, help="downscale photos to fit this many pixels first"
    )

    args = parser.parse_args(argv)
    if args.command == "corpus":
        width, height = (int(side) for side in args.size.split("x"))
        make_corpus(args.photo, args.out_dir, (width, height))
    else:
        resolutions = args.resolution or [24, 64, 224]
        make_reference(args.out_dir, args.photos, resolutions, args.max_side)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
