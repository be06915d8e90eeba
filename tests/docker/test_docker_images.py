"""Images on the Docker runtime, through the official SDK: save a notebook with what its owner installed,
start a new notebook from it; register, sync and delete engine images, with their error cases."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmodelarts.v1 import (
    CreateImageRequest,
    CreateNotebookRequest,
    DeleteImageRequest,
    DeleteImageRequestBody,
    ImageCreateReq,
    ImageRegRequest,
    ListImageGroupRequest,
    NotebookCreateRequest,
    RegisterImageRequest,
    ShowImageRequest,
    SyncImageRequest,
    VolumeMountRequest,
)

from .. import notebook_http
from ..runtime.test_isolation import PACKAGE, _wheel
from .conftest import IMAGE
from .test_docker_runtime import base, create, run, sdk, wait

pytestmark = [pytest.mark.slow, pytest.mark.runtime_only]
BUILT = f"registry.nbfleet.local/nbfleet/{IMAGE}:1.0"


def wait_image(client, image_id: str, *statuses: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while True:
        image = client.show_image(ShowImageRequest(id=image_id))
        if image.status in statuses:
            return image
        assert time.monotonic() < deadline, f"image {image_id} stayed {image.status}"
        time.sleep(0.2)


def refused(call) -> str:
    with pytest.raises(ClientRequestException) as error:
        call()
    return error.value.error_code


def test_what_a_user_installed_survives_saving_the_notebook_as_an_image(engine, docker_server):
    server = docker_server()
    client = sdk(server)
    nb = wait(client, create(client, "builder"), "RUNNING")
    wheel, data = _wheel()
    upload = notebook_http.put(
        f"{base(nb)}/api/contents/{wheel}",
        headers={"Authorization": f"token {nb.token}"},
        json={"type": "file", "format": "base64", "content": base64.b64encode(data).decode()},
    )
    assert upload.status_code in (200, 201), upload.text
    installed = run(
        nb,
        f"import subprocess, sys\nr = subprocess.run([sys.executable, '-m', 'pip', 'install', "
        f"'--no-index', '--user', {wheel!r}], capture_output=True, text=True)\nprint(r.returncode)",
    )
    assert installed.strip().endswith("0"), installed
    run(nb, "open('only-in-the-volume.txt', 'w').write('x')")

    tag = uuid.uuid4().hex[:8]
    saved = client.create_image(
        CreateImageRequest(id=nb.id, body=ImageCreateReq(name="with-probe", namespace="team", tag=tag))
    )
    assert saved.status == "INIT"
    image = wait_image(client, saved.id, "ACTIVE", "CREATE_FAILED")
    assert image.status == "ACTIVE", image.status_message
    assert image.size and image.origin == "IMAGE_SAVE"
    wait(client, nb.id, "RUNNING")
    # The saved image carries nothing of the instance's token, in its configuration or anywhere else.
    assert nb.token not in json.dumps(engine.images.get(image.swr_path).attrs)
    assert nb.token not in json.dumps(engine.api.history(image.swr_path))
    # Nor the labels that name the instance, its owner and nbfleet's data dir.
    labels = engine.images.get(image.swr_path).labels
    assert not any(
        labels.get(key) for key in ("nbfleet.instance", "nbfleet.owner", "nbfleet.project", "nbfleet.data-dir")
    )

    try:
        fresh = client.create_notebook(
            CreateNotebookRequest(
                body=NotebookCreateRequest(
                    name="from-saved",
                    image_id=saved.id,
                    flavor="modelarts.vm.cpu.2u",
                    volume=VolumeMountRequest(category="EVS", ownership="MANAGED"),
                )
            )
        ).id
        fresh = wait(client, fresh, "RUNNING")
        assert run(fresh, f"import {PACKAGE}; print({PACKAGE}.VALUE)").strip() == "42"
        # The work volume was not baked in.
        assert run(fresh, "import os; print(os.path.exists('only-in-the-volume.txt'))").strip() == "False"
    finally:  # the engine outlives the test: leave no saved image in it
        for container in engine.containers.list(all=True, filters={"ancestor": image.swr_path}):
            container.remove(force=True)
        engine.images.remove(image.swr_path, force=True)


def test_register_sync_group_and_delete_engine_images(engine, docker_server):
    server = docker_server()
    client = sdk(server)
    custom = f"registry.example.com/team/custom-{uuid.uuid4().hex[:6]}"
    engine.images.get(BUILT).tag(custom, tag="1")
    registered = client.register_image(
        RegisterImageRequest(body=ImageRegRequest(swr_path=f"{custom}:1", description="ours"))
    )
    assert registered.status == "ACTIVE" and registered.type == "DEDICATED" and registered.size > 0
    assert (
        refused(lambda: client.register_image(RegisterImageRequest(body=ImageRegRequest(swr_path=f"{custom}:1"))))
        == "ModelArts.6737"
    )
    assert (
        refused(
            lambda: client.register_image(
                RegisterImageRequest(body=ImageRegRequest(swr_path="registry.invalid/team/nowhere:1"))
            )
        )
        == "ModelArts.6797"
    )  # neither in the engine nor pullable
    plain = next(tag for image in engine.images.list("nbfleet/base") for tag in image.tags)
    engine.images.get(plain).tag("registry.example.com/team/no-jupyter", tag="1")
    assert (
        refused(
            lambda: client.register_image(
                RegisterImageRequest(body=ImageRegRequest(swr_path="registry.example.com/team/no-jupyter:1"))
            )
        )
        == "ModelArts.6336"
    )  # serves no notebook

    synced = client.sync_image(SyncImageRequest(image_id=registered.id))
    assert synced.status == "ACTIVE" and synced.size == registered.size
    groups = client.list_image_group(ListImageGroupRequest(name=custom.rsplit("/", 1)[1]))
    assert groups.total == 1 and groups.data[0].version_count == 1

    nb = wait(
        client,
        client.create_notebook(
            CreateNotebookRequest(
                body=NotebookCreateRequest(
                    name="from-registered",
                    image_id=registered.id,
                    flavor="modelarts.vm.cpu.2u",
                    volume=VolumeMountRequest(category="EVS", ownership="MANAGED"),
                )
            )
        ).id,
        "RUNNING",
    )
    assert run(nb, "6*7") == "42"

    # Forced: the content goes from the engine too, once no instance uses it any more.
    deleted = client.delete_image(DeleteImageRequest(id=registered.id, body=DeleteImageRequestBody(is_force=True)))
    assert deleted.status == "DELETED"
    from huaweicloudsdkmodelarts.v1 import DeleteNotebookRequest

    client.delete_notebook(DeleteNotebookRequest(id=nb.id))
    deadline = time.monotonic() + 60
    while engine.images.list(custom) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engine.images.list(custom) == []
    engine.images.remove("registry.example.com/team/no-jupyter:1")
