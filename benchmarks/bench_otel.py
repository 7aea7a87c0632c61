"""Benchmark of the OpenTelemetry export listener and of the OTLP JSON import (issue 14).

Run: ``python benchmarks/bench_otel.py`` (prints a table; about 10 s). Ratios are against a
baseline measured in the same run on the same machine:

- writer drain time of N runs of 5 tool steps with an ``OtelExporter`` listener (spans built from
  the stored events, handed to the SDK's BatchSpanProcessor with an in-memory exporter) against the
  same recording with no listener: what the export adds off the agent's path;
- ``replay import --format otlp`` of the same runs exported as OTLP JSON, against importing the same
  runs as cassettes (`replay.cassette.import_cassette`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.protobuf.json_format import MessageToJson  # noqa: E402
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from replay import Recorder  # noqa: E402
from replay.cassette import cassette_from_store, import_cassette  # noqa: E402
from replay.otel import OtelExporter  # noqa: E402
from replay.otlp_import import import_otlp  # noqa: E402
from replay.store import Store  # noqa: E402

RUNS = 1_000
STEPS = 5


def _record(db: Path, listener: Any = None) -> float:
    rec = Recorder(str(db), store_args="redacted")
    if listener is not None:
        rec.add_listener(listener)

    @rec.tool("crm.lookup")
    def lookup(customer: int, email: str) -> dict[str, Any]:
        return {"id": customer, "email": email, "plan": "pro"}

    @rec.agent("bench-agent")
    def agent(i: int) -> str:
        for s in range(STEPS):
            lookup(i * 10 + s, f"user{i}@example.com")
        return "ok"

    t0 = time.perf_counter()
    for i in range(RUNS):
        agent(i)
    rec.flush(120)
    elapsed = time.perf_counter() - t0
    rec.close()
    return elapsed


def run() -> list[dict[str, Any]]:
    """Rows in `benchmarks/run.py`'s format: name, value, unit, reference, ratio, target, ok."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = _record(tmp / "base.db")
        mem = InMemorySpanExporter()
        exp = OtelExporter(span_exporter=mem, metrics=False, include_content=True)
        with_otel = _record(tmp / "otel.db", exp)
        exp.flush(60)
        exp.shutdown()
        spans = mem.get_finished_spans()
        per_run_ms = (with_otel - base) / RUNS * 1000
        rows.append(
            {
                "name": f"record + flush {RUNS} runs x {STEPS} steps with the OTel listener "
                f"({len(spans)} spans)",
                "value": round(with_otel, 3),
                "unit": "s",
                "reference_value": round(base, 3),
                "reference_name": "no listener",
                "ratio": round(with_otel / base, 2),
                "target": "< 2 ms per run added on the writer thread",
                "ok": per_run_ms < 2.0 and exp.failed == 0,
            }
        )

        trace = tmp / "trace.json"
        trace.write_text(MessageToJson(encode_spans(spans)))
        with Store(tmp / "otel.db") as st:
            cassettes = [cassette_from_store(st, r.run_id) for r in st.runs()]
        t0 = time.perf_counter()
        with Store(tmp / "cas.db") as st:
            for c in cassettes:
                import_cassette(st, c)
        cas_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with Store(tmp / "imp.db") as st:
            added = len(import_otlp(st, trace).added)
        otlp_s = time.perf_counter() - t0
        rows.append(
            {
                "name": f"import --format otlp of {added} runs "
                f"({trace.stat().st_size // 1024} KiB OTLP JSON)",
                "value": round(otlp_s, 3),
                "unit": "s",
                "reference_value": round(cas_s, 3),
                "reference_name": "the same runs as cassettes",
                "ratio": round(otlp_s / cas_s, 2),
                "target": "informational (redacts and hashes every value)",
                "ok": added == RUNS,
            }
        )
    return rows


if __name__ == "__main__":
    for r in run():
        print(
            f"{r['name']}: {r['value']} {r['unit']} vs {r['reference_value']} {r['unit']} "
            f"({r['reference_name']}), "
            f"{r['ratio']}x; target {r['target']}: {'ok' if r['ok'] else 'NOT MET'}"
        )
