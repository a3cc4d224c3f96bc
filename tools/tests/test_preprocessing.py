import numpy as np
from PIL import Image

from effnet_modelbuild import preprocessing


def test_center_crop_box_landscape():
    # crop = int(224 / 256 * 480) = 420; left = (640 - 420 + 1) // 2 = 110; top = (480 - 420 + 1) // 2 = 30
    assert preprocessing.center_crop_box(640, 480, 224) == (110, 30, 530, 450)


def test_center_crop_box_odd_margin():
    # crop = int(224 / 256 * 101) = 88; the odd margin of 13 puts the extra pixel before the crop
    assert preprocessing.center_crop_box(101, 101, 224) == (7, 7, 95, 95)


def test_output_shape_and_range():
    image = Image.new("RGB", (300, 200), (255, 0, 127))
    tensor = preprocessing.preprocess_image(image, 224)
    assert tensor.shape == (3, 224, 224)
    assert tensor.dtype == np.float32
    assert np.allclose(tensor[0], 1.0)
    assert np.allclose(tensor[1], -127.0 / 128.0)
    assert np.allclose(tensor[2], 0.0)


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgb = np.asarray(preprocessing.to_rgb(image))
    assert (rgb == 255).all()


def test_sixteen_bit_drops_low_byte():
    image = Image.fromarray(np.full((8, 8), 0x12FF, dtype=np.uint16))
    rgb = np.asarray(preprocessing.to_rgb(image))
    assert rgb.shape == (8, 8, 3)
    assert (rgb == 0x12).all()


def test_exif_orientation_applied():
    # Top half red, bottom half blue; orientation 6 means "rotate 90 degrees clockwise to display".
    pixels = np.zeros((30, 60, 3), dtype=np.uint8)
    pixels[:15, :, 0] = 255
    pixels[15:, :, 2] = 255
    image = Image.fromarray(pixels, "RGB")
    image.getexif()[0x0112] = 6

    tensor = preprocessing.preprocess_image(image, 224)

    # After the rotation the red top half is on the right and the blue bottom half on the left.
    assert tensor[0, 112, 10] < 0
    assert tensor[2, 112, 10] > 0
    assert tensor[0, 112, 214] > 0
    assert tensor[2, 112, 214] < 0
