"""From a trained network or measured counts to an object, with no access to the truth:
prediction (:mod:`.predict`), stitching (:mod:`.stitch`) and phase synchronisation
(:mod:`.synchronise`). Scoring against a truth is :mod:`ptycho.evaluation`'s."""
