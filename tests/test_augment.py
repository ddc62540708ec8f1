"""Augmentation: the warp moves known images where the maths says, every option draws within its
range, draws depend only on (seed, epoch, step), and NumPy and CuPy agree."""
import numpy
import pytest

from xpnn import backend
from xpnn.backend.warp import warp_affine
from xpnn.training.augment import Augmentation


class LargestDraws:
    """Stands in for a numpy Generator: every draw is the top of its range (a 'heads' for flip)."""

    def uniform(self, low, high, size):
        return numpy.full(size, float(high))

    def integers(self, low, high, size, endpoint):
        return numpy.full(size, high)

    def random(self, size):
        return numpy.zeros(size)


def marked_image(size=9):
    """One (1, 1, size, size) float32 image with distinct values, asymmetric under every turn
    and mirror (a 0 border, so nothing leaves the frame under the moves tested)."""
    image = numpy.zeros((1, 1, size, size), dtype=numpy.float32)
    image[0, 0, 2:-2, 2:-2] = numpy.arange(1, (size - 4) ** 2 + 1).reshape(size - 4, size - 4)
    return image


def largest(augmentation, image):
    """`image` moved by `augmentation`'s largest transform (see `LargestDraws`)."""
    maps = augmentation.inverse_maps(image.shape[0], image.shape[2], image.shape[3],
                                     LargestDraws())
    return warp_affine(image, maps.astype(numpy.float32))


# -- geometry ---------------------------------------------------------------------------------------

def test_translation_moves_every_pixel_by_whole_pixels_and_fills_with_zero():
    image = numpy.random.default_rng(0).random((1, 1, 6, 7)).astype(numpy.float32)
    moved = largest(Augmentation(translate=2), image)  # 2 right, 2 down
    expected = numpy.zeros_like(image)
    expected[..., 2:, 2:] = image[..., :-2, :-2]
    assert numpy.array_equal(moved, expected)


def test_rotation_by_90_degrees_turns_the_image_exactly():
    image = marked_image()
    # x right, y down: +90 degrees turns clockwise as displayed
    turned = largest(Augmentation(rotate=90), image)
    numpy.testing.assert_allclose(turned, numpy.rot90(image, k=-1, axes=(2, 3)), atol=1e-5)


def test_small_rotation_moves_a_point_along_its_circle():
    image = numpy.zeros((1, 1, 21, 21), dtype=numpy.float32)
    image[0, 0, 10, 18] = 1.0  # 8 px right of the centre (10, 10)
    turned = largest(Augmentation(rotate=30), image)[0, 0]
    y, x = numpy.unravel_index(turned.argmax(), turned.shape)
    assert (y, x) == (round(10 + 8 * numpy.sin(numpy.pi / 6)), round(10 + 8 * numpy.cos(numpy.pi / 6)))
    assert turned.max() > 0.5 and turned[10, 18] == 0.0  # most of it there, none left behind


def test_scale_pushes_points_away_from_the_centre():
    image = numpy.zeros((1, 1, 9, 9), dtype=numpy.float32)
    image[0, 0, 4, 6] = 1.0  # 2 px right of the centre (4, 4)
    zoomed = largest(Augmentation(scale=0.5), image)[0, 0]  # x 1.5: 3 px right
    assert zoomed[4, 7] == pytest.approx(1.0, abs=1e-5)
    assert zoomed.argmax() == numpy.ravel_multi_index((4, 7), (9, 9))
    assert zoomed[4, 6] == pytest.approx(1 / 3, abs=1e-5)  # reads x = 4 + 2 / 1.5, a third of the way
    assert not zoomed[:, :6].any() and not zoomed[:3].any() and not zoomed[6:].any()


def test_shear_slides_rows_in_proportion_to_their_height():
    image = marked_image()
    sheared = largest(Augmentation(shear=45), image)  # x += (y - centre)
    for row in range(9):
        numpy.testing.assert_allclose(sheared[0, 0, row],
                                      numpy.roll(image[0, 0, row], row - 4), atol=1e-5)


def test_flip_mirrors_left_and_right():
    image = marked_image()
    assert numpy.array_equal(largest(Augmentation(flip=True), image), image[..., ::-1])


def test_warp_reads_zero_outside_and_keeps_channels_apart():
    images = numpy.stack([marked_image()[0, 0], -marked_image()[0, 0]])[None]  # (1, 2, 9, 9)
    far_away = numpy.array([[[1, 0, 100], [0, 1, 0]]], dtype=numpy.float32)
    assert not warp_affine(images, far_away).any()
    identity = numpy.array([[[1, 0, 0], [0, 1, 0]]], dtype=numpy.float32)
    assert numpy.array_equal(warp_affine(images, identity), images)


# -- draws ------------------------------------------------------------------------------------------

def test_each_option_draws_within_its_range():
    rng = numpy.random.default_rng(1)
    augmentation = Augmentation(translate=3, rotate=10, scale=0.1, shear=5, flip=True)
    maps = augmentation.inverse_maps(2000, 28, 28, rng)
    forward = numpy.linalg.inv(maps[:, :, :2])
    # forward = R(angle) zoom H(shear) M: det = zoom^2 * (+-1)
    zoom = numpy.sqrt(numpy.abs(numpy.linalg.det(forward)))
    assert 0.9 - 1e-9 <= zoom.min() and zoom.max() <= 1.1 + 1e-9 and zoom.std() > 0.03
    mirrored = numpy.linalg.det(forward) < 0
    assert 0.4 < mirrored.mean() < 0.6
    # where the centre goes is the shift: whole pixels in [-3, 3]
    centre = numpy.array([13.5, 13.5])
    shift = numpy.einsum("nij,nj->ni", forward, centre - maps[:, :, 2]) - centre
    assert numpy.allclose(shift, numpy.round(shift)) and numpy.abs(shift).max() == pytest.approx(3)


def test_no_option_means_no_augmentation():
    assert Augmentation.from_config({}) is None
    assert Augmentation.from_config({"rotate": 0}) is None
    assert Augmentation.from_config({"rotate": 5}) == Augmentation(rotate=5)


def test_draws_depend_only_on_seed_epoch_and_step():
    augment = Augmentation(translate=2, rotate=10, scale=0.1, shear=10)
    first = augment.step_maps(8, 28, 28, 0, 1, 5)
    assert numpy.array_equal(first, augment.step_maps(8, 28, 28, 0, 1, 5))
    for other in [(1, 1, 5), (0, 2, 5), (0, 1, 6)]:
        assert not numpy.array_equal(first, augment.step_maps(8, 28, 28, *other))
    assert first.shape == (8, 2, 3)


@pytest.mark.gpu
def test_numpy_and_cupy_apply_the_same_transforms():
    reason = backend.gpu_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no usable GPU: {reason}")
    gpu = backend.get_device("gpu")
    images = numpy.random.default_rng(3).random((64, 1, 28, 28)).astype(numpy.float32)
    maps = Augmentation(translate=2, rotate=10, scale=0.1, shear=10,
                        flip=True).step_maps(64, 28, 28, 0, 3, 7).astype(numpy.float32)
    on_cpu = warp_affine(images, maps)
    on_gpu = backend.CPU.to_numpy(warp_affine(gpu.send(images), gpu.send(maps)))
    numpy.testing.assert_allclose(on_gpu, on_cpu, atol=1e-5)
