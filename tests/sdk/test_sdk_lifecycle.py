"""Create, show, update, delete, start, stop and the lease, through the official SDK."""

from __future__ import annotations

import uuid

from huaweicloudsdkmodelarts.v1 import (
    DeleteNotebookRequest,
    LeaseReq,
    NotebookUpdateRequest,
    RenewLeaseRequest,
    ShowLeaseRequest,
    ShowNotebookRequest,
    StartNotebookRequest,
    StopNotebookRequest,
    UpdateNotebookRequest,
)

from .conftest import (
    DEFAULT_FLAVOR,
    DEFAULT_IMAGE,
    create_notebook,
    expect_error,
    next_signing_second,
    now_ms,
    stop_and_wait,
    wait_gone,
    wait_status,
)

HOUR = 3_600_000
SLACK = 3_000  # ms of clock/transport slack allowed in lease arithmetic


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_create_answers_creating_then_runs_with_typed_fields(alice, image_ids):
    c = alice.client
    before = now_ms()
    nb = create_notebook(c, image_ids[DEFAULT_IMAGE], _name("typed"), wait=False, description="typed check")
    after = now_ms()
    assert nb.status == "CREATING"
    assert uuid.UUID(nb.id)
    assert nb.flavor == DEFAULT_FLAVOR and nb.feature == "NOTEBOOK" and nb.workspace_id == "0"
    assert nb.description == "typed check"
    assert nb.image.id == image_ids[DEFAULT_IMAGE] and nb.image.name == DEFAULT_IMAGE
    assert nb.image.type == "BUILD_IN" and nb.image.status == "ACTIVE"
    assert nb.user_id == alice.user_id and nb.user.id == alice.user_id and nb.user.name == alice.name
    assert nb.user.domain.id and nb.user.domain.name
    assert isinstance(nb.token, str) and nb.token
    assert nb.is_need_credentials is True
    # the lease: bool and int really are bool and int after the SDK's deserialisation
    assert nb.lease.enable is True
    assert type(nb.lease.duration) is int and nb.lease.duration == HOUR
    assert nb.lease.type == "TIMING"
    assert before - SLACK <= nb.lease.create_at <= after + SLACK
    assert nb.lease.update_at == nb.lease.create_at
    # four progress steps, numbered 1..4 as ints
    steps = nb.action_progress
    assert [s.step for s in steps] == [1, 2, 3, 4]
    assert all(type(s.step) is int for s in steps)
    assert all(s.status in ("WAITING", "PROCESSING") for s in steps)
    assert all(isinstance(s.description, str) and s.description for s in steps)
    assert nb.volume.category == "EVS" and nb.volume.ownership == "MANAGED"
    assert type(nb.volume.capacity) is int and nb.volume.capacity == 5
    assert nb.volume.mount_path == "/home/ma-user/work/"
    assert nb.data_volumes == [] and nb.tags == []

    running = wait_status(c, nb.id, "RUNNING", "CREATE_FAILED")
    assert running.status == "RUNNING"
    assert [s.status for s in running.action_progress] == ["COMPLETED"] * 4
    assert running.lease.create_at == nb.lease.create_at and running.lease.duration == HOUR
    assert running.billing_items == ["COMPUTE", "STORAGE"]
    assert running.ip == "127.0.0.1"
    assert [e.service for e in running.endpoints] == ["NOTEBOOK"]
    assert running.token == nb.token


def test_show_returns_the_instance_and_hides_it_from_others(server, alice, image_ids):
    c = alice.client
    nb = create_notebook(c, image_ids[DEFAULT_IMAGE], _name("show"))
    shown = c.show_notebook(ShowNotebookRequest(id=nb.id))
    assert shown.id == nb.id and shown.name == nb.name and shown.status == "RUNNING"
    assert shown.flavor == DEFAULT_FLAVOR and shown.image.id == image_ids[DEFAULT_IMAGE]
    assert nb.id in shown.url
    # another non-admin user of the same project cannot see it (A5: 6309, not 403)
    bob = server.create_user("bob")
    expect_error(lambda: bob.client.show_notebook(ShowNotebookRequest(id=nb.id)), 400, "ModelArts.6309")
    expect_error(lambda: bob.client.stop_notebook(StopNotebookRequest(id=nb.id)), 400, "ModelArts.6309")
    assert c.show_notebook(ShowNotebookRequest(id=nb.id)).status == "RUNNING"


