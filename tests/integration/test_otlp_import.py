"""replay.otlp_import: OTLP JSON traces from OpenInference, OpenLLMetry and the OTel GenAI
conventions become runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from replay import Recorder
from replay.cli import cli
from replay.otlp_import import OtlpDecodeError, import_otlp
from replay.replayer import replay_run
from replay.store import Store

DATA = Path(__file__).parent.parent / "data" / "otlp"
PLANTED = "alice@example.com"


@pytest.fixture(autouse=True)
def _no_shared_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLAY_REDACTION_KEY", raising=False)


def recorded_lookup_sha(db: Path) -> str:
    """The args_sha the recorder gives lookup_customer(email=PLANTED) in the store `db`."""
    rec = Recorder(str(db))

    @rec.tool("lookup_customer")
    def lookup_customer(email: str) -> dict:
        return {"customer_id": "c_42"}

    with rec.run("probe", input={}):
        lookup_customer(email=PLANTED)
    rec.close()
    with Store(db) as st:
        run = st.runs(agent="probe")[0]
        (step,) = [e for e in st.events(run.run_id) if e.kind == "tool_result"]
    return str(step.args_sha)


def imported(db: Path, name: str) -> tuple[object, list]:
    with Store(db) as st:
        result = import_otlp(st, DATA / name)
        assert len(result.added) == 1, result
        run = st.get_run(result.added[0])
        return run, st.events(run.run_id)


def steps_of(events: list) -> list[tuple]:
    return [
        (e.step_id, e.kind, e.tool, e.status, e.error)
        for e in events
        if e.kind in ("tool_result", "model_result")
    ]


class TestSamples:
    def test_genai_conventions_give_a_run_with_ordered_steps_errors_and_usage(
        self, tmp_path: Path
    ) -> None:
        """The GenAI sample becomes one completed run: chat, a lookup, a timed-out send and its
        retry, tokens summed.
        """
        db = tmp_path / "r.db"
        run, events = imported(db, "genai.json")
        assert (run.agent, run.stop_reason, run.call_style) == (
            "support-agent",
            "completed",
            "value",
        )
        assert steps_of(events) == [
            (1, "model_result", "gpt-4o-2024-08-06", "ok", None),
            (2, "tool_result", "lookup_customer", "ok", None),
            (3, "tool_result", "send_invoice", "error", "TimeoutError"),
            (4, "tool_result", "send_invoice", "ok", None),
        ]
        assert (run.usage.tokens_in, run.usage.tokens_out, run.tool_calls) == (412, 38, 3)
        assert run.versions == {"model": "gpt-4o-2024-08-06"}
        assert run.ended_ms - run.started_ms == 4200
        send = [e for e in events if e.tool == "send_invoice"]
        assert send[0].args_sha == send[1].args_sha and send[0].duration_ms == 2000
        assert [e.kind for e in events][0] == "run_start" and events[-1].kind == "stop"

    def test_openinference_gives_a_run_with_an_llm_and_a_tool_step(self, tmp_path: Path) -> None:
        """The OpenInference sample: AGENT span -> run, LLM span -> model step with token counts,
        TOOL span -> tool step.
        """
        run, events = imported(tmp_path / "r.db", "openinference.json")
        assert (run.agent, run.stop_reason) == ("support-agent", "completed")
        assert steps_of(events) == [
            (1, "model_result", "gpt-4o-mini", "ok", None),
            (2, "tool_result", "lookup_customer", "ok", None),
        ]
        assert (run.usage.tokens_in, run.usage.tokens_out) == (233, 21)
        assert run.output == "Your plan is pro."  # text/plain output stays text

    def test_openllmetry_gives_an_error_run_with_keyword_arguments(self, tmp_path: Path) -> None:
        """The OpenLLMetry sample: a failed workflow stops with error, its kwargs are the run's
        bound input.
        """
        run, events = imported(tmp_path / "r.db", "openllmetry.json")
        assert (run.agent, run.stop_reason, run.call_style) == ("support_agent", "error", "bound")
        assert steps_of(events) == [
            (1, "model_result", "gpt-4o", "ok", None),
            (2, "tool_result", "lookup_customer", "ok", None),
            (3, "tool_result", "issue_refund", "error", "RuntimeError"),
        ]
        assert set(run.input) == {"ticket", "email"} and run.input["ticket"] == "T-1044"

    @pytest.mark.parametrize("name", ["genai.json", "openinference.json", "openllmetry.json"])
    def test_tool_args_sha_equals_the_recorders(self, tmp_path: Path, name: str) -> None:
        """lookup_customer's args_sha from each convention equals what the recorder gives the same
        call in that store.
        """
        db = tmp_path / "r.db"
        want = recorded_lookup_sha(db)
        _run, events = imported(db, name)
        (lookup,) = [e for e in events if e.tool == "lookup_customer"]
        assert lookup.args_sha == want

    @pytest.mark.parametrize("name", ["genai.json", "openinference.json", "openllmetry.json"])
    def test_nothing_planted_reaches_the_store(self, tmp_path: Path, name: str) -> None:
        """The e-mail address in the trace's inputs, arguments and results is pseudonymized before
        it is stored.
        """
        db = tmp_path / "r.db"
        run, _events = imported(db, name)
        assert PLANTED not in json.dumps(run.input)
        with Store(db) as st:
            st.checkpoint()
        assert PLANTED.encode() not in db.read_bytes()
        assert b"redacted.invalid" in db.read_bytes()

    def test_importing_twice_adds_nothing(self, tmp_path: Path) -> None:
        """Run ids derive from the trace, so a second import of the same file finds the run already
        there.
        """
        with Store(tmp_path / "r.db") as st:
            first = import_otlp(st, DATA / "genai.json")
            second = import_otlp(st, DATA / "genai.json")
            assert second.added == [] and second.skipped == first.added
            assert st.count_runs() == 1


class TestReplay:
    def test_an_imported_openinference_trace_replays_against_a_registered_agent(
        self, tmp_path: Path
    ) -> None:
        """The tool layer answers the agent's calls from the imported trace, and the diff is
        empty."""
        db = tmp_path / "r.db"
        run, _ = imported(db, "openinference.json")
        rec = Recorder(str(tmp_path / "live.db"))
        calls: list[str] = []

        @rec.model("gpt-4o-mini")
        def llm(messages: list) -> dict:
            calls.append("llm")
            raise AssertionError("replay must answer the model from the trace")

        @rec.tool("lookup_customer")
        def lookup_customer(email: str) -> dict:
            calls.append("lookup")
            raise AssertionError("replay must answer the tool from the trace")

        @rec.agent("support-agent")
        def support(ticket: dict) -> str:
            llm(messages=[{"role": "user", "content": "What is my plan?"}])
            customer = lookup_customer(email=ticket["email"])
            return f"Your plan is {customer['plan']}."

        result = replay_run(run.run_id, agent=support, db=str(db))
        rec.close()
        assert calls == []
        assert result.diff.is_empty, str(result.diff)
        assert result.stop_reason == "completed"


class TestErrors:
    def test_a_file_without_resource_spans_names_the_file_and_the_format(
        self, tmp_path: Path
    ) -> None:
        """A JSON file that is not an OTLP trace export is refused with the file name and what was
        expected.
        """
        bad = tmp_path / "x.json"
        bad.write_text('{"spans": []}')
        with Store(tmp_path / "r.db") as st, pytest.raises(OtlpDecodeError) as err:
            import_otlp(st, bad)
        assert str(bad) in str(err.value) and "resourceSpans" in str(err.value)

    def test_a_trace_without_genai_spans_is_refused(self, tmp_path: Path) -> None:
        """Spans that are neither agent, tool nor LLM spans give an error naming the three
        conventions.
        """
        f = tmp_path / "plain.json"
        span = {
            "traceId": "ab" * 16,
            "spanId": "cd" * 8,
            "name": "GET /",
            "startTimeUnixNano": "1",
            "endTimeUnixNano": "2",
        }
        f.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}))
        with (
            Store(tmp_path / "r.db") as st,
            pytest.raises(OtlpDecodeError, match="openinference.span.kind"),
        ):
            import_otlp(st, f)

    def test_a_malformed_span_id_names_the_span_not_its_value(self, tmp_path: Path) -> None:
        """A bad id is reported by its place in the file; the value itself is not echoed."""
        f = tmp_path / "bad.json"
        span = {"traceId": "secret-looking-value", "spanId": "cd" * 8, "name": "x"}
        f.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}))
        with Store(tmp_path / "r.db") as st, pytest.raises(OtlpDecodeError) as err:
            import_otlp(st, f)
        assert "resourceSpans[0].scopeSpans[0].spans[0]" in str(err.value)
        assert "secret-looking-value" not in str(err.value)

    def test_deep_nesting_and_parent_cycles_import_without_hanging(self, tmp_path: Path) -> None:
        """A tool span 5,000 levels deep imports as one step; two spans naming each other as parent
        are not a run.
        """
        tid = "ab" * 16
        spans = [
            {
                "traceId": tid,
                "spanId": f"{1:016x}",
                "name": "invoke_agent deep",
                "startTimeUnixNano": "1000000",
                "endTimeUnixNano": "9000000",
                "attributes": [
                    {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}}
                ],
            }
        ]
        for i in range(2, 5002):
            spans.append(
                {
                    "traceId": tid,
                    "spanId": f"{i:016x}",
                    "parentSpanId": f"{i - 1:016x}",
                    "name": "wrap",
                    "startTimeUnixNano": str(1000000 + i),
                    "endTimeUnixNano": "8000000",
                }
            )
        spans.append(
            {
                "traceId": tid,
                "spanId": f"{9999:016x}",
                "parentSpanId": f"{5001:016x}",
                "name": "t",
                "startTimeUnixNano": "7000000",
                "endTimeUnixNano": "7500000",
                "attributes": [
                    {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
                    {"key": "gen_ai.tool.name", "value": {"stringValue": "deep.tool"}},
                ],
            }
        )
        loop = "cd" * 16
        for a, b in (("0a", "0b"), ("0b", "0a")):
            spans.append(
                {
                    "traceId": loop,
                    "spanId": a * 8,
                    "parentSpanId": b * 8,
                    "name": "execute_tool x",
                    "attributes": [
                        {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}}
                    ],
                }
            )
        f = tmp_path / "hostile.json"
        f.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}))
        with Store(tmp_path / "r.db") as st:
            (rid,) = import_otlp(st, f).added
            assert [e.tool for e in st.events(rid) if e.step_id] == ["deep.tool"]

    def test_json_lines_of_export_requests_are_read(self, tmp_path: Path) -> None:
        """A collector file-exporter output (one request per line) imports every request in it."""
        lines = [
            json.dumps(json.loads((DATA / n).read_text()))
            for n in ("genai.json", "openinference.json")
        ]
        f = tmp_path / "traces.jsonl"
        f.write_text("\n".join(lines) + "\n")
        with Store(tmp_path / "r.db") as st:
            assert len(import_otlp(st, f).added) == 2


class TestCli:
    def test_import_format_otlp_loads_every_sample(self, tmp_path: Path) -> None:
        """`replay import --format otlp` imports the three samples and says how many runs it
        added."""
        db = tmp_path / "r.db"
        files = [str(DATA / n) for n in ("genai.json", "openinference.json", "openllmetry.json")]
        res = CliRunner().invoke(
            cli, ["import", "--format", "otlp", *files, "--db", str(db)], catch_exceptions=False
        )
        assert res.exit_code == 0, res.output
        assert res.output.splitlines()[-1] == f"imported 3 run(s) into {db}; 0 already there"
        shown = CliRunner().invoke(cli, ["runs", "--db", str(db)], catch_exceptions=False)
        assert shown.output.count("support") == 3

    def test_a_bad_file_exits_2_and_writes_nothing(self, tmp_path: Path) -> None:
        """One unreadable file among good ones: exit 2 naming it, and the store is not created."""
        bad = tmp_path / "bad.json"
        bad.write_text("not json at all")
        db = tmp_path / "r.db"
        res = CliRunner().invoke(
            cli, ["import", "--format", "otlp", str(DATA / "genai.json"), str(bad), "--db", str(db)]
        )
        assert res.exit_code == 2
        assert f"{bad}: line 1: not valid JSON" in res.output
        assert not db.exists()

    def test_the_installed_command_imports_a_trace(self, tmp_path: Path) -> None:
        """The installed `replay import --format otlp` in a subprocess imports the GenAI sample."""
        db = tmp_path / "r.db"
        exe = shutil.which("replay") or pytest.fail(
            "the replay console script is not installed (pip install -e .)"
        )
        out = subprocess.run(
            [exe, "import", "--format", "otlp", str(DATA / "genai.json"), "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "imported 1 run(s)" in out.stdout
