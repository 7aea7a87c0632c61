"""The Recorder against a real SQLite file: runs, steps, stop reasons, context, fail-open."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import sqlite3
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import replay
from replay import Recorder
from replay.hashing import sha
from replay.store import Store
from replay.writer import RecordingLossWarning


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "replay.db"


@pytest.fixture
def rec(db: Path) -> Any:
    r = Recorder(db)
    yield r
    r.close()


def read(db: Path, run_id: str) -> tuple[Any, list[Any]]:
    with Store(db) as s:
        return s.get_run(run_id), s.events(run_id)


def steps_of(events: list[Any]) -> list[Any]:
    return [e for e in events if e.kind in ("tool_result", "model_result")]


class TestRuns:
    def test_a_run_records_start_steps_and_one_stop(self, rec: Recorder, db: Path) -> None:
        """A decorated agent writes run_start, one event per tool call in order, and exactly one
        stop.
        """

        @rec.tool("http.get")
        def http_get(url: str) -> dict:
            return {"status": 200, "url": url}

        @rec.tool("kb.search")
        def kb_search(query: str, limit: int = 3) -> list:
            return [query] * limit

        @rec.agent(
            "support-agent", versions={"model": "m-1", "prompt": "p-3"}, labels={"team": "cx"}
        )
        def handle(ticket: dict) -> str:
            kb_search("refund", limit=2)
            http_get("https://api.invalid/orders/1")
            return "done"

        assert handle({"id": 7}) == "done"
        rec.flush()
        run, events = read(db, rec.last_run_id)
        assert [e.kind for e in events] == ["run_start", "tool_result", "tool_result", "stop"]
        assert [(e.step_id, e.tool, e.status) for e in steps_of(events)] == [
            (1, "kb.search", "ok"),
            (2, "http.get", "ok"),
        ]
        assert events[-1].stop_reason == "completed"
        assert run.stop_reason == "completed" and run.tool_calls == 2 and run.usage.tool_calls == 2
        assert run.versions == {"model": "m-1", "prompt": "p-3"} and run.labels == {"team": "cx"}
        assert run.input == {"ticket": {"id": 7}} and run.output == "done"
        assert (
            run.entrypoint
            == f"{__name__}:TestRuns.test_a_run_records_start_steps_and_one_stop.<locals>.handle"
        )

    def test_args_sha_is_the_seed_sha_of_the_bound_arguments(self, rec: Recorder, db: Path) -> None:
        """args_sha is sha256(canonical_json({param: value}))[:24], as the seed's sha(args)."""

        @rec.tool("http.get")
        def http_get(url: str, timeout: int = 5) -> dict:
            return {"ok": True}

        with rec.run("a", input={"q": 1}):
            http_get("https://x.invalid/a", timeout=9)
        rec.flush()
        _, events = read(db, rec.last_run_id)
        step = steps_of(events)[0]
        assert step.args_sha == sha({"url": "https://x.invalid/a", "timeout": 9})
        assert step.output_sha == sha({"ok": True})

    def test_a_tool_outside_any_run_just_runs(self, rec: Recorder, db: Path) -> None:
        """Calling a tool outside a run returns its result and records nothing."""

        @rec.tool
        def add(a: int, b: int) -> int:
            return a + b

        assert add(2, 3) == 5
        rec.flush()
        with Store(db) as s:
            assert s.count_runs() == 0

    def test_current_run_id_inside_and_last_run_id_after(self, rec: Recorder) -> None:
        """current_run_id() names the run inside it; rec.last_run_id names it afterwards."""
        seen = []
        with rec.run("a") as run:
            seen.append(replay.current_run_id())
        assert seen == [run.run_id] and rec.last_run_id == run.run_id
        assert replay.current_run_id() is None

    def test_methods_record_args_without_self(self, rec: Recorder, db: Path) -> None:
        """A tool method hashes its arguments without self."""

        class Client:
            @rec.tool("crm.lookup")
            def lookup(self, customer_id: int) -> dict:
                return {"id": customer_id}

        with rec.run("a"):
            Client().lookup(5)
        rec.flush()
        _, events = read(db, rec.last_run_id)
        assert steps_of(events)[0].args_sha == sha({"customer_id": 5})

    def test_mutating_args_after_the_call_does_not_change_the_record(
        self, rec: Recorder, db: Path
    ) -> None:
        """The args are copied at call time: appending to a messages list later does not alter
        args_sha.
        """

        @rec.model("llm")
        def llm(messages: list) -> dict:
            return {"content": "hi"}

        messages = [{"role": "user", "content": "a"}]
        with rec.run("a"):
            llm(messages)
            messages.append({"role": "assistant", "content": "b"})
        rec.flush()
        _, events = read(db, rec.last_run_id)
        assert steps_of(events)[0].args_sha == sha({"messages": [{"role": "user", "content": "a"}]})