def test_update_image_refused_while_running_allowed_when_stopped(alice, image_ids):
    c = alice.client
    nb = create_notebook(c, image_ids[DEFAULT_IMAGE], _name("upd"))
    scipy = image_ids["notebook-scipy"]
    exc = expect_error(
        lambda: c.update_notebook(UpdateNotebookRequest(id=nb.id, body=NotebookUpdateRequest(image_id=scipy))),
        400,
        "ModelArts.6347",
    )
    assert "RUNNING" in exc.error_msg and "image_id" in exc.error_msg
    assert c.show_notebook(ShowNotebookRequest(id=nb.id)).image.id == image_ids[DEFAULT_IMAGE]

    # description is an "any stable state" field
    renamed = c.update_notebook(UpdateNotebookRequest(id=nb.id, body=NotebookUpdateRequest(description="edited")))
    assert renamed.description == "edited" and renamed.status == "RUNNING"

    stop_and_wait(c, nb.id)
    next_signing_second()  # the same update as the refused one above, made again
    updated = c.update_notebook(UpdateNotebookRequest(id=nb.id, body=NotebookUpdateRequest(image_id=scipy)))
    assert updated.status == "STOPPED"
    assert updated.image.id == scipy and updated.image.name == "notebook-scipy"
    shown = c.show_notebook(ShowNotebookRequest(id=nb.id))
    assert shown.image.id == scipy and shown.description == "edited"
    # an unknown image is refused
    expect_error(
        lambda: c.update_notebook(
            UpdateNotebookRequest(id=nb.id, body=NotebookUpdateRequest(image_id=str(uuid.uuid4())))
        ),
        400,
        "ModelArts.6797",
    )


def test_delete_answers_deleting_then_the_instance_is_gone(alice, image_ids):
    c = alice.client
    nb = create_notebook(c, image_ids[DEFAULT_IMAGE], _name("del"))
    deleted = c.delete_notebook(DeleteNotebookRequest(id=nb.id))
    assert deleted.id == nb.id and deleted.status == "DELETING"
    gone = wait_gone(c, nb.id)
    assert gone.status_code == 400 and gone.error_code == "ModelArts.6309" and gone.request_id
    next_signing_second()
    expect_error(lambda: c.delete_notebook(DeleteNotebookRequest(id=nb.id)), 400, "ModelArts.6309")
    expect_error(lambda: c.show_lease(ShowLeaseRequest(id=nb.id)), 400, "ModelArts.6309")


def test_delete_while_creating_is_refused(alice, image_ids):
    c = alice.client
    nb = create_notebook(c, image_ids[DEFAULT_IMAGE], _name("busy"), wait=False)
    assert nb.status == "CREATING"
    expect_error(lambda: c.delete_notebook(DeleteNotebookRequest(id=nb.id)), 400, "ModelArts.6357")
    expect_error(lambda: c.stop_notebook(StopNotebookRequest(id=nb.id)), 400, "ModelArts.6357")
    wait_status(c, nb.id, "RUNNING")


def test_start_stop_and_wrong_state_errors(alice, image_ids):
    c = alice.client
    nb = create_notebook(c, image_ids[DEFAULT_IMAGE], _name("ss"))
    assert nb.status == "RUNNING"
    expect_error(lambda: c.start_notebook(StartNotebookRequest(id=nb.id)), 400, "ModelArts.6305")

    stopping = c.stop_notebook(StopNotebookRequest(id=nb.id))
    assert stopping.status == "STOPPING" and stopping.action_progress == []
    stopped = wait_status(c, nb.id, "STOPPED")
    assert stopped.billing_items == ["STORAGE"]
    next_signing_second()
    expect_error(lambda: c.stop_notebook(StopNotebookRequest(id=nb.id)), 400, "ModelArts.6357")
    expect_error(
        lambda: c.renew_lease(RenewLeaseRequest(id=nb.id, body=LeaseReq(duration=HOUR))), 400, "ModelArts.6327"
    )
    # the lease can still be read while stopped
    assert c.show_lease(ShowLeaseRequest(id=nb.id)).create_at == nb.lease.create_at

    old_token = stopped.token
    starting = c.start_notebook(StartNotebookRequest(id=nb.id))
    assert starting.status == "STARTING"
    assert [s.step for s in starting.action_progress] == [1, 2, 3, 4]
    assert starting.token != old_token
    next_signing_second()
    expect_error(lambda: c.start_notebook(StartNotebookRequest(id=nb.id)), 400, "ModelArts.6306", "ModelArts.6305")
    running = wait_status(c, nb.id, "RUNNING")
    assert running.token == starting.token


