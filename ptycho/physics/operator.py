"""The ptychographic operator of one scan: object → exit waves → far fields → expected counts,
its adjoint, and the batched products a bound needs (docs/physics.md §2).

``A o = F(P · E_j o)`` for every position ``j``: ``E_j`` cuts the patch at position ``j``
(:func:`~ptycho.physics.geometry.extract_patches`), ``P`` is the probe and ``F`` the unitary
centred FFT (:func:`~ptycho.physics.propagation.far_field`). Simulation, the Cramér–Rao bound,
phase synchronisation and the iterative convention tests all use this one operator; the PINN's
Keras layers spell the same chain in their own graph and are tested equal to it.

Two spellings of ``E_j``, tested equal (tests/physics/test_operator.py): the separable matrices
of :mod:`~ptycho.physics.geometry` for single objects (simulation, bit for bit), and
:class:`PatchBlocks` (each patch's ``(N+1)²`` block gathered, four bilinear taps with one weight
per patch) for batches of perturbations and repeated products (:meth:`Ptychography.linear`, the
bound and phase synchronisation), whose cost is ``O(M·N²)`` per product instead of
``O(M·N·H·W)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from ptycho.physics.dose import dose_scale
from ptycho.physics.geometry import extract_patches, place_patches
from ptycho.physics.propagation import far_field, far_field_adjoint, illuminate, intensity

__all__ = ["PatchBlocks", "Ptychography"]


class PatchBlocks:
    """The cut ``E_j`` of every position as a gather of its ``(N+1)²`` block and a 2×2 bilinear
    combination: the same arithmetic as :func:`~ptycho.physics.geometry.extract_patches`
    (whose interpolation weights are one per patch, the fractional part of its corner), at
    ``O(M·N²)`` per product with nothing stored per pixel. :meth:`cut` takes batches of
    objects, :meth:`spread` is its exact adjoint (a scatter-add of the blocks); both are
    ``tf.function``-safe and batch items are never mixed.

    Args:
        positions: ``(M, 2)`` float ``(x, y)`` patch centres, object pixels.
        N: patch side.
        shape: ``(H, W)`` of the object; taps outside it read zero and spread nothing.
    """

    def __init__(self, positions: np.ndarray, N: int, shape: tuple[int, int]) -> None:
        self.N, self.shape = int(N), (int(shape[0]), int(shape[1]))
        start = np.asarray(positions, np.float32)[:, ::-1] - np.float32(N // 2)  # row, col
        base = np.floor(start)
        frac = (start - base).astype(np.float32)
        corner = base.astype(np.int64)
        # A margin holds every block (zeros outside the object), so no index is clipped.
        low = np.minimum(corner.min(axis=0), 0) if len(corner) else np.zeros(2, np.int64)
        high = (np.maximum(corner.max(axis=0) + N + 1, self.shape) if len(corner)
                else np.array(self.shape))
        self._margin = (-low).astype(np.int64)  # rows, cols before the object
        self._padded = tuple(int(v) for v in high - low)
        inside = corner + self._margin
        block = np.arange(N + 1)
        index = ((inside[:, 0, None, None] + block[:, None]) * self._padded[1]
                 + inside[:, 1, None, None] + block[None, :])
        self._index = tf.constant(index.reshape(len(corner), -1).astype(np.int32))
        wr, wc = 1 - frac[:, 0], 1 - frac[:, 1]
        weights = np.stack([wr * wc, wr * frac[:, 1], frac[:, 0] * wc,
                            frac[:, 0] * frac[:, 1]], axis=1)  # (M, 4): taps 00, 01, 10, 11
        self._weights = tf.constant(weights[:, :, None, None].astype(np.float32))
        self._count = len(corner)

    def __len__(self) -> int:
        return self._count

    def _pad(self, images: tf.Tensor) -> tf.Tensor:
        (top, left), (rows, cols) = self._margin, self._padded
        height, width = self.shape
        return tf.pad(images, [[0, 0], [int(top), rows - height - int(top)],
                               [int(left), cols - width - int(left)]])

    def gather(self, images: tf.Tensor) -> tf.Tensor:
        """``(B, H, W)`` objects → ``(B, M, (N+1)²)``: each patch's block, before the taps."""
        images = tf.convert_to_tensor(images)
        flat = tf.reshape(self._pad(images), (tf.shape(images)[0], -1))
        return tf.gather(flat, self._index, axis=1)

    def scatter(self, blocks: tf.Tensor) -> tf.Tensor:
        """``(B, M, (N+1)²)`` blocks → ``(B, H, W)``, each added where it was gathered (the
        adjoint of :meth:`gather`)."""
        batch = tf.shape(blocks)[0]
        size = self._padded[0] * self._padded[1]
        segments = self._index[None] + size * tf.range(batch)[:, None, None]  # per batch item
        canvas = tf.math.unsorted_segment_sum(tf.reshape(blocks, (-1,)),
                                              tf.reshape(segments, (-1,)), batch * size)
        canvas = tf.reshape(canvas, (batch, *self._padded))
        (top, left), (height, width) = self._margin, self.shape
        return canvas[:, int(top):int(top) + height, int(left):int(left) + width]

    def taps(self, blocks: tf.Tensor) -> tf.Tensor:
        """``(B, M, (N+1)²)`` blocks → ``(B, M, N, N)`` patches: the 2×2 bilinear taps."""
        N = self.N
        blocks = tf.reshape(blocks, (-1, self._count, N + 1, N + 1))
        w = tf.cast(self._weights, blocks.dtype)
        return (w[:, 0] * blocks[:, :, :N, :N] + w[:, 1] * blocks[:, :, :N, 1:]
                + w[:, 2] * blocks[:, :, 1:, :N] + w[:, 3] * blocks[:, :, 1:, 1:])

    def taps_adjoint(self, patches: tf.Tensor) -> tf.Tensor:
        """``(B, M, N, N)`` patches → ``(B, M, (N+1)²)`` blocks (the adjoint of :meth:`taps`)."""
        patches = tf.convert_to_tensor(patches)
        w = tf.cast(self._weights, patches.dtype)
        zero = [[0, 0], [0, 0]]
        blocks = (tf.pad(w[:, 0] * patches, [*zero, [0, 1], [0, 1]])
                  + tf.pad(w[:, 1] * patches, [*zero, [0, 1], [1, 0]])
                  + tf.pad(w[:, 2] * patches, [*zero, [1, 0], [0, 1]])
                  + tf.pad(w[:, 3] * patches, [*zero, [1, 0], [1, 0]]))
        return tf.reshape(blocks, (tf.shape(patches)[0], self._count, -1))

    def cut(self, images: tf.Tensor) -> tf.Tensor:
        """``(B, H, W)`` float32 or complex64 objects → ``(B, M, N, N)`` patches ``E_j o``."""
        return self.taps(self.gather(images))

    def spread(self, patches: tf.Tensor) -> tf.Tensor:
        """``(B, M, N, N)`` patches → ``(B, H, W)`` ``Σ_j E_jᴴ p_j`` (the adjoint of
        :meth:`cut`)."""
        return self.scatter(self.taps_adjoint(patches))