class TestStopReasons:
    def test_exception_in_agent_ends_with_error_and_propagates(
        self, rec: Recorder, db: Path
    ) -> None:
        """An agent that raises ends its run with stop reason error, and the same exception reaches
        the caller.
        """
        boom = ValueError("bad ticket")

        @rec.agent("a")
        def handle() -> None:
            raise boom

        with pytest.raises(ValueError) as info:
            handle()
        assert info.value is boom
        rec.flush()
        run, events = read(db, rec.last_run_id)
        assert run.stop_reason == "error" and [e.kind for e in events] == ["run_start", "stop"]

    def test_replay_stop_sets_the_reason(self, rec: Recorder, db: Path) -> None:
        """replay.stop(reason) ends the current run with that reason."""

        @rec.agent("a")
        def handle() -> str:
            replay.stop("budget_exceeded")
            return "partial"

        handle()
        rec.flush()
        run, events = read(db, rec.last_run_id)
        assert run.stop_reason == "budget_exceeded"
        assert [e.stop_reason for e in events if e.kind == "stop"] == ["budget_exceeded"]

    def test_invalid_stop_reason_is_refused(self, rec: Recorder) -> None:
        """replay.stop with an invalid name raises InvalidStopReasonError listing the valid ones."""
        with rec.run("a"), pytest.raises(replay.InvalidStopReasonError, match="loop_detected"):
            replay.stop("Not Valid")

    def test_keyboard_interrupt_is_cancelled(self, rec: Recorder, db: Path) -> None:
        """A KeyboardInterrupt inside a run ends it as cancelled and still propagates."""
        with pytest.raises(KeyboardInterrupt), rec.run("a"):
            raise KeyboardInterrupt
        rec.flush()
        run, _ = read(db, rec.last_run_id)
        assert run.stop_reason == "cancelled"

    def test_task_cancellation_is_cancelled(self, rec: Recorder, db: Path) -> None:
        """Cancelling the asyncio task of an async agent ends its run as cancelled."""
        started = asyncio.Event()
        ids: list[str] = []

        @rec.agent("a")
        async def handle() -> None:
            ids.append(replay.current_run_id() or "")
            started.set()
            await asyncio.sleep(10)

        async def main() -> None:
            task = asyncio.create_task(handle())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        rec.flush()
        run, events = read(db, ids[0])
        assert run.stop_reason == "cancelled" and sum(e.kind == "stop" for e in events) == 1