def test_show_and_renew_lease_follow_the_arithmetic(alice, image_ids):
    c = alice.client
    nb = create_notebook(c, image_ids[DEFAULT_IMAGE], _name("lease"))
    create_at = nb.lease.create_at

    lease = c.show_lease(ShowLeaseRequest(id=nb.id))
    assert (lease.create_at, lease.duration, lease.enable, lease.type) == (create_at, HOUR, True, "TIMING")
    assert type(lease.duration) is int and lease.enable is True

    # body LeaseReq: 2 h from now
    before = now_ms()
    renewed = c.renew_lease(RenewLeaseRequest(id=nb.id, body=LeaseReq(duration=2 * HOUR, type="TIMING")))
    after = now_ms()
    assert renewed.create_at == create_at and renewed.enable is True and renewed.type == "TIMING"
    assert before - create_at + 2 * HOUR - SLACK <= renewed.duration <= after - create_at + 2 * HOUR + SLACK
    assert before - SLACK <= renewed.update_at <= after + SLACK
    # duration is the stop time measured from create_at: update_at + d exactly
    assert renewed.duration == renewed.update_at - create_at + 2 * HOUR
    shown = c.show_lease(ShowLeaseRequest(id=nb.id))
    assert (shown.duration, shown.update_at, shown.enable) == (renewed.duration, renewed.update_at, True)

    # query duration wins over the body
    both = c.renew_lease(RenewLeaseRequest(id=nb.id, duration=3 * HOUR, body=LeaseReq(duration=2 * HOUR)))
    assert both.duration == both.update_at - create_at + 3 * HOUR and both.type == "TIMING"
    assert both.update_at >= renewed.update_at

    # neither: the default hour
    plain = c.renew_lease(RenewLeaseRequest(id=nb.id))
    assert plain.duration == plain.update_at - create_at + HOUR and plain.enable is True
    assert c.show_notebook(ShowNotebookRequest(id=nb.id)).lease.duration == plain.duration


def test_lease_duration_out_of_range_is_6349(alice, image_ids):
    c = alice.client
    nb = create_notebook(c, image_ids[DEFAULT_IMAGE], _name("range"))
    for bad in (100, HOUR - 1, 259_200_001):
        expect_error(
            lambda bad=bad: c.renew_lease(RenewLeaseRequest(id=nb.id, body=LeaseReq(duration=bad))),
            400,
            "ModelArts.6349",
        )
        expect_error(lambda bad=bad: c.renew_lease(RenewLeaseRequest(id=nb.id, duration=bad)), 400, "ModelArts.6349")
    top = c.renew_lease(RenewLeaseRequest(id=nb.id, duration=259_200_000))
    assert top.duration == top.update_at - nb.lease.create_at + 259_200_000
    stop_and_wait(c, nb.id)
    expect_error(lambda: c.start_notebook(StartNotebookRequest(id=nb.id, duration=5)), 400, "ModelArts.6349")
    assert c.show_notebook(ShowNotebookRequest(id=nb.id)).status == "STOPPED"


def test_start_with_duration_minus_one_disables_auto_stop(alice, image_ids):
    c = alice.client
    nb = create_notebook(c, image_ids[DEFAULT_IMAGE], _name("nolease"))
    create_at = nb.lease.create_at
    stop_and_wait(c, nb.id)

    starting = c.start_notebook(StartNotebookRequest(id=nb.id, duration=-1))
    assert starting.status == "STARTING" and starting.lease.enable is False
    wait_status(c, nb.id, "RUNNING")
    lease = c.show_lease(ShowLeaseRequest(id=nb.id))
    assert lease.enable is False and lease.create_at == create_at

    # a later start with a running time turns auto-stop on again, measured from create_at
    next_signing_second()
    stop_and_wait(c, nb.id)
    before = now_ms()
    again = c.start_notebook(StartNotebookRequest(id=nb.id, duration=2 * HOUR, type="TIMING"))
    after = now_ms()
    assert again.lease.enable is True and again.lease.type == "TIMING"
    assert before - create_at + 2 * HOUR - SLACK <= again.lease.duration <= after - create_at + 2 * HOUR + SLACK
    assert again.lease.duration == again.lease.update_at - create_at + 2 * HOUR


def test_create_lease_options(alice, image_ids):
    c = alice.client
    image = image_ids[DEFAULT_IMAGE]
    two_hours = create_notebook(
        c, image, _name("lease2h"), wait=False, lease=LeaseReq(duration=2 * HOUR, type="timing")
    )
    assert (two_hours.lease.duration, two_hours.lease.type, two_hours.lease.enable) == (2 * HOUR, "TIMING", True)
    # top-level duration overrides lease and forces TIMING
    top = create_notebook(
        c, image, _name("leasetop"), wait=False, duration=3 * HOUR, lease=LeaseReq(duration=2 * HOUR, type="IDLE")
    )
    assert (top.lease.duration, top.lease.type) == (3 * HOUR, "TIMING")
    off = create_notebook(c, image, _name("leaseoff"), wait=False, duration=-1)
    assert off.lease.enable is False
    expect_error(lambda: create_notebook(c, image, _name("leasebad"), wait=False, duration=5), 400, "ModelArts.6349")
    for nb in (two_hours, top, off):
        wait_status(c, nb.id, "RUNNING")
    assert c.show_lease(ShowLeaseRequest(id=off.id)).enable is False
