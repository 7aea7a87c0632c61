"""The plugin's what-if work: replays under faults (`replay.faults`) and repeated (`replay.flaky`).

Imported only when ``--replay-fault``, ``--replay-repeat`` or the marker's ``faults=`` /
``repeat=`` is used; it pulls in the `replay` library, which `plugin.py` must not import.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_plugin._options import ReplayOptions
from pytest_plugin.state import ReplayFailed, is_server_url, store_text
from replay.batch import RunOptions
from replay.errors import ReplayError
from replay.report import Outcome

if TYPE_CHECKING:
    from pytest_plugin.plugin import ReplayItem
    from replay.replayer import Recording, ReplayResult

__all__ = ["expand_marker", "replay_options", "run_item"]


def expand_marker(nodeid: str, faults: Any) -> list[str]:
    """One spec per item of the marker's ``faults=``; a bad spec is a collection error naming the
    test."""
    from replay.faults import expand, parse_faults

    try:
        specs = expand(faults)
        for spec in specs:
            parse_faults(spec)
    except ReplayError as exc:
        pytest.fail(f"{nodeid}: @pytest.mark.replay(faults=...): {exc}", pytrace=False)
    return specs


def _kwargs(config: pytest.Config, options: ReplayOptions) -> dict[str, Any]:
    """`replay_run`'s arguments for these options (`replay.batch.RunOptions`), faults included."""
    run = RunOptions.from_fields(options, project=config.rootpath)
    return {**run.replay_kwargs(), "faults": run.faults or None}


def _flaky_verdict(config: pytest.Config, report: Any, source: str) -> tuple[str, str | None]:
    from replay.flaky import gate, load_quarantine

    path = config.option.replay_quarantine
    quarantine = load_quarantine(path) if path else None
    return gate(report, config.option.replay_flaky, quarantine, source=source)


def replay_options(
    config: pytest.Config, options: ReplayOptions, recording: Recording
) -> ReplayResult:
    """A marked test's replay under its fault and repeat; a flaky run fails it per the policy."""
    from replay.flaky import replay_repeat
    from replay.replayer import replay_run

    kwargs = _kwargs(config, options)
    if options.repeat <= 1:
        return replay_run(recording, **kwargs)
    report = replay_repeat(recording, repeat=options.repeat, **kwargs)
    verdict, message = _flaky_verdict(config, report, options.source)
    if verdict == "fail":
        pytest.fail(message or "", pytrace=False)
    if verdict == "warn":
        import warnings

        warnings.warn(message or "", stacklevel=2)
    return report.results[0]  # type: ignore[no-any-return]


def _short(path: Path | str) -> str:
    """`path` relative to the working directory when below it (as the plugin names sources)."""
    if isinstance(path, str) and is_server_url(path):
        return store_text(path)
    path = Path(path)
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else Path(rel).as_posix()


def run_item(item: ReplayItem, state: Any, recording: Recording) -> None:
    """A ``--replay`` item under ``--replay-fault`` / ``--replay-repeat``; sets ``item.outcome``."""
    from replay.faults import judge
    from replay.flaky import replay_repeat
    from replay.replayer import replay_run

    opts = item.options
    source = (
        _short(item.source.cassette)
        if item.source.cassette is not None
        else f"run {recording.run.run_id} in {_short(item.source.db or str(opts.db))}"
    )
    t0 = time.perf_counter()

    def outcome(status: str, **kw: Any) -> Outcome:
        return Outcome(
            source=source,
            run_id=recording.run.run_id,
            status=status,
            seconds=time.perf_counter() - t0,
            **kw,
        )

    kwargs = _kwargs(item.config, opts)
    try:
        flaky = False
        if opts.repeat > 1:
            report = replay_repeat(recording, repeat=opts.repeat, **kwargs)
            result, flaky = report.results[0], report.flaky
            verdict, message = _flaky_verdict(item.config, report, source)
        else:
            result, verdict, message = replay_run(recording, **kwargs), "ok", None
    except Exception as exc:
        item.outcome = outcome("error", error=str(exc))
        raise
    if opts.faults:
        problems = judge(result)
    else:  # a flaky run's divergence is what the flakiness verdict is about
        problems = [] if flaky or result.diff.is_empty else ["diverged"]
    if verdict == "fail" and message:
        problems.append(message)
    note = f"under {opts.faults}" if opts.faults else None
    if not problems:
        item.outcome = outcome("matched", diff=result.diff, note=message or note)
        if verdict == "warn" and message:
            import warnings

            warnings.warn(message, stacklevel=2)
        return
    item.outcome = outcome("diverged", diff=result.diff, note="; ".join(problems))
    text = result.diff.to_text(color=False)
    raise ReplayFailed("\n".join([*problems, text, f"recording: {source}"]))
