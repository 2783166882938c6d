"""The sweep's outcome file: requeued jobs, unreadable lines and jobs that never reported."""

from __future__ import annotations

import json
from pathlib import Path

from ptycho.sweep import read_outcomes, summary_table


def test_outcomes_keep_the_last_word_per_job_and_count_silent_jobs_as_failed(
    tmp_path: Path,
) -> None:
    state = tmp_path / ".ptycho"
    state.mkdir()
    lines = [
        {"job_index": 1, "name": "b", "status": "KILLED", "metrics": {}, "error": "requeued"},
        {"job_index": 0, "name": "a", "status": "FINISHED", "metrics": {"amp_ssim": 0.5}},
        {"job_index": 1, "name": "b", "status": "FINISHED", "metrics": {"amp_ssim": 0.6}},
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    (state / "jobs.jsonl").write_text(text + "\n{\"job_index\": 2, \"na\n")

    outcomes = read_outcomes(tmp_path, job_total=4)
    assert [(o["job_index"], o["status"]) for o in outcomes] == [
        (0, "FINISHED"), (1, "FINISHED"), (2, "FAILED"), (3, "FAILED")]
    assert outcomes[1]["metrics"] == {"amp_ssim": 0.6}  # the requeued job's last outcome
    assert "no outcome recorded" in outcomes[3]["error"]
    table = summary_table(outcomes)
    assert table.count("FAILED") == 2 and "no outcome recorded" in table
    assert read_outcomes(tmp_path / "nowhere") == []
