"""``python -m ptycho.runner.ui <tracking uri> <ui url>``: print the link that opens the latest
study's dose-response curves in the MLflow UI (``make ui`` runs it before the UI;
:mod:`ptycho.runner.tracking.view`)."""

from __future__ import annotations

import sys

from ptycho.runner.tracking.view import main

if __name__ == "__main__":
    sys.exit(main())
