"""One home for each rule: ids, placements in their column, leases from rows and from the wire, the statuses
in flight that the store indexes, and the query-string parser the routes share with the signature."""

from __future__ import annotations

import re

import pytest

from nbfleet.domain.ids import is_hex_id, is_instance_id, is_uuid, new_id
from nbfleet.domain.instances import Placement
from nbfleet.domain.lease import Lease, lease_from_wire, lease_of
from nbfleet.domain.model import TRANSITIONAL, LeaseType
from nbfleet.runtime import base
from nbfleet.services.notebook_view import lease_json
from nbfleet.store.tables import IN_FLIGHT, IN_FLIGHT_SQL

ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    "text, ok",
    [
        (ID, True),
        (ID.upper(), True),
        (ID + "\n", False),
        (" " + ID, False),
        (ID.replace("-", ""), False),
        ("{" + ID + "}", False),
        ("", False),
        ("x" * 36, False),
        (None, False),
        ("-", False),
    ],
)
def test_instance_ids(text, ok):
    assert is_instance_id(text) is ok
    assert is_uuid(text) is ok


def test_hex_ids():
    assert is_hex_id(new_id())
    assert not is_hex_id(new_id().upper())
    assert not is_hex_id(new_id() + "\n")
    assert not is_hex_id(ID)


def test_placement_column_round_trip():
    assert Placement.from_column(None) is None
    assert Placement.from_column("") is None
    placement = Placement(host="127.0.0.1", port=8888, pid=7, details={"runtime": "x"}, socket="/run/s")
    assert Placement.from_column(placement.to_column()) == placement
    assert Placement.from_column(b'{"socket": "/run/s"}') == Placement(socket="/run/s")


def test_runtime_base_still_exports_the_moved_values():
    from nbfleet.domain import instances

    for name in ("FlavorLimits", "ImageRef", "InstanceSpec", "MountSpec", "Placement"):
        assert getattr(base, name) is getattr(instances, name)


ROW = {
    "create_at": 1000,
    "lease_duration": 3_600_000,
    "lease_enable": 1,
    "lease_type": "TIMING",
    "lease_update_at": 2000,
}


def test_lease_from_a_row_and_from_its_wire_form_agree():
    expected = Lease(1000, 3_600_000, True, LeaseType.TIMING, 2000)
    assert lease_of(ROW) == expected
    assert lease_from_wire(lease_json(ROW)) == expected


def test_in_flight_index_statuses_are_the_transitional_ones():
    """The partial index (tables.py, migrations 0004/0007) must hold exactly the statuses the reconciler
    claims; a status added to TRANSITIONAL needs a migration that adds it to the index too."""
    assert set(IN_FLIGHT) == {s.value for s in TRANSITIONAL}
    in_sql = set(re.findall(r"'([A-Z_]+)'", str(IN_FLIGHT_SQL)))
    assert in_sql == set(IN_FLIGHT)


def test_routes_and_signature_parse_query_strings_alike():
    from starlette.requests import Request

    from nbfleet.api.http import query_params
    from nbfleet.auth.signature import split_query

    raw = "a=1&b=x%20y&a=2&c=+&&d"
    request = Request({"type": "http", "query_string": raw.encode()})
    params = query_params(request)
    assert params == {"a": ["1", "2"], "b": ["x y"], "c": ["+"], "d": [""]}
    assert sorted((k, v) for k, vs in params.items() for v in vs) == sorted(split_query(raw))
