"""ptycho's Hydra launcher plugins (Hydra loads launchers only from the ``hydra_plugins``
namespace). Kept light: Hydra imports every plugin module at start-up."""
