"""Label-preserving augmentation of training batches: each option draws one value per image,
uniformly; they compose into one affine map per image, drawn on the host from
``numpy.random.default_rng([seed, epoch, step, AUGMENT_STREAM])`` and applied on the device in
one bilinear warp (`backend.warp.warp_affine`; DESIGN.md: "Augmentation")."""
from dataclasses import dataclass

import numpy

from xpnn.training.batches import batch_sizes

OPTIONS = ("translate", "rotate", "scale", "shear", "flip")
AUGMENT_STREAM = 1  # keeps these draws apart from the epoch order's, default_rng([seed, epoch])


@dataclass(frozen=True)
class Augmentation:
    """Random transforms of training images, each drawn per image."""
    translate: int = 0    # T: a shift by whole pixels in [-T, T] on each axis (pad with 0, crop)
    rotate: float = 0.0   # D: a rotation by an angle in [-D, D] degrees about the image centre
    scale: float = 0.0    # S: a zoom by a factor in [1 - S, 1 + S]
    shear: float = 0.0    # D: a horizontal shear by an angle in [-D, D] degrees
    flip: bool = False    # a left-right mirror image with probability 1/2 (never for digits)

    @classmethod
    def from_config(cls, options):
        """The augmentation a checked ``data.augment`` mapping asks for; None if it asks for none."""
        augmentation = cls(**(options or {}))
        return augmentation if augmentation != cls() else None

    def inverse_maps(self, count, height, width, rng):
        """(count, 2, 3) float64 host maps from output to input pixel coordinates, one per
        image, drawn from the numpy Generator `rng`."""
        angle = numpy.radians(rng.uniform(-self.rotate, self.rotate, count))
        zoom = rng.uniform(1 - self.scale, 1 + self.scale, count)
        shear = numpy.tan(numpy.radians(rng.uniform(-self.shear, self.shear, count)))
        shift = rng.integers(-self.translate, self.translate, size=(count, 2), endpoint=True)
        mirror = numpy.where(rng.random(count) < 0.5, -1.0, 1.0) if self.flip else numpy.ones(count)

        # forward map about the centre: out = R(angle) S(zoom) H(shear) M(mirror) (in - c) + c + t
        cos, sin = numpy.cos(angle), numpy.sin(angle)
        rotate = numpy.stack([numpy.stack([cos, -sin], -1), numpy.stack([sin, cos], -1)], -2)
        linear = rotate * zoom[:, None, None]
        linear = linear @ numpy.stack([numpy.stack([numpy.ones(count), shear], -1),
                                       numpy.stack([numpy.zeros(count), numpy.ones(count)], -1)], -2)
        linear[:, :, 0] *= mirror[:, None]
        inverse_linear = numpy.linalg.inv(linear)
        centre = numpy.array([(width - 1) / 2, (height - 1) / 2])
        # in = L^-1 (out - c - t) + c
        offset = centre - numpy.einsum("nij,nj->ni", inverse_linear, centre + shift)
        return numpy.concatenate([inverse_linear, offset[:, :, None]], axis=2)

    def step_maps(self, count, height, width, seed, epoch, step):
        """The (count, 2, 3) float64 host maps of the batch of training step (seed, epoch, step);
        they depend on nothing else."""
        rng = numpy.random.default_rng([seed, epoch, step, AUGMENT_STREAM])
        return self.inverse_maps(count, height, width, rng)

    def epoch_maps(self, count, batch_size, height, width, seed, epoch):
        """The (count, 2, 3) float32 host maps of an epoch of `count` images in batches of
        `batch_size`, in batch order: the rows of step i are `step_maps` of that step."""
        return numpy.concatenate([self.step_maps(size, height, width, seed, epoch, step)
                                  for step, size in enumerate(batch_sizes(count, batch_size))]
                                 ).astype(numpy.float32)

