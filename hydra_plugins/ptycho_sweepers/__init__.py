"""ptycho's Hydra sweeper plugins (Hydra loads plugins only from the ``hydra_plugins`` namespace).
Kept light: Hydra imports every plugin module at start-up; optuna is imported when a search runs."""
