"""The sweep's state object, the expansion of a sweep, and the isolate launcher's pipe."""

from __future__ import annotations

import json
import multiprocessing.context
import os
import platform
import threading
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ptycho.runner.outcome import JobContext
from ptycho.runner.sweep import expand_sweep, summary_table, swept_keys
from ptycho.runner.sweep_state import FORMAT, SweepState, SweepStateError


def test_outcomes_keep_the_last_word_per_job_and_count_silent_jobs_as_failed(
    tmp_path: Path,
) -> None:
    state = SweepState(tmp_path)
    state.start(job_total=4, swept=["dose"])
    state.record(1, {"name": "b", "status": "KILLED", "metrics": {}, "error": "requeued"})
    state.record(0, {"name": "a", "status": "FINISHED", "metrics": {"amp_ssim": 0.5}})
    state.record(1, {"name": "b", "status": "FINISHED", "metrics": {"amp_ssim": 0.6}})
    with (state.folder / "jobs.jsonl").open("a") as handle:
        handle.write('{"job_index": 2, "na\n')  # a job killed mid-write

    outcomes = state.outcomes(job_total=4)
    assert [(o["job_index"], o["status"]) for o in outcomes] == [
        (0, "FINISHED"), (1, "FINISHED"), (2, "FAILED"), (3, "FAILED")]
    assert outcomes[1]["metrics"] == {"amp_ssim": 0.6}  # the requeued job's last outcome
    assert "no outcome recorded" in outcomes[3]["error"]
    table = summary_table(outcomes)
    assert table.count("FAILED") == 2 and "no outcome recorded" in table
    assert SweepState(tmp_path / "nowhere").outcomes() == []


def test_the_state_format_is_versioned_and_a_new_sweep_starts_afresh(tmp_path: Path) -> None:
    state = SweepState(tmp_path)
    info = state.start(job_total=3, swept=["gridsize", "dose"])
    assert info["format"] == FORMAT and info["swept"] == ["dose", "gridsize"]
    state.set_parent(parent_run_id="p", experiment_id="1", tracking_uri="sqlite:///x.db")
    assert state.read()["parent_run_id"] == "p" and state.read()["job_total"] == 3
    state.record(0, {"name": "a", "status": "FINISHED", "metrics": {}})
    state.stop(15)
    with state.in_flight(2):
        assert state.busy() and (state.folder / "running" / "2").read_text() == str(os.getpid())
    assert not state.busy() and state.stopping
    state.start(job_total=1, swept=[])
    assert state.outcomes() == [] and not state.stopping
    (state.folder / "sweep.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(SweepStateError, match="format 99, this ptycho reads format 1"):
        state.read()


def test_a_job_on_another_host_with_the_launchers_pid_is_not_the_launcher(
    tmp_path: Path,
) -> None:
    state = SweepState(tmp_path)
    info = state.start(job_total=1, swept=[])
    assert state.is_launcher(info)
    elsewhere = {**info, "launcher": {"host": platform.node() + "-other", "pid": os.getpid()}}
    assert not state.is_launcher(elsewhere)


def _sweep_config(params: dict[str, str], task: list[str]):
    return OmegaConf.create({"hydra": {"sweeper": {"params": params},
                                       "overrides": {"task": task}}})


@pytest.mark.parametrize(("params", "task"), [
    ({}, ["N=16,32", "gridsize=1,2", "experiment=smoke"]),
    ({"dose": "1e2,1e3,1e4", "gridsize": "1,2"}, ["loss=mae", "gridsize=2"]),
    ({"seed": "range(0,3)"}, ["dose=choice(1e3,1e5)", "train.epochs=2"]),
])
def test_the_public_expansion_gives_the_basic_sweepers_jobs(params: dict[str, str],
                                                             task: list[str]) -> None:
    config = _sweep_config(params, task)
    arguments = [f"{k}={v}" for k, v in params.items()] + task
    private = BasicSweeper.split_arguments(
        OverridesParser.create().parse_overrides(arguments), None)[0]
    assert expand_sweep(config) == private


def test_swept_keys_are_the_ones_with_more_than_one_value() -> None:
    jobs = expand_sweep(_sweep_config({}, ["N=16", "train.epochs=2,40", "dose=1e3,1e4"]))
    assert swept_keys(jobs) == ["dose", "train.epochs"]
    names = JobContext(project_root=Path("."), output_dir=Path("."),
                       overrides=tuple(jobs[0]), swept=tuple(swept_keys(jobs))).name_extras()
    assert names == {"train.epochs": "2"}  # dose is already an axis of the name


def test_an_isolated_child_that_cannot_start_fails_the_job_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ptycho.runner.isolate import run_job_isolated
    from tests.test_job import smoke

    def no_process(self: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", no_process)
    cfg = OmegaConf.to_container(smoke(tmp_path), resolve=True, enum_to_str=True)
    context = JobContext(project_root=tmp_path, output_dir=tmp_path)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(run_job_isolated(cfg, context)),
                              daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "run_job_isolated hung on the pipe"
    (outcome,) = result
    assert outcome.status == "FAILED" and "could not start the job's child process" in (
        outcome.error)
