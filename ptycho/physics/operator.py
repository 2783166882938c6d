"""The ptychographic operator of one scan: object → exit waves → far fields → expected counts,
its adjoint, and the batched products a bound needs (docs/physics.md §2).

``A o = F(P · E_j o)`` for every position ``j``: ``E_j`` cuts the patch at position ``j``
(:func:`~ptycho.physics.geometry.extract_patches`), ``P`` is the probe and ``F`` the unitary
centred FFT (:func:`~ptycho.physics.propagation.far_field`). Simulation, the Cramér–Rao bound,
phase synchronisation and the iterative convention tests all use this one operator; the PINN's
Keras layers spell the same chain in their own graph and are tested equal to it.

Two spellings of ``E_j``, tested equal (tests/physics/test_operator.py): the separable matrices
of :mod:`~ptycho.physics.geometry` for single objects (simulation, bit for bit), and four
gathered bilinear taps per pixel for batches of perturbations (:meth:`Ptychography.linear`),
whose cost is ``O(M·N²)`` per product instead of ``O(M·N·H·W)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from ptycho.physics.dose import dose_scale
from ptycho.physics.geometry import extract_patches, place_patches
from ptycho.physics.propagation import far_field, far_field_adjoint, illuminate, intensity

__all__ = ["Ptychography", "patch_taps"]


def patch_taps(positions: np.ndarray, N: int, shape: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Flat object indices ``(M, N·N, 4)`` int64 and weights ``(M, N·N, 4)`` float32 of the
    bilinear extraction :func:`~ptycho.physics.geometry.extract_patches` performs (same float32
    arithmetic, zero weight outside the object), as four taps per patch pixel.

    Args:
        positions: ``(M, 2)`` float ``(x, y)`` patch centres, object pixels.
        N: patch side.
        shape: ``(H, W)`` of the object.
    """
    height, width = shape
    start = np.asarray(positions, np.float32)[:, ::-1] - np.float32(N // 2)  # (M, 2): row, col
    base = np.floor(start)
    frac = (start - base).astype(np.float32)
    offsets = np.arange(N)
    rows = base[:, 0, None].astype(np.int64) + offsets  # (M, N)
    cols = base[:, 1, None].astype(np.int64) + offsets
    index, weight = [], []
    for dr, wr in ((0, 1 - frac[:, 0]), (1, frac[:, 0])):
        for dc, wc in ((0, 1 - frac[:, 1]), (1, frac[:, 1])):
            r = rows[:, :, None] + dr
            c = cols[:, None, :] + dc
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            index.append(np.where(inside, r * width + c, 0).reshape(len(start), -1))
            weight.append(np.where(inside, (wr[:, None, None] * wc[:, None, None]), 0)
                          .astype(np.float32).reshape(len(start), -1))
    return np.stack(index, axis=-1), np.stack(weight, axis=-1)


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

    def linear(self) -> tuple[Callable[[tf.Tensor], tf.Tensor], Callable[[tf.Tensor], tf.Tensor]]:
        """``(forward, adjoint)`` of ``A`` on batches by gathered taps (:func:`patch_taps`):
        ``forward`` maps ``(B, H·W)`` complex64 objects to ``(B, M, N, N)`` far fields,
        ``adjoint`` back. For the many products of a matrix-free bound."""
        size = self.object_shape[0] * self.object_shape[1]
        taps, weights = patch_taps(self.positions, self.N, self.object_shape)
        taps_t = tf.constant(taps.reshape(-1))  # (M·N²·4,)
        weights_t = tf.constant(weights.reshape(-1), tf.complex64)
        count, N, probe = len(self.positions), self.N, self.probe

        def forward(images: tf.Tensor) -> tf.Tensor:
            batch = tf.shape(images)[0]
            taken = tf.gather(images, taps_t, axis=1) * weights_t  # (B, M·N²·4)
            patches = tf.reduce_sum(tf.reshape(taken, (batch, count, N, N, 4)), axis=-1)
            return far_field(illuminate(probe, patches))

        def adjoint(fields: tf.Tensor) -> tf.Tensor:
            batch = tf.shape(fields)[0]
            back = far_field_adjoint(fields) * tf.math.conj(probe)  # (B, M, N, N)
            spread = tf.reshape(tf.repeat(tf.reshape(back, (batch, -1)), 4, axis=1)
                                * weights_t, (batch, -1))
            return tf.map_fn(  # the adjoint of the gather, per batch item
                lambda values: tf.math.unsorted_segment_sum(values, taps_t, size), spread,
                fn_output_signature=tf.complex64)

        return forward, adjoint
