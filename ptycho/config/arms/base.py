"""The base of every arm's settings, and the shared bases of the network and pty-chi arms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ptycho.config.sections import (
    Activation,
    ConfigError,
    Device,
    Section,
    Stopping,
    check_number,
)

__all__ = ["ARM_DEPENDENT", "ArmSettings", "NetworkSettings", "PtychiSettings"]

ARM_DEPENDENT = ("gridsize", "loss", "train", "eval.batch_size", "eval.phase_sync",
                 "eval.stitch_weighting")
"""Job settings that only some arms read (an arm names those it does in ``uses``); every arm
reads the others (``N``, ``dose``, ``seed``, ``data``, how it is scored)."""


@dataclass(frozen=True)
class ArmSettings(Section):
    """The ``model`` section: one subclass per arm, holding its settings and declaring what else
    of the job it reads."""

    kind: str = ""
    """The arm: one of the ``conf/model/`` options (pinn, baseline, lsqml, epie, …)."""

    uses: ClassVar[tuple[str, ...]] = ()
    """The settings of :data:`ARM_DEPENDENT` this arm reads; the others are recorded, not used
    (tag ``unused``), left out of its ``config_hash`` and its run name."""
    supervised: ClassVar[bool] = False
    """Trains on the true object patches of its training scan (the supervised baseline): the
    only way the truth of a simulation reaches an arm."""
    objective: ClassVar[str] = ""
    """What the reconstruction optimises (tag ``training_loss``), unless it is the job's loss."""

    @classmethod
    def unused(cls) -> tuple[str, ...]:
        """The settings of :data:`ARM_DEPENDENT` this arm does not read."""
        return tuple(key for key in ARM_DEPENDENT if key not in cls.uses)

    def check(self) -> None:
        own = type(self).__dataclass_fields__["kind"].default
        if self.kind != own:
            raise ConfigError(f"kind={self.kind!r}: these are the settings of {own!r}")

    def training_loss(self, loss: str) -> str:
        """What the reconstruction optimises, given the job's ``loss``."""
        return self.objective or loss



@dataclass(frozen=True)
class NetworkSettings(ArmSettings):
    """Settings shared by the networks (the generator of docs/physics.md §6)."""

    bottleneck_filters: int = 256
    """Generator width at the 8×8 bottleneck (halved per level up)."""
    activation: Activation = Activation.leaky_relu
    """The generator's hidden activation. With ``relu`` the amplitude decoder can die (one
    constant output from the first epoch on: docs/results/2026-12-02-quickstart.md)."""

    uses: ClassVar[tuple[str, ...]] = ARM_DEPENDENT

    def check(self) -> None:
        super().check()
        check_number("bottleneck_filters", self.bottleneck_filters, low=1, integer=True)



@dataclass(frozen=True)
class PtychiSettings(ArmSettings):
    """Settings shared by pty-chi's iterative engines (no network, no training)."""

    iterations: int = 100
    """Iterations (epochs of pty-chi: every pattern used once each)."""
    tolerance: float = 0.0
    """Stop once the Poisson NLL per photon changes by less than this between iterations;
    0: run every iteration."""
    batch_size: int = 16
    """Patterns per object update."""
    step_size: float = 1.0
    """The object update's step size (its meaning is the engine's)."""
    object_init_noise: float = 0.0
    """Start from a flat object (1 + 0j) plus seeded complex Gaussian noise of this standard
    deviation; 0: exactly flat."""
    probe_update: bool = False
    """Refine the probe too (it starts from the given probe)."""
    position_correction: bool = False
    """Refine the scan positions too (they start from the given positions)."""
    position_step_size: float = 0.3
    """With ``position_correction``: pty-chi's step size of the position update (its default)."""
    position_update_limit: float = 0.1
    """With ``position_correction``: the most a position moves per iteration and axis, pixels
    (pty-chi's default)."""
    device: Device = Device.auto
    """Where pty-chi runs: ``auto`` is the GPU when torch sees one, else the CPU."""
    stopping: Stopping = Stopping.fixed
    """``fixed``: run ``iterations`` (or stop at ``tolerance``); ``heldout``: choose the count,
    at most ``iterations``, by the NLL of held-out patterns (the studies)."""
    heldout_fraction: float = 0.1
    """``heldout``: the share of the patterns (at random, by the job's seed) left out of the
    fit that chooses the count."""
    patience: int = 3
    """``heldout``: iterations without a lower held-out NLL before the count is chosen."""

    def check(self) -> None:
        super().check()
        check_number("iterations", self.iterations, low=1, integer=True)
        check_number("heldout_fraction", self.heldout_fraction, low=0.02, high=0.5)
        check_number("patience", self.patience, low=1, integer=True)
        check_number("tolerance", self.tolerance, low=0)
        check_number("batch_size", self.batch_size, low=1, integer=True)
        check_number("step_size", self.step_size, low=0, low_open=True)
        check_number("object_init_noise", self.object_init_noise, low=0)
        check_number("position_step_size", self.position_step_size, low=0, low_open=True)
        check_number("position_update_limit", self.position_update_limit, low=0, low_open=True)