class TestTools:
    def test_tool_error_is_recorded_and_the_same_object_reraised(
        self, rec: Recorder, db: Path
    ) -> None:
        """A tool's exception is recorded with status error and class, and re-raised unchanged with
        its traceback.
        """
        err = TimeoutError("upstream slow")

        @rec.tool("http.get")
        def http_get(url: str) -> None:
            raise err

        with rec.run("a"):
            with pytest.raises(TimeoutError) as info:
                http_get("u")
        assert info.value is err
        frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        assert "http_get" in frames
        rec.flush()
        _, events = read(db, rec.last_run_id)
        step = steps_of(events)[0]
        assert (step.status, step.error) == ("error", "TimeoutError") and step.output_sha

    def test_non_builtin_error_class_is_named_with_its_package(
        self, rec: Recorder, db: Path
    ) -> None:
        """An error class from a package is recorded as package.Class (like
        httpx.HTTPStatusError)."""

        @rec.tool("t")
        def t() -> None:
            raise json.JSONDecodeError("bad", "doc", 0)

        with rec.run("a"), pytest.raises(json.JSONDecodeError):
            t()
        rec.flush()
        _, events = read(db, rec.last_run_id)
        assert steps_of(events)[0].error == "json.JSONDecodeError"

    def test_nested_tools_record_their_parent(self, rec: Recorder, db: Path) -> None:
        """A tool called inside another tool is recorded with parent_step_id of the outer call."""

        @rec.tool("inner")
        def inner(x: int) -> int:
            return x * 2

        @rec.tool("outer")
        def outer(x: int) -> int:
            return inner(x) + 1

        with rec.run("a"):
            assert outer(3) == 7
        rec.flush()
        _, events = read(db, rec.last_run_id)
        by_tool = {e.tool: e for e in steps_of(events)}
        assert by_tool["outer"].parent_step_id is None
        assert by_tool["inner"].parent_step_id == by_tool["outer"].step_id

    def test_threads_carry_the_run_with_propagate(self, rec: Recorder, db: Path) -> None:
        """A tool run in an executor is recorded in the run when wrapped with replay.propagate."""

        @rec.tool("work")
        def work(i: int) -> int:
            return i

        with rec.run("a"), concurrent.futures.ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(replay.propagate(work), range(4))) == [0, 1, 2, 3]
            pool.submit(work, 99).result()  # not propagated: runs unrecorded
        rec.flush()
        _, events = read(db, rec.last_run_id)
        assert sorted(e.args_sha for e in steps_of(events)) == sorted(
            sha({"i": i}) for i in range(4)
        )

    def test_pydantic_and_dataclass_outputs_are_recorded_as_json(
        self, rec: Recorder, db: Path
    ) -> None:
        """A pydantic model output is stored as its JSON and hashed like its model_dump."""

        class Order(BaseModel):
            id: int
            total: float

        @rec.tool("orders.get")
        def get(i: int) -> Order:
            return Order(id=i, total=9.5)

        with rec.run("a"):
            get(1)
        rec.flush()
        _, events = read(db, rec.last_run_id)
        assert steps_of(events)[0].output_sha == sha({"id": 1, "total": 9.5})

    def test_unserializable_args_are_recorded_as_a_placeholder_with_one_warning(
        self, rec: Recorder, db: Path
    ) -> None:
        """Args that cannot be encoded are recorded as a typed placeholder, warned once, and the
        tool still runs.
        """

        @rec.tool("t")
        def t(client: Any, q: str) -> str:
            return q

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with rec.run("a"):
                assert t(object(), "x") == "x"
                assert t(object(), "y") == "y"
        assert sum(issubclass(w.category, RecordingLossWarning) for w in caught) == 1
        rec.flush()
        _, events = read(db, rec.last_run_id)
        assert steps_of(events)[0].args_sha == sha(
            {"client": '[unencodable: builtins.object at args["client"]]', "q": "x"}
        )

    def test_huge_output_is_stored_truncated_with_its_full_hash(self, db: Path) -> None:
        """An output over max_snapshot_bytes is stored truncated with a marker; output_sha is the
        full value's.
        """
        rec = Recorder(db, max_snapshot_bytes=1000)

        @rec.tool("big")
        def big() -> str:
            return "x" * 5000

        with rec.run("a"):
            big()
        rec.close()
        _, events = read(db, rec.last_run_id)
        step = steps_of(events)[0]
        assert step.output_sha == sha("x" * 5000)
        with Store(db) as s:
            body, _, truncated = s.snapshot(step.output_sha)
        assert truncated and len(body) < 1200 and json.loads(body)["$truncated"] is True


class TestModels:
    class Resp(BaseModel):
        class U(BaseModel):
            input_tokens: int
            output_tokens: int

        usage: U
        content: str

    @pytest.mark.parametrize(
        "response",
        [
            {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5}},
            {"content": [], "usage": {"input_tokens": 10, "output_tokens": 5}},
        ],
        ids=["openai", "anthropic"],
    )
    def test_model_usage_is_read_from_the_response(
        self, rec: Recorder, db: Path, response: dict
    ) -> None:
        """A model step reads tokens from OpenAI- and Anthropic-shaped responses; the run sums them
        with prices.
        """

        @rec.model("openai.chat", price_in_per_mtok=1.0, price_out_per_mtok=2.0)
        def llm(messages: list) -> dict:
            return response

        with rec.run("a"):
            llm([{"role": "user", "content": "hi"}])
            llm([{"role": "user", "content": "again"}])
            rec.usage(tokens_in=1, cost_usd=0.5)
        rec.flush()
        run, events = read(db, rec.last_run_id)
        assert [e.kind for e in steps_of(events)] == ["model_result", "model_result"]
        assert (
            steps_of(events)[0].usage.tokens_in == 10 and steps_of(events)[0].usage.tokens_out == 5
        )
        assert (run.usage.tokens_in, run.usage.tokens_out, run.tool_calls) == (21, 10, 0)
        assert run.usage.cost_usd == pytest.approx(2 * (10 + 10) / 1e6 + 0.5)

    def test_pydantic_response_objects_carry_usage(self, rec: Recorder, db: Path) -> None:
        """Usage is also read from SDK-style pydantic response objects."""

        @rec.model("anthropic.messages")
        def llm(prompt: str) -> TestModels.Resp:
            return TestModels.Resp(
                usage=TestModels.Resp.U(input_tokens=7, output_tokens=3), content="ok"
            )

        with rec.run("a"):
            llm("hi")
        rec.flush()
        run, _ = read(db, rec.last_run_id)
        assert (run.usage.tokens_in, run.usage.tokens_out) == (7, 3)


