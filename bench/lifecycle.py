"""Lifecycle benchmark of the local runtime, in one run on one machine.

Measures the floor (a bare ``jupyter_server`` from the same image environment with the same flags
nbfleet uses, no sandbox, start to ``/api/status`` 200 on its socket) next to nbfleet as the official
SDK sees it, sandbox included: create → RUNNING, stop → STOPPED, start → RUNNING (polling
``show_notebook`` every 20 ms), and 10 instances created at once; then create → RUNNING with a warm
pool (``--warm-pool N`` members ready for the default image and flavor), how long a member takes to refill,
and each idle member's RSS. Also the one-off build of the image
environment (uv's cache warm, and empty), the RSS of one idle instance (and of its sandbox's own
processes), and of nbfleet itself.

    python bench/lifecycle.py [--runs 7] [--concurrent 10] [--warm-pool 2] [--no-record]

With ``--runtime docker`` (an engine in DOCKER_HOST, the catalogue's image built) the floor is a bare
``docker run`` of the same image with the same options until Jupyter answers on its socket, next to
create → RUNNING, stop, save-as-image, and the memory of one idle container.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import median, publish, table  # noqa: E402
from nbfleet.runtime.environments import EnvironmentSpec  # noqa: E402
from tests.images import catalogue_environment, make_reachable, shared_environments  # noqa: E402
from tests.procs import ServeProcess  # noqa: E402
from tests.runtime.local_helpers import marked  # noqa: E402

POLL = 0.02


def bare_start(root: Path, python: Path) -> tuple[float, float, float]:
    """Start one jupyter_server as nbfleet does, minus the sandbox; return (ready s, RSS MiB, SIGTERM→exit s)."""
    token, nid = uuid.uuid4().hex, str(uuid.uuid4())
    home = root / nid
    work = home / "work"
    work.mkdir(parents=True)
    (home / "run").mkdir()
    cmd = [
        str(python),
        "-m",
        "jupyter_server",
        "--ServerApp.sock=../run/jupyter.sock",
        f"--ServerApp.root_dir={work}",
        f"--ServerApp.base_url=/notebooks/{nid}/",
        "--ServerApp.open_browser=False",
        "--ServerApp.no_browser_open_file=True",
        "--ServerApp.allow_root=True",
        "--ServerApp.allow_remote_access=True",
    ]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "JUPYTER_TOKEN": token,
        "JUPYTER_RUNTIME_DIR": str(home / ".rt"),
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    socket = home / "run" / "jupyter.sock"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket))) as client:
        while True:
            try:
                if (
                    socket.exists()
                    and client.get(
                        f"http://notebook/notebooks/{nid}/api/status", headers={"Authorization": f"token {token}"}
                    ).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("bare jupyter_server never became ready")
            time.sleep(0.01)
    ready = time.perf_counter() - t0
    rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    t1 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    return ready, rss, time.perf_counter() - t1


def image_builds(root: Path) -> tuple[float, float]:
    """Seconds to build the default image environment into an empty image dir: with uv's cache as it is
    (warm after any earlier build on this host), and with an empty cache (every package downloaded)."""
    from nbfleet.runtime.environments import EnvironmentSpec, ImageEnvironments

    spec = EnvironmentSpec.from_json(catalogue_environment())
    _, warm = ImageEnvironments(root / "images-warm", shared=True).build("notebook-python3.11", spec)
    previous = os.environ.get("UV_CACHE_DIR")
    os.environ["UV_CACHE_DIR"] = str(root / "uv-cache-empty")
    try:
        _, cold = ImageEnvironments(root / "images-cold", shared=True).build("notebook-python3.11", spec)
    finally:
        if previous is None:
            del os.environ["UV_CACHE_DIR"]
        else:
            os.environ["UV_CACHE_DIR"] = previous
    return warm, cold


def sdk_client(server: ServeProcess):
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkmodelarts.v1 import ModelArtsClient

    c = server.creds
    return (
        ModelArtsClient.new_builder()
        .with_credentials(BasicCredentials(c["ak"], c["sk"], c["project_id"]))
        .with_endpoint(server.endpoint)
        .build()
    )


def sdk_create(client, image: str, name: str) -> str:
    """Create an instance of ``image`` with the default flavor through the SDK; its id."""
    from huaweicloudsdkmodelarts.v1 import CreateNotebookRequest, NotebookCreateRequest, VolumeMountRequest

    body = NotebookCreateRequest(
        name=name,
        image_id=image,
        flavor="modelarts.vm.cpu.2u",
        volume=VolumeMountRequest(category="EVS", ownership="MANAGED"),
    )
    return client.create_notebook(CreateNotebookRequest(body=body)).id


def wait(client, notebook_id: str, status: str, t0: float, timeout: float = 120) -> float:
    from huaweicloudsdkmodelarts.v1 import ShowNotebookRequest

    while True:
        nb = client.show_notebook(ShowNotebookRequest(id=notebook_id))
        if nb.status == status:
            return time.perf_counter() - t0
        if nb.status.endswith("FAILED") or nb.status == "ERROR":
            raise RuntimeError(f"{notebook_id} went {nb.status}: {nb.fail_reason}")
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{notebook_id} stuck in {nb.status}")
        time.sleep(POLL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--concurrent", type=int, default=10)
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    parser.add_argument("--runtime", choices=["local", "docker"], default="local")
    parser.add_argument("--warm-pool", type=int, default=2, help="members of the warm pool measured (0: skip)")
    args = parser.parse_args()
    if args.runtime == "docker":
        return main_docker(args)
    from huaweicloudsdkmodelarts.v1 import (
        DeleteNotebookRequest,
        ListImageRequest,
        StartNotebookRequest,
        StopNotebookRequest,
    )

    root = make_reachable(Path(tempfile.mkdtemp(prefix="nbfleet-bench-")))
    environments = shared_environments()
    python = environments.find("notebook-python3.11", EnvironmentSpec.from_json(catalogue_environment())).python
    build_warm, build_cold = image_builds(root)
    bare = [bare_start(root / "bare", python) for _ in range(args.runs)]

    server = ServeProcess(root / "data", runtime="local").start()
    client = sdk_client(server)
    image = next(i.id for i in client.list_image(ListImageRequest()).data if i.name == "notebook-python3.11")

    def create(name: str) -> tuple[str, float]:
        t0 = time.perf_counter()
        nid = sdk_create(client, image, name)
        return nid, wait(client, nid, "RUNNING", t0)

    creates, stops, starts, rss, sandbox_rss = [], [], [], [], []
    try:
        for i in range(args.runs):
            nid, took = create(f"bench-{i}")
            creates.append(took)
            everything, wrapper = _instance_rss(server.data_dir, nid)
            rss.append(everything)
            sandbox_rss.append(wrapper)
            t0 = time.perf_counter()
            client.stop_notebook(StopNotebookRequest(id=nid))
            stops.append(wait(client, nid, "STOPPED", t0))
            t0 = time.perf_counter()
            client.start_notebook(StartNotebookRequest(id=nid))
            starts.append(wait(client, nid, "RUNNING", t0))
            client.delete_notebook(DeleteNotebookRequest(id=nid))
        time.sleep(2)
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.concurrent) as pool:
            results = list(pool.map(lambda i: _safe(create, f"burst-{i}"), range(args.concurrent)))
        burst_total = time.perf_counter() - t0
        ok = [r for r in results if isinstance(r, tuple)]
        failed = [r for r in results if not isinstance(r, tuple)]
        nbfleet_rss = psutil.Process(server.proc.pid).memory_info().rss / 2**20
        for nid, _ in ok:
            client.delete_notebook(DeleteNotebookRequest(id=nid))
        time.sleep(3)
    finally:
        server.terminate()

    warm = warm_pool_runs(root, args.runs, args.warm_pool) if args.warm_pool > 0 else None

    bare_ready = median([b[0] for b in bare])
    rows = [
        [
            "bare jupyter_server start → /api/status 200 (floor)",
            f"{bare_ready:.2f} s",
            f"{min(b[0] for b in bare):.2f}–{max(b[0] for b in bare):.2f}",
            "",
        ],
        [
            "nbfleet create → RUNNING (SDK polling 20 ms)",
            f"{median(creates):.2f} s",
            f"{min(creates):.2f}–{max(creates):.2f}",
            f"{median(creates) / bare_ready:.2f}× floor (target ≤ 1.15×)",
        ],
        [
            "nbfleet start → RUNNING",
            f"{median(starts):.2f} s",
            f"{min(starts):.2f}–{max(starts):.2f}",
            f"{median(starts) / bare_ready:.2f}× floor",
        ],
        ["nbfleet stop → STOPPED", f"{median(stops):.2f} s", f"{min(stops):.2f}–{max(stops):.2f}", "target < 1 s"],
        ["bare jupyter_server SIGTERM → exit", f"{median([b[2] for b in bare]):.2f} s", "", ""],
        [
            f"{args.concurrent} creates at once → all RUNNING",
            f"{burst_total:.2f} s",
            f"{len(ok)} RUNNING, {len(failed)} failed",
            f"median each {median([r[1] for r in ok]):.2f} s",
        ],
        [
            "RSS of one idle instance (server, no kernel)",
            f"{median(rss):.0f} MiB",
            "",
            f"bare: {median([b[1] for b in bare]):.0f} MiB; of it the sandbox's sh + bwrap: "
            f"{median(sandbox_rss):.1f} MiB",
        ],
        *(_warm_rows(warm, bare_ready) if warm else []),
        ["image environment build (notebook-python3.11), uv cache warm", f"{build_warm:.1f} s", "", "once per image"],
        ["image environment build, uv cache empty (downloads)", f"{build_cold:.1f} s", "", "once per image"],
        ["RSS of nbfleet after the run", f"{nbfleet_rss:.0f} MiB", "", ""],
    ]
    text = table(["what", "median", "range / result", "note"], rows) + f"\n\nRuns: {args.runs} each."
    publish(
        "lifecycle",
        "Lifecycle (local runtime)",
        text,
        {
            "bare_ready_s": [b[0] for b in bare],
            "bare_rss_mib": [b[1] for b in bare],
            "create_s": creates,
            "start_s": starts,
            "stop_s": stops,
            "burst_total_s": burst_total,
            "burst_ok": len(ok),
            "sandbox_rss_mib": sandbox_rss,
            "image_build_warm_s": build_warm,
            "image_build_cold_s": build_cold,
            "burst_failed": [str(f) for f in failed],
            "instance_rss_mib": rss,
            "nbfleet_rss_mib": nbfleet_rss,
            "warm_pool": warm,
        },
        record=not args.no_record,
    )


def warm_pool_runs(root: Path, runs: int, size: int) -> dict:
    """A server with a warm pool of ``size`` for the default image and flavor: create → RUNNING as the SDK
    sees it, each create made once the pool is full again (also timed: how long a member takes to refill),
    and the RSS of each idle member as ``/health`` reports it."""
    from huaweicloudsdkmodelarts.v1 import (
        DeleteNotebookRequest,
        ListImageRequest,
    )

    env = {"NBFLEET_WARM_POOL": f'["notebook-python3.11@modelarts.vm.cpu.2u={size}"]'}
    server = ServeProcess(root / "data-warm", runtime="local", env=env).start()
    client = sdk_client(server)
    image = next(i.id for i in client.list_image(ListImageRequest()).data if i.name == "notebook-python3.11")

    def pool() -> dict:
        return httpx.get(f"{server.endpoint}/health", timeout=10).json()["warm_pool"]["pools"][0]

    def full(timeout: float = 120) -> float:
        t0 = time.perf_counter()
        while pool()["ready"] < size:
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"the warm pool did not fill: {pool()}")
            time.sleep(0.05)
        return time.perf_counter() - t0

    creates, refills, member_rss = [], [], []
    try:
        full()
        member_rss = pool()["rss_mib"]
        for i in range(runs):
            time.sleep(1)  # the last member's start has settled (its CPU would slow the create)
            t0 = time.perf_counter()
            nid = sdk_create(client, image, f"warm-{i}")
            creates.append(wait(client, nid, "RUNNING", t0))
            refills.append(full())
            client.delete_notebook(DeleteNotebookRequest(id=nid))
        time.sleep(3)
    finally:
        server.terminate()  # ends the members no create took
    return {"size": size, "create_s": creates, "refill_s": refills, "member_rss_mib": member_rss}


def _warm_rows(warm: dict, bare_ready: float) -> list[list[str]]:
    creates, refills = warm["create_s"], warm["refill_s"]
    return [
        [
            f"nbfleet create → RUNNING, warm pool of {warm['size']} (SDK polling 20 ms)",
            f"{median(creates):.2f} s",
            f"{min(creates):.2f}–{max(creates):.2f}",
            f"{median(creates) / bare_ready:.2f}× floor (target < 0.5 s)",
        ],
        [
            "warm pool: a member refilled after a create",
            f"{median(refills):.2f} s",
            f"{min(refills):.2f}–{max(refills):.2f}",
            "in the background, one member at a time",
        ],
        [
            "RSS of one idle warm-pool member (as /health reports it)",
            f"{median(warm['member_rss_mib']):.0f} MiB",
            ", ".join(f"{r:.0f}" for r in warm["member_rss_mib"]),
            "each member costs this while it waits",
        ],
    ]


IMAGE_REF = "registry.nbfleet.local/nbfleet/notebook-python3.11:1.0"


def bare_docker_run(engine, root: Path) -> tuple[float, float, float]:
    """One container of the image, as the docker runtime makes it, until Jupyter answers on its socket:
    (ready s, memory MiB, stop s)."""
    from docker.types import Mount

    from nbfleet.runtime.jupyter import server_args

    token = uuid.uuid4().hex
    run = root / uuid.uuid4().hex
    run.mkdir(parents=True)
    os.chown(run, 1000, 100)
    t0 = time.perf_counter()
    container = engine.containers.run(
        IMAGE_REF,
        [
            "python",
            "-m",
            "jupyter_server",
            *server_args(socket="/run/nbfleet/jupyter.sock", root_dir="/home/ma-user/work", base_url="/"),
        ],
        detach=True,
        user="1000:100",
        environment={"JUPYTER_TOKEN": token, "JUPYTER_RUNTIME_DIR": "/tmp/rt"},
        mounts=[Mount("/run/nbfleet", str(run), type="bind")],
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        init=True,
        mem_limit=8 << 30,
        nano_cpus=2 * 10**9,
    )
    socket = run / "jupyter.sock"
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket))) as client:
            while True:
                try:
                    if (
                        socket.exists()
                        and client.get(
                            "http://notebook/api/status", headers={"Authorization": f"token {token}"}
                        ).status_code
                        == 200
                    ):
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError("the bare container never answered")
                time.sleep(0.01)
        ready = time.perf_counter() - t0
        memory = container.stats(stream=False)["memory_stats"]["usage"] / 2**20
        t1 = time.perf_counter()
        container.stop(timeout=5)
        return ready, memory, time.perf_counter() - t1
    finally:
        container.remove(force=True)


def main_docker(args) -> None:
    import docker
    from huaweicloudsdkmodelarts.v1 import (
        CreateImageRequest,
        DeleteNotebookRequest,
        ImageCreateReq,
        ListImageRequest,
        ShowImageRequest,
        StopNotebookRequest,
    )

    engine = docker.from_env()
    root = Path(tempfile.mkdtemp(prefix="nbfleet-bench-docker-"))
    bare = [bare_docker_run(engine, root / "bare") for _ in range(args.runs)]
    server = ServeProcess(root / "data", runtime="docker").start()
    client = sdk_client(server)
    image = next(i.id for i in client.list_image(ListImageRequest()).data if i.name == "notebook-python3.11")
    creates, stops, memory, saves = [], [], [], []
    try:
        for i in range(args.runs):
            t0 = time.perf_counter()
            nid = sdk_create(client, image, f"bench-{i}")
            creates.append(wait(client, nid, "RUNNING", t0))
            memory.append(engine.containers.get(f"nbfleet-{nid}").stats(stream=False)["memory_stats"]["usage"] / 2**20)
            if i < 3:  # saving is slow and disk-bound: a few are enough
                saves.append(_save(client, nid, i, CreateImageRequest, ImageCreateReq, ShowImageRequest))
            t0 = time.perf_counter()
            client.stop_notebook(StopNotebookRequest(id=nid))
            stops.append(wait(client, nid, "STOPPED", t0))
            client.delete_notebook(DeleteNotebookRequest(id=nid))
        time.sleep(3)
    finally:
        server.terminate()
    bare_ready = median([b[0] for b in bare])
    done_saves = [s for s in saves if isinstance(s, float)]
    rows = [
        [
            "bare docker run → Jupyter answers (floor)",
            f"{bare_ready:.2f} s",
            f"{min(b[0] for b in bare):.2f}–{max(b[0] for b in bare):.2f}",
            "",
        ],
        [
            "nbfleet create → RUNNING (SDK polling 20 ms)",
            f"{median(creates):.2f} s",
            f"{min(creates):.2f}–{max(creates):.2f}",
            f"{median(creates) / bare_ready:.2f}× floor (target ≤ 1.15×)",
        ],
        [
            "nbfleet stop → STOPPED",
            f"{median(stops):.2f} s",
            f"{min(stops):.2f}–{max(stops):.2f}",
            f"bare stop: {median([b[2] for b in bare]):.2f} s",
        ],
        [
            "save as image (create-image → ACTIVE)",
            f"{median(done_saves):.2f} s" if done_saves else "n/a",
            ", ".join(s if isinstance(s, str) else f"{s:.2f}" for s in saves),
            "",
        ],
        [
            "memory of one idle container (engine's count)",
            f"{median(memory):.0f} MiB",
            "",
            f"bare: {median([b[1] for b in bare]):.0f} MiB",
        ],
    ]
    text = table(["what", "median", "range / result", "note"], rows) + f"\n\nRuns: {args.runs} each."
    publish(
        "lifecycle-docker",
        "Lifecycle (docker runtime)",
        text,
        {
            "bare_ready_s": [b[0] for b in bare],
            "create_s": creates,
            "stop_s": stops,
            "save_s": saves,
            "memory_mib": memory,
            "bare_memory_mib": [b[1] for b in bare],
        },
        record=not args.no_record,
    )


def _save(client, notebook_id: str, n: int, CreateImageRequest, ImageCreateReq, ShowImageRequest):
    t0 = time.perf_counter()
    try:
        image = client.create_image(
            CreateImageRequest(
                id=notebook_id,
                body=ImageCreateReq(name=f"bench-saved-{n}", namespace="bench", tag=uuid.uuid4().hex[:8]),
            )
        )
        while True:
            shown = client.show_image(ShowImageRequest(id=image.id))
            if shown.status == "ACTIVE":
                wait(client, notebook_id, "RUNNING", t0)
                return time.perf_counter() - t0
            if shown.status not in ("INIT", "CREATING") or time.perf_counter() - t0 > 300:
                return f"{shown.status}: {shown.status_message}"
            time.sleep(POLL)
    except Exception as exc:  # an answer to report, not a crash of the benchmark
        return f"failed: {type(exc).__name__}"


def _safe(fn, *a):
    try:
        return fn(*a)
    except Exception as exc:  # a failed create is a result to report, not a crash of the benchmark
        return exc


def _instance_rss(data_dir: Path, notebook_id: str) -> tuple[float, float]:
    """(RSS of all the instance's processes, RSS of its sandbox's own sh and bwrap processes), MiB."""
    roots = [p for p in marked(data_dir, notebook_id)]
    total = wrapper = 0
    for proc in roots:
        try:
            rss = proc.memory_info().rss
            name = proc.name()
        except psutil.Error:
            continue
        total += rss
        if name in ("sh", "bwrap"):
            wrapper += rss
    return total / 2**20, wrapper / 2**20


if __name__ == "__main__":
    main()
