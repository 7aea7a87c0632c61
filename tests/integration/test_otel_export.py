"""replay.otel: runs as OpenTelemetry GenAI spans, checked in memory and through a real OTLP/HTTP
receiver.
"""

from __future__ import annotations

import http.server
import json
import sqlite3
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from google.protobuf.json_format import MessageToJson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from replay import Recorder
from replay.cli import cli
from replay.otel import OtelExporter, OtelExportWarning, otlp_json, span_id_for, trace_id_for
from replay.otlp_import import import_otlp
from replay.store import Store

EMAIL = "alice.planted@example.com"
API_KEY = "sk-proj-Zx81kQm2Lp0sT5uV7wY9aB3cD4eF6gH8"


@pytest.fixture(autouse=True)
def _no_shared_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLAY_REDACTION_KEY", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)


def make_agent(rec: Recorder) -> Any:
    """A support agent: a model call, a lookup with planted PII and a key, a send that fails
    once."""

    @rec.model("openai.chat")
    def llm(messages: list) -> dict:
        return {
            "choices": [{"message": {"content": "ok"}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 8},
        }

    @rec.tool("crm.lookup")
    def lookup(email: str, api_key: str) -> dict:
        return {"customer": "c_42", "email": email, "note": f"key {api_key}"}

    failures = [TimeoutError("billing did not answer")]

    @rec.tool("email.send")
    def send(to: str) -> str:
        if failures:
            raise failures.pop()
        return "sent"

    @rec.agent("support-agent", versions={"model": "gpt-4o", "prompt": "support-v3"})
    def handle(ticket: dict) -> str:
        llm([{"role": "user", "content": ticket["text"]}])
        c = lookup(email=ticket["email"], api_key=API_KEY)
        try:
            send(c["email"])
        except TimeoutError:
            send(c["email"])
        return "done"

    return handle


def record_one(
    tmp_path: Path, exporter: OtelExporter | None = None, **kw: Any
) -> tuple[Recorder, str]:
    rec = Recorder(str(tmp_path / "r.db"), **kw)
    if exporter is not None:
        rec.add_listener(exporter)
    handle = make_agent(rec)
    handle({"email": EMAIL, "text": f"hi, I am {EMAIL}"})
    rec.flush()
    assert rec.last_run_id is not None
    return rec, rec.last_run_id


# ---- a real OTLP/HTTP receiver ---------------------------------------------------------------


class Receiver:
    """An OTLP/HTTP collector on 127.0.0.1: POST /v1/traces protobuf, kept raw and decoded."""

    def __init__(self, status: int = 200, fail_first: int = 0) -> None:
        self.status = status
        self.fail_first = fail_first  # answer this many requests 503 (a collector restarting)
        self.bodies: list[bytes] = []
        self.metric_bodies: list[bytes] = []
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.paths.append(self.path)
                status = outer.status
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    status = 503
                if self.path == "/v1/traces" and status == 200:
                    outer.bodies.append(body)
                if self.path == "/v1/metrics" and status == 200:
                    outer.metric_bodies.append(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[Any]:
        out = []
        for body in self.bodies:
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    out.extend(ss.spans)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes)


# ---- in memory ----------------------------------------------------------------------------------


class TestSpans:
    def test_a_run_is_an_invoke_agent_span_with_its_steps_as_children(self, tmp_path: Path) -> None:
        """One invoke_agent span; the chat and execute_tool spans are its children, in step order,
        with GenAI names.
        """
        mem = InMemorySpanExporter()
        rec, rid = record_one(tmp_path, OtelExporter(span_exporter=mem, batch=False, metrics=False))
        rec.close()
        spans = mem.get_finished_spans()
        assert [s.name for s in spans] == [
            "invoke_agent support-agent",
            "chat gpt-4o",
            "execute_tool crm.lookup",
            "execute_tool email.send",
            "execute_tool email.send",
        ]
        root = spans[0]
        assert root.parent is None and root.kind == SpanKind.INTERNAL
        assert {s.context.trace_id for s in spans} == {trace_id_for(rid)}
        assert all(s.parent.span_id == root.context.span_id for s in spans[1:])
        assert spans[1].kind == SpanKind.CLIENT
        a = attrs(root)
        assert (
            a["gen_ai.operation.name"] == "invoke_agent"
            and a["gen_ai.agent.name"] == "support-agent"
        )
        assert a["replay.run_id"] == rid and a["replay.stop_reason"] == "completed"
        assert a["gen_ai.response.finish_reasons"] == ("completed",)
        assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (120, 8)
        assert a["replay.version.prompt"] == "support-v3"
        assert root.status.status_code == StatusCode.OK

    def test_step_attributes_carry_the_stored_hashes_and_times(self, tmp_path: Path) -> None:
        """Each step span has the tool name, the stored args/output hashes, and start/end from
        ts_ms and duration_ms.
        """
        mem = InMemorySpanExporter()
        rec, rid = record_one(tmp_path, OtelExporter(span_exporter=mem, batch=False, metrics=False))
        rec.close()
        with Store(tmp_path / "r.db") as st:
            events = [e for e in st.events(rid) if e.step_id is not None]
            run = st.get_run(rid)
        spans = mem.get_finished_spans()
        root = spans[0]
        assert (root.start_time, root.end_time) == (run.started_ms * 10**6, run.ended_ms * 10**6)
        for e, s in zip(events, spans[1:], strict=True):
            a = attrs(s)
            assert (a["replay.args_sha"], a.get("replay.output_sha")) == (e.args_sha, e.output_sha)
            assert a["replay.step_id"] == e.step_id
            assert (
                s.end_time == e.ts_ms * 10**6 and s.start_time == (e.ts_ms - e.duration_ms) * 10**6
            )
            assert s.context.span_id == span_id_for(rid, e.step_id)
        lookup = attrs(spans[2])
        assert (
            lookup["gen_ai.operation.name"] == "execute_tool"
            and lookup["gen_ai.tool.name"] == "crm.lookup"
        )
        chat = attrs(spans[1])
        assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.request.model"] == "gpt-4o"
        assert (chat["gen_ai.usage.input_tokens"], chat["gen_ai.usage.output_tokens"]) == (120, 8)
        assert chat["replay.tool"] == "openai.chat"

    def test_a_failed_tool_and_an_error_stop_are_error_spans(self, tmp_path: Path) -> None:
        """A tool that raised is an ERROR span with error.type; a run that stopped with error marks
        the agent span.
        """
        mem = InMemorySpanExporter()
        rec = Recorder(str(tmp_path / "r.db"))
        rec.add_listener(OtelExporter(span_exporter=mem, batch=False, metrics=False))

        @rec.tool("db.query")
        def query(q: str) -> None:
            raise ConnectionError("db down")

        @rec.agent("fragile")
        def fragile() -> None:
            query("select 1")

        with pytest.raises(ConnectionError):
            fragile()
        rec.close()
        root, step = mem.get_finished_spans()
        assert (
            step.status.status_code == StatusCode.ERROR
            and attrs(step)["error.type"] == "ConnectionError"
        )
        assert root.status.status_code == StatusCode.ERROR
        assert attrs(root)["error.type"] == "error" and attrs(root)["replay.stop_reason"] == "error"

    def test_a_tool_called_inside_another_tool_is_its_child_span(self, tmp_path: Path) -> None:
        """parent_step_id becomes the span parent (the inner tool under the outer), and an import
        gives it back.
        """
        mem = InMemorySpanExporter()
        rec = Recorder(str(tmp_path / "r.db"))
        rec.add_listener(OtelExporter(span_exporter=mem, batch=False, metrics=False))

        @rec.tool("kb.fetch")
        def fetch(doc: str) -> str:
            return "text"

        @rec.tool("kb.search")
        def search(q: str) -> list:
            return [fetch("d1")]

        @rec.agent("nested")
        def nested() -> None:
            search("refund policy")

        nested()
        rec.close()
        root, outer, inner = sorted(
            mem.get_finished_spans(), key=lambda s: s.attributes.get("replay.step_id", 0)
        )
        assert (outer.name, inner.name) == ("execute_tool kb.search", "execute_tool kb.fetch")
        assert outer.parent.span_id == root.context.span_id
        assert inner.parent.span_id == outer.context.span_id
        trace = tmp_path / "t.json"
        trace.write_text(json.dumps(otlp_json(mem.get_finished_spans())))
        with Store(tmp_path / "other.db") as st:
            (rid,) = import_otlp(st, trace).added
            assert [(e.step_id, e.tool, e.parent_step_id) for e in st.events(rid) if e.step_id] == [
                (1, "kb.search", None),
                (2, "kb.fetch", 1),
            ]

    def test_hashes_only_by_default_no_values(self, tmp_path: Path) -> None:
        """Without include_content no span carries an input, output, argument or result value."""
        mem = InMemorySpanExporter()
        rec, _ = record_one(
            tmp_path,
            OtelExporter(span_exporter=mem, batch=False, metrics=False),
            store_args="redacted",
        )
        rec.close()
        keys = {k for s in mem.get_finished_spans() for k in s.attributes}
        assert not keys & {
            "replay.input",
            "replay.output",
            "gen_ai.tool.call.arguments",
            "gen_ai.tool.call.result",
        }

    def test_replayed_runs_are_not_exported(self, tmp_path: Path) -> None:
        """A run written by replay (replay_of set) is left out, as the Prometheus exporter does."""
        mem = InMemorySpanExporter()
        rec, rid = record_one(tmp_path)
        rec.close()
        with Store(tmp_path / "r.db") as st:
            run = st.get_run(rid)
            events = st.events(rid)
        exp = OtelExporter(span_exporter=mem, batch=False, metrics=False)
        exp(run.model_copy(update={"replay_of": rid}), events)
        assert mem.get_finished_spans() == ()
        exp(run, events)
        assert len(mem.get_finished_spans()) == 5

    def test_sending_a_run_twice_gives_the_same_ids(self, tmp_path: Path) -> None:
        """Trace and span ids come from the run id: a backfill repeats them instead of making a
        second trace.
        """
        rec, rid = record_one(tmp_path)
        rec.close()
        ids = []
        for _ in range(2):
            mem = InMemorySpanExporter()
            with Store(tmp_path / "r.db") as st:
                OtelExporter(span_exporter=mem, batch=False, metrics=False).export_store(
                    st, run_ids=[rid]
                )
            ids.append([(s.context.trace_id, s.context.span_id) for s in mem.get_finished_spans()])
        assert ids[0] == ids[1] and len(set(ids[0])) == 5


class TestMetrics:
    def test_stop_counter_and_duration_histogram(self, tmp_path: Path) -> None:
        """agent_stop_total counts runs by stop reason; agent_run_duration records seconds."""
        reader = InMemoryMetricReader()
        exp = OtelExporter(
            span_exporter=InMemorySpanExporter(),
            batch=False,
            meter_provider=MeterProvider(metric_readers=[reader]),
        )
        rec, rid = record_one(tmp_path, exp)
        rec.close()
        with Store(tmp_path / "r.db") as st:
            latency_s = st.get_run(rid).latency_ms / 1000
        data = json.loads(reader.get_metrics_data().to_json())
        metrics = {
            m["name"]: m
            for rm in data["resource_metrics"]
            for sm in rm["scope_metrics"]
            for m in sm["metrics"]
        }
        (point,) = metrics["agent_stop_total"]["data"]["data_points"]
        assert (
            point["attributes"] == {"agent": "support-agent", "stop_reason": "completed"}
            and point["value"] == 1
        )
        hist = metrics["agent_run_duration"]
        assert hist["unit"] == "s"
        (hp,) = hist["data"]["data_points"]
        assert hp["count"] == 1 and hp["sum"] == pytest.approx(latency_s)


# ---- over the wire ------------------------------------------------------------------------------


class TestOtlpHttp:
    def test_live_listener_sends_protobuf_to_a_real_receiver_with_nothing_planted(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """Through the batch processor and OTLP/HTTP, the receiver gets the run's spans, and no
        planted value in its bytes.
        """
        exp = OtelExporter(receiver.url, include_content=True, metrics=False)
        rec, rid = record_one(tmp_path, exp, store_args="redacted")
        rec.close()
        assert exp.flush(10)
        exp.shutdown()
        spans = receiver.spans()
        assert sorted(s.name for s in spans) == sorted(
            [
                "invoke_agent support-agent",
                "chat gpt-4o",
                "execute_tool crm.lookup",
                "execute_tool email.send",
                "execute_tool email.send",
            ]
        )
        assert {int.from_bytes(s.trace_id, "big") for s in spans} == {trace_id_for(rid)}
        raw = b"".join(receiver.bodies)
        assert EMAIL.encode() not in raw and API_KEY.encode() not in raw
        assert b"redacted.invalid" in raw  # the content went, pseudonymized
        assert set(receiver.paths) == {"/v1/traces"}
        assert (exp.sent, exp.exported, exp.failed) == (5, 5, 0)

    def test_metrics_go_to_the_same_collector_over_otlp(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """With metrics on (the default), shutdown pushes agent_stop_total and agent_run_duration
        to /v1/metrics.
        """
        exp = OtelExporter(receiver.url)
        rec, _ = record_one(tmp_path, exp)
        rec.close()
        exp.shutdown()
        assert "/v1/metrics" in receiver.paths
        names = set()
        for body in receiver.metric_bodies:
            req = ExportMetricsServiceRequest()
            req.ParseFromString(body)
            names |= {
                m.name for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            }
        assert {"agent_stop_total", "agent_run_duration"} <= names

    def test_a_collector_that_is_down_never_breaks_recording_and_a_backfill_sends_the_runs(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """Spans refused by the collector are counted and warned about once; `replay otel-export`
        sends them later.
        """
        down = Receiver(status=400)  # a collector that refuses (400 is not retried)
        try:
            exp = OtelExporter(down.url, metrics=False, batch=False, timeout=2)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rec, rid = record_one(tmp_path, exp)
                handle = make_agent(rec)
                handle({"email": EMAIL, "text": "again"})
                rec.close()
            assert rec.dropped == 0
            with Store(tmp_path / "r.db") as st:
                assert st.count_runs() == 2
            assert exp.failed == 10 and exp.exported == 0
            assert len([w for w in caught if issubclass(w.category, OtelExportWarning)]) == 1
        finally:
            down.close()
        res = CliRunner().invoke(
            cli,
            [
                "otel-export",
                "--since",
                "1h",
                "--db",
                str(tmp_path / "r.db"),
                "--endpoint",
                receiver.url,
            ],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
        assert res.output.strip() == f"sent 2 run(s) (10 spans) to {receiver.url}"
        assert trace_id_for(rid) in {int.from_bytes(s.trace_id, "big") for s in receiver.spans()}

    def test_a_run_spooled_while_the_store_is_locked_is_counted_and_backfilled(
        self, tmp_path: Path
    ) -> None:
        """A run the writer spools (store locked) is not half-exported: counted failed, then sent
        from the store.
        """
        db = tmp_path / "r.db"
        Store(db).close()
        mem = InMemorySpanExporter()
        exp = OtelExporter(span_exporter=mem, batch=False, metrics=False, warn=False)
        rec = Recorder(str(db), timeout_s=0.2)
        rec.add_listener(exp)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            release.wait(10)
            conn.execute("COMMIT")
            conn.close()

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert held.wait(5)
        make_agent(rec)({"email": EMAIL, "text": "hi"})
        rec.flush()
        assert (exp.failed, mem.get_finished_spans()) == (1, ())
        release.set()
        holder.join()
        rec.close()
        assert rec.dropped == 0
        with Store(db) as st:
            assert exp.export_store(st, since_ms=0) == 1
        assert len(mem.get_finished_spans()) == 5

    def test_a_process_that_exits_without_shutdown_still_sends_its_runs(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """At exit the recorder's last runs reach the listener first, then the queued spans are
        sent.
        """
        script = tmp_path / "agent_exits.py"
        script.write_text(
            "from replay import Recorder\n"
            "from replay.otel import OtelExporter\n"
            f"rec = Recorder({str(tmp_path / 'r.db')!r})\n"
            f"rec.add_listener(OtelExporter({receiver.url!r}, metrics=False))\n"
            "@rec.tool('kb.search')\n"
            "def search(q):\n"
            "    return ['doc']\n"
            "with rec.run('exiting', input='q'):\n"
            "    search('q')\n"
            "# no rec.close(), no exporter.shutdown(): the process just ends\n"
        )
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        assert sorted(s.name for s in receiver.spans()) == [
            "execute_tool kb.search",
            "invoke_agent exiting",
        ]

    def test_a_collector_answering_503_gets_the_batch_on_a_retry(self, tmp_path: Path) -> None:
        """A 503 (collector restarting) is retried by the OTLP exporter: the receiver ends with
        every span, none failed.
        """
        flaky = Receiver(fail_first=1)
        try:
            exp = OtelExporter(flaky.url, metrics=False, timeout=10)
            rec, _ = record_one(tmp_path, exp)
            rec.close()
            assert exp.flush(15)
            exp.shutdown()
            assert len(flaky.spans()) == 5 and flaky.paths.count("/v1/traces") == 2
            assert (exp.exported, exp.failed) == (5, 0)
        finally:
            flaky.close()

    def test_otel_export_by_run_id_and_its_usage_errors(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """`replay otel-export RUN_ID` sends that run; no run and no --since is a usage error (exit
        2).
        """
        rec, rid = record_one(tmp_path)
        rec.close()
        db = str(tmp_path / "r.db")
        res = CliRunner().invoke(
            cli, ["otel-export", rid[:12], "--db", db, "--endpoint", receiver.url + "/v1/traces"]
        )
        assert res.exit_code == 0, res.output
        assert len(receiver.spans()) == 5
        res = CliRunner().invoke(cli, ["otel-export", "--db", db])
        assert res.exit_code == 2 and "give RUN_ID... or --since DURATION" in res.output
        res = CliRunner().invoke(
            cli, ["otel-export", "r_nope", "--db", db, "--endpoint", receiver.url]
        )
        assert res.exit_code == 2 and "no run" in res.output

    def test_a_collector_that_refuses_makes_the_command_exit_1(self, tmp_path: Path) -> None:
        """When spans are not accepted the command says so, names no credentials, and exits 1."""
        rec, _ = record_one(tmp_path)
        rec.close()
        down = Receiver(status=400)
        try:
            url = down.url.replace("http://", "http://user:hunter2@")
            res = CliRunner().invoke(
                cli,
                ["otel-export", "--since", "1h", "--db", str(tmp_path / "r.db"), "--endpoint", url],
            )
        finally:
            down.close()
        assert res.exit_code == 1
        assert "5 of 5 span(s) were not accepted" in res.output and "hunter2" not in res.output


class TestFile:
    def test_otel_export_file_writes_otlp_json_that_imports_back(self, tmp_path: Path) -> None:
        """`replay otel-export RUN_ID --content --file F` writes 0600 OTLP JSON with hex ids;
        importing it gives the run.
        """
        rec, rid = record_one(tmp_path, store_args="redacted")
        rec.close()
        out = tmp_path / "trace.json"
        db = str(tmp_path / "r.db")
        res = CliRunner().invoke(
            cli,
            ["otel-export", rid, "--content", "--db", db, "--file", str(out)],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
        assert res.output.strip() == f"wrote 1 run(s) (5 spans) to {out}"
        assert out.stat().st_mode & 0o777 == 0o600
        doc = json.loads(out.read_text())
        (span, *_rest) = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert span["traceId"] == f"{trace_id_for(rid):032x}" and span["kind"] == 1
        assert EMAIL not in out.read_text() and API_KEY not in out.read_text()
        with Store(tmp_path / "r.db") as st:
            assert import_otlp(st, out).skipped == [rid]  # the same run id: already there
        res = CliRunner().invoke(
            cli, ["otel-export", rid, "--db", db, "--file", str(out), "--endpoint", "http://x"]
        )
        assert res.exit_code == 2 and "drop --endpoint" in res.output


class TestRoundTrip:
    def test_exported_spans_import_back_as_the_same_run(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Spans exported with content, encoded as OTLP JSON (base64 ids), import into another
        store with equal hashes.
        """
        monkeypatch.setenv("REPLAY_REDACTION_KEY", "shared-team-secret")
        mem = InMemorySpanExporter()
        rec, rid = record_one(
            tmp_path,
            OtelExporter(span_exporter=mem, batch=False, metrics=False, include_content=True),
            store_args="redacted",
        )
        rec.close()
        doc = tmp_path / "trace.json"
        doc.write_text(MessageToJson(encode_spans(mem.get_finished_spans())))
        with Store(tmp_path / "other.db") as st:
            assert import_otlp(st, doc).added == [rid]
            got = [
                (e.tool, e.args_sha, e.output_sha, e.status, e.error)
                for e in st.events(rid)
                if e.step_id
            ]
            run = st.get_run(rid)
        with Store(tmp_path / "r.db") as st:
            want = [
                (e.tool, e.args_sha, e.output_sha, e.status, e.error)
                for e in st.events(rid)
                if e.step_id
            ]
            orig = st.get_run(rid)
        # the model step comes back under its recorded name (replay.tool); hashes of args and
        # results join
        assert got == want
        assert (run.stop_reason, run.input_sha, run.output_sha, run.call_style) == (
            "completed",
            orig.input_sha,
            orig.output_sha,
            "bound",
        )