class TestAsync:
    def test_concurrent_runs_in_one_loop_stay_separate(self, rec: Recorder, db: Path) -> None:
        """Two async agents gathered in one event loop each record only their own tool calls."""

        @rec.tool("echo")
        async def echo(x: str) -> str:
            await asyncio.sleep(0.001)
            return x

        @rec.agent("a")
        async def handle(name: str) -> str:
            for i in range(3):
                await echo(f"{name}-{i}")
            return replay.current_run_id() or ""

        async def main() -> list[str]:
            return list(await asyncio.gather(handle("left"), handle("right")))

        ids = asyncio.run(main())
        rec.flush()
        for name, rid in zip(["left", "right"], ids, strict=True):
            _, events = read(db, rid)
            assert [e.args_sha for e in steps_of(events)] == [
                sha({"x": f"{name}-{i}"}) for i in range(3)
            ]


class TestFailOpen:
    def test_unwritable_store_never_breaks_the_agent(self, tmp_path: Path) -> None:
        """With a store that never appears the agent still runs; what is left at close is counted
        and warned once.
        """
        rec = Recorder(tmp_path / "missing-folder" / "replay.db")

        @rec.tool("t")
        def t(i: int) -> int:
            return i

        @rec.agent("a")
        def handle() -> int:
            return sum(t(i) for i in range(5))

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert handle() == 10
            assert handle() == 10
            rec.flush()
            assert rec.dropped == 0  # the folder may still appear: records wait for it
            rec.close()
        assert rec.dropped == 14  # 2 runs x (start + 5 steps + stop)
        assert sum(issubclass(w.category, RecordingLossWarning) for w in caught) == 1

    def test_a_failed_write_is_spooled_and_written_when_the_store_is_back(
        self, rec: Recorder, db: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write that fails (disk full) loses nothing: the batch waits in the spool and reaches
        the store later.
        """

        @rec.agent("a")
        def handle(i: int) -> int:
            return i

        handle(1)
        rec.flush()
        first = rec.last_run_id
        from replay.errors import StoreError

        def full(*a: Any, **k: Any) -> None:
            raise StoreError("database or disk is full")

        monkeypatch.setattr(rec._writer._store, "write_rows", full)
        assert handle(2) == 2
        second = rec.last_run_id
        rec.flush()
        assert rec.dropped == 0
        assert rec._writer.spooled == 2
        spool = Path(f"{db}.spool")
        assert [p.stat().st_mode & 0o777 for p in spool.iterdir()] == [0o600]
        monkeypatch.undo()
        deadline = time.monotonic() + 10
        while spool.exists() and any(spool.iterdir()) and time.monotonic() < deadline:
            rec.flush()
            time.sleep(0.02)
        assert read(db, first)[0].stop_reason == "completed"
        run, events = read(db, second)
        assert run.stop_reason == "completed"
        assert [e.kind for e in events] == ["run_start", "stop"]
        assert not any(spool.iterdir())  # ingested, then deleted
        assert rec.dropped == 0

    def test_a_full_queue_drops_and_counts_instead_of_growing(self, db: Path) -> None:
        """When the writer cannot keep up, a bounded queue drops new records and counts them."""
        rec = Recorder(db, max_queue=10, on_full="drop")
        gate = threading.Event()
        rec._writer._store = None  # type: ignore[assignment]
        original = rec._writer._write
        rec._writer._write = lambda batch: (gate.wait(5), original(batch))  # type: ignore[method-assign]

        @rec.tool("t")
        def t(i: int) -> int:
            return i

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rec.run("a"):
                for i in range(200):
                    t(i)
            assert len(rec._writer._q) <= 10
            gate.set()
            rec.close()
        assert rec.dropped > 150


class TestLogLines:
    def test_each_event_is_one_json_line_with_the_schema(
        self, rec: Recorder, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every stored event is also logged as one JSON line on replay.events, with the schema's
        field names.
        """

        @rec.tool("t")
        def t() -> int:
            return 1

        with caplog.at_level(logging.INFO, logger="replay.events"):
            with rec.run("a"):
                t()
            rec.flush()
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "replay.events"]
        assert [x["kind"] for x in lines] == ["run_start", "tool_result", "stop"]
        assert {
            "run_id",
            "kind",
            "ts_ms",
            "step_id",
            "tool",
            "args_sha",
            "duration_ms",
            "status",
            "error",
            "stop_reason",
            "usage",
        } <= set(lines[1])