class Ptychography:
    """The operator ``A`` of one scan.

    Args:
        probe: ``(N, N)`` complex illumination (arbitrary amplitude units).
        positions: ``(M, 2)`` float ``(x, y)`` patch centres, pixels of the object grid.
        object_shape: ``(H, W)`` of the object grid.
        chunk_size: positions cut or placed per operation (memory bound).

    Methods taking an object accept ``(H, W)`` complex arrays or tensors and return tensors,
    so they can run inside a ``tf.function`` and pass gradients.
    """

    def __init__(self, probe: np.ndarray | tf.Tensor, positions: np.ndarray,
                 object_shape: tuple[int, int], *, chunk_size: int = 256) -> None:
        self.probe = tf.convert_to_tensor(probe, tf.complex64)
        if self.probe.shape.rank != 2 or self.probe.shape[0] != self.probe.shape[1]:
            raise ValueError(f"probe must have shape (N, N), got {self.probe.shape}")
        self.N = int(self.probe.shape[0])
        self.positions = np.asarray(positions, np.float32)
        if self.positions.ndim != 2 or self.positions.shape[1] != 2:
            raise ValueError(f"positions must have shape (M, 2), got {self.positions.shape}")
        self.object_shape = (int(object_shape[0]), int(object_shape[1]))
        self._chunks = [tf.constant(self.positions[first:first + chunk_size][None])
                        for first in range(0, len(self.positions), chunk_size)]

    def __len__(self) -> int:
        return len(self.positions)

    def patches(self, obj: np.ndarray | tf.Tensor) -> tf.Tensor:
        """``(M, N, N)`` complex64 object patches ``E_j o``."""
        obj = tf.convert_to_tensor(obj, tf.complex64)[None]
        return tf.concat([extract_patches(obj, at, self.N)[0] for at in self._chunks], axis=0)

    def place(self, patches: tf.Tensor) -> tf.Tensor:
        """``(H, W)`` ``Σ_j E_jᴴ p_j``: the adjoint of :meth:`patches` (``patches (M, N, N)``,
        float32 or complex64; a single ``(N, N)`` patch is used at every position)."""
        patches = tf.convert_to_tensor(patches)
        canvas = None
        first = 0
        for at in self._chunks:
            count = int(at.shape[1])
            part = (tf.broadcast_to(patches, (count, self.N, self.N)) if patches.shape.rank == 2
                    else patches[first:first + count])
            placed = place_patches(part[None], at, self.object_shape)[0]
            canvas = placed if canvas is None else canvas + placed
            first += count
        return canvas

    def far_field(self, obj: np.ndarray | tf.Tensor) -> tf.Tensor:
        """``(M, N, N)`` complex64 ``A o = F(P · E_j o)``."""
        return far_field(illuminate(self.probe, self.patches(obj)))

    def intensities(self, obj: np.ndarray | tf.Tensor) -> tf.Tensor:
        """``(M, N, N)`` float32 ``|A o|²`` (probe units², before the dose scale)."""
        return intensity(self.far_field(obj))

    def adjoint(self, field: tf.Tensor) -> tf.Tensor:
        """``(H, W)`` complex64 ``Aᴴ f = Σ_j E_jᴴ (conj(P) · Fᴴ f_j)`` of far fields
        ``(M, N, N)``."""
        exit_waves = far_field_adjoint(field) * tf.math.conj(self.probe)
        return self.place(exit_waves)

    def dose_scale(self, obj: np.ndarray | tf.Tensor, dose: float) -> float:
        """The scale ``s²`` that gives this scan of ``obj`` a mean of ``dose`` photons per
        pattern (the simulation's ``λ = s² |A o|²``)."""
        return float(dose_scale(self.intensities(obj), dose))

    def illumination(self) -> np.ndarray:
        """``(H, W)`` float64 ``Σ_j E_jᴴ |P|²``: the light each object pixel got (probe
        intensity units, photons per pixel at ``s² = 1``)."""
        return self.place(tf.abs(self.probe) ** 2).numpy().astype(np.float64)

    def blocks(self) -> PatchBlocks:
        """This scan's cut as :class:`PatchBlocks` (batched, ``O(M·N²)`` per product)."""
        return PatchBlocks(self.positions, self.N, self.object_shape)

    def linear(self) -> tuple[Callable[[tf.Tensor], tf.Tensor], Callable[[tf.Tensor], tf.Tensor]]:
        """``(forward, adjoint)`` of ``A`` on batches by :class:`PatchBlocks`: ``forward`` maps
        ``(B, H·W)`` complex64 objects to ``(B, M, N, N)`` far fields, ``adjoint`` back. For the
        many products of a matrix-free bound."""
        height, width = self.object_shape
        blocks, probe = self.blocks(), self.probe

        def forward(images: tf.Tensor) -> tf.Tensor:
            patches = blocks.cut(tf.reshape(images, (-1, height, width)))
            return far_field(illuminate(probe, patches))

        def adjoint(fields: tf.Tensor) -> tf.Tensor:
            back = far_field_adjoint(fields) * tf.math.conj(probe)  # (B, M, N, N)
            return tf.reshape(blocks.spread(back), (-1, height * width))

        return forward, adjoint
