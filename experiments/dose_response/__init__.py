"""The dose-response report: a sweep's MLflow runs → tables, figures, HTML/Markdown report."""