def test_process_exit_ends_open_runs_as_killed(tmp_path: Path) -> None:
    """A run still open when the interpreter exits gets exactly one stop event, killed."""
    import subprocess

    db = tmp_path / "r.db"
    script = tmp_path / "s.py"
    script.write_text(
        "import threading, time\n"
        "from replay import Recorder\n"
        f"rec = Recorder({str(db)!r})\n"
        "def forever():\n"
        "    with rec.run('bg'):\n"
        "        time.sleep(60)\n"
        "threading.Thread(target=forever, daemon=True).start()\n"
        "time.sleep(0.2)\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=30, cwd=os.getcwd())
    with Store(db) as s:
        (run,) = s.runs()
        events = s.events(run.run_id)
    assert run.stop_reason == "killed"
    assert [e.kind for e in events] == ["run_start", "stop"]


def test_database_file_is_private(rec: Recorder, db: Path) -> None:
    """The store file is created readable by its owner only (0600)."""
    with rec.run("a"):
        pass
    rec.flush()
    assert (os.stat(db).st_mode & 0o777) == 0o600


def test_a_file_that_is_not_sqlite_is_a_counted_drop_not_a_crash(tmp_path: Path) -> None:
    """Pointing the recorder at a non-SQLite file keeps the agent running and leaves the file
    untouched.
    """
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database" * 10)
    rec = Recorder(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rec.run("a"):
            pass
        rec.flush()
    assert rec.dropped == 2
    assert path.read_bytes() == b"these are my notes, not a database" * 10
    rec.close()
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(path).execute("select 1 from runs")


def test_a_deleted_store_file_never_breaks_the_agent(rec: Recorder, db: Path) -> None:
    """Deleting the database under a running recorder leaves the agent working."""

    @rec.agent("a")
    def handle(i: int) -> int:
        return i * 2

    handle(1)
    rec.flush()
    for p in db.parent.glob("replay.db*"):
        p.unlink()
    assert [handle(i) for i in range(3)] == [0, 2, 4]
    assert rec.flush() is True


def test_rec_prune_deletes_what_expired_and_keeps_pinned_runs(db: Path) -> None:
    """rec.prune() deletes expired runs and returns the counts; a pinned run is kept."""
    rec = Recorder(db, event_days=1, snapshot_days=1)

    @rec.agent("a")
    def handle(i: int) -> int:
        return i

    handle(1)
    keep = rec.last_run_id
    handle(2)
    rec.flush()
    with Store(db) as s:
        s.pin(keep)
    far = 10**13 + 10 * 86_400_000
    dry = rec.prune(now_ms=far, dry_run=True)
    res = rec.prune(now_ms=far)
    assert (dry.runs, res.runs) == (1, 1) and res.events >= 2
    with Store(db) as s:
        assert [r.run_id for r in s.runs()] == [keep]
    rec.close()


def test_runs_in_many_threads_stay_separate_and_complete(rec: Recorder, db: Path) -> None:
    """Runs started in 8 threads at once each get their own steps and exactly one stop event."""

    @rec.tool("work")
    def work(i: int) -> int:
        return i

    @rec.agent("a")
    def handle(n: int) -> str:
        for i in range(n):
            work(i)
        return replay.current_run_id() or ""

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(handle, [5 + i % 7 for i in range(64)]))
    rec.flush()
    assert len(set(ids)) == 64
    with Store(db) as s:
        for i, rid in enumerate(ids):
            events = s.events(rid)
            assert [e.kind for e in events].count("stop") == 1
            assert [e.step_id for e in steps_of(events)] == list(range(1, 6 + i % 7))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_a_forked_child_records_with_its_own_writer(rec: Recorder, db: Path) -> None:
    """After fork() (a prefork server), runs in the child are written by the child's own writer
    thread.
    """

    @rec.agent("a")
    def handle(who: str) -> str:
        return who

    handle("parent")
    rec.flush()
    pid = os.fork()
    if pid == 0:  # the child: record one run and leave without running the parent's cleanup
        try:
            handle("child")
            ok = rec.flush(10)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with Store(db) as s:
        assert sorted(r.output for r in s.runs()) == ["child", "parent"]
