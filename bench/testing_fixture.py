"""What nbfleet.testing costs a test suite: the fixture's set-up and tear-down, and what a test does with it.

- function scope: ``start_emulator()`` + ``close()`` per test (target ≤ 0.3 s);
- session scope: the per-test ``reset()`` the ``nbfleet_server`` fixture does (target ≤ 5 ms), on an empty
  server and after a test that left instances behind;
- a typical test step: create through the SDK, ``clock.run_pending()`` to RUNNING, ``clock.advance(hours=2)``
  through the lease's expiry and the stop;
- importing ``nbfleet.testing``: its time in a fresh interpreter, and that no Jupyter module comes with it.

    python bench/testing_fixture.py [--runs 30] [--no-record]

Needs only nbfleet and the official SDK (``pip install nbfleet huaweicloudsdkmodelarts``), not the test extra.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import median, percentile, publish, table  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def import_cost() -> tuple[float, bool]:
    code = (
        "import sys, time; t = time.perf_counter(); import nbfleet.testing; "
        "print(time.perf_counter() - t, any(m.split('.')[0] in ('jupyter_server', 'jupyterlab', 'ipykernel', "
        "'jupyter_client') for m in sys.modules))"
    )
    runs = []
    jupyter = False
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        runs.append(float(out[0]))
        jupyter = jupyter or out[1] == "True"
    return median(runs), jupyter


def first_server() -> tuple[float, float, bool]:
    """The first server of a process (it also makes the migrated store that later ones copy), the process's
    memory with that server running, and whether any Jupyter module was loaded by then."""
    code = (
        "import sys, time, psutil; from nbfleet.testing import start_emulator; t = time.perf_counter(); "
        "env = start_emulator(); took = time.perf_counter() - t; env.clock.now(); "
        "rss = psutil.Process().memory_info().rss / 2**20; "
        "jupyter = any(m.split('.')[0] in ('jupyter_server', 'jupyterlab', 'ipykernel', 'jupyter_client') "
        "for m in sys.modules); env.close(); print(took, rss, jupyter)"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        for _ in range(3)
    ]
    return median([float(r[0]) for r in runs]), median([float(r[1]) for r in runs]), any(r[2] == "True" for r in runs)


def create(client):
    from huaweicloudsdkmodelarts.v1 import (
        CreateNotebookRequest,
        ListImageRequest,
        NotebookCreateRequest,
        VolumeMountRequest,
    )

    image = client.list_image(ListImageRequest(name="notebook-python3.11")).data[0]
    body = NotebookCreateRequest(
        name="bench",
        flavor="modelarts.vm.cpu.2u",
        image_id=image.id,
        volume=VolumeMountRequest(category="EVS", ownership="MANAGED"),
    )
    return client.create_notebook(CreateNotebookRequest(body=body))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    from huaweicloudsdkmodelarts.v1 import ShowNotebookRequest

    from nbfleet.testing import start_emulator

    start_emulator().close()  # the per-process store template, made once
    starts, stops = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        env = start_emulator()
        starts.append(time.perf_counter() - t)
        t = time.perf_counter()
        env.close()
        stops.append(time.perf_counter() - t)
    whole = [a + b for a, b in zip(starts, stops, strict=True)]

    env = start_emulator()
    try:
        client = env.client()
        env.reset()
        empty = []
        for _ in range(args.runs * 5):
            t = time.perf_counter()
            env.reset()
            empty.append(time.perf_counter() - t)
        dirty, creates, pendings, advances = [], [], [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            nb = create(client)
            creates.append(time.perf_counter() - t)
            t = time.perf_counter()
            env.clock.run_pending()
            pendings.append(time.perf_counter() - t)
            assert client.show_notebook(ShowNotebookRequest(id=nb.id)).status == "RUNNING"
            t = time.perf_counter()
            env.clock.advance(hours=2)
            advances.append(time.perf_counter() - t)
            assert client.show_notebook(ShowNotebookRequest(id=nb.id)).status == "STOPPED"
            env.seed(5, status="RUNNING")
            t = time.perf_counter()
            env.reset()
            dirty.append(time.perf_counter() - t)
    finally:
        env.close()

    imported, jupyter = import_cost()
    first, rss, jupyter_with_server = first_server()
    rows = [
        [
            "function scope: set-up + tear-down, p50 / p95",
            f"{ms(median(whole))} / {ms(percentile(whole, 95))}",
            "target ≤ 300 ms",
        ],
        ["  set-up p50 / tear-down p50", f"{ms(median(starts))} / {ms(median(stops))}", f"{args.runs} servers"],
        ["  the first server of a process", ms(first), "makes the migrated store the others copy"],
        [
            "  memory of a test process with one server",
            f"{rss:.0f} MiB",
            "Jupyter modules loaded: " + ("yes" if jupyter_with_server else "none"),
        ],
        [
            "session scope: reset per test, empty server, p50 / p95",
            f"{ms(median(empty))} / {ms(percentile(empty, 95))}",
            "target ≤ 5 ms",
        ],
        ["  reset after a test left 6 instances, p50 / p95", f"{ms(median(dirty))} / {ms(percentile(dirty, 95))}", ""],
        ["SDK create_notebook, p50", ms(median(creates)), ""],
        ["clock.run_pending() to RUNNING (4 steps), p50", ms(median(pendings)), "8 s of emulated time"],
        ["clock.advance(hours=2) through the lease's end and the stop, p50", ms(median(advances)), ""],
        [
            "import nbfleet.testing, fresh interpreter, p50",
            ms(imported),
            "Jupyter modules loaded: " + ("yes" if jupyter else "none"),
        ],
    ]
    text = table(["what", "result", "note"], rows)
    publish(
        "testing_fixture",
        "nbfleet.testing fixture",
        text,
        {
            "setup_teardown_s": whole,
            "reset_empty_s": empty,
            "reset_dirty_s": dirty,
            "create_s": creates,
            "run_pending_s": pendings,
            "advance_2h_s": advances,
            "import_s": imported,
            "jupyter_loaded": jupyter,
            "first_server_s": first,
            "rss_mib": rss,
            "jupyter_loaded_with_server": jupyter_with_server,
        },
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
