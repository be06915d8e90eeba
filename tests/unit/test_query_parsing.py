"""``parse_notebook_query``: every list parameter of notebooks.md §1.2, its default, what it accepts and
what it refuses (README §8, §9 A1-A7, A19), and the ``Page.envelope`` arithmetic.

The expectations are written from the spec, not from the implementation.
"""

from __future__ import annotations

import math
import uuid

import pytest

from nbfleet.domain.errors import InvalidParameter, ModelArtsError, UnsupportedSortKey
from nbfleet.domain.model import Billing, Feature, Status
from nbfleet.domain.query import NotebookQuery, Page, TagFilter, parse_notebook_query

PROJECT = "p" * 32
CALLER = "c" * 32
OTHER = "0123456789abcdef0123456789abcdef"


def parse(_admin: bool = False, _all: bool = False, _strict: bool = False, **params) -> NotebookQuery:
    """Parse query parameters given as ``name=value`` (or ``name=[v1, v2]`` for repeats)."""
    raw = {k: (v if isinstance(v, list) else [v]) for k, v in params.items()}
    return parse_notebook_query(
        raw, project_id=PROJECT, caller_id=CALLER, caller_is_admin=_admin, all_view=_all, strict_limit=_strict
    )


def refused(code: str = "ModelArts.0104", **kw) -> ModelArtsError:
    with pytest.raises(ModelArtsError) as info:
        parse(**kw)
    assert info.value.code == code, info.value
    assert info.value.http_status == 400
    return info.value


# --- no parameters at all -----------------------------------------------------------------------


def test_defaults_of_an_empty_query():
    q = parse()
    assert q.project_id == PROJECT
    assert q.owner_id == CALLER
    assert q.feature is Feature.NOTEBOOK
    assert q.workspace_id == "0"
    assert (q.limit, q.offset) == (10, 0)
    assert q.sort == ("create_at",) and q.descending is True
    for unset in (
        "status",
        "pool_id",
        "image_id",
        "id",
        "ip",
        "billing",
        "name",
        "pool_name",
        "flavor",
        "swr_path",
        "description",
        "username",
    ):
        assert getattr(q, unset) is None, unset
    assert q.tags == ()
    assert q.fuzzy_filters() == {}


def test_error_classes_carry_the_catalogue_codes():
    assert InvalidParameter().code == "ModelArts.0104" and InvalidParameter().http_status == 400
    assert UnsupportedSortKey().code == "ModelArts.6303" and UnsupportedSortKey().http_status == 400


# --- feature (A7) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("NOTEBOOK", Feature.NOTEBOOK),
        ("DEFAULT", Feature.DEFAULT),
        ("default", Feature.DEFAULT),
        ("Notebook", Feature.NOTEBOOK),
    ],
)
def test_feature_values(raw, expected):
    assert parse(feature=raw).feature is expected


@pytest.mark.parametrize("raw", ["FREE", "NOTEBOOKS", "ALL", "DEFAULT,NOTEBOOK", "1"])
def test_feature_invalid(raw):
    refused(feature=raw)


# --- limit (A3) -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,expected", [("1", 1), ("7", 7), ("10", 10), ("20", 20), ("49", 49), ("50", 50)])
def test_limit_accepts_1_to_50(raw, expected):
    assert parse(limit=raw).limit == expected


@pytest.mark.parametrize(
    "raw", ["0", "-1", "51", "100", "99999999999999999999", "ten", "1.5", "10a", "0x10", "1_0", " 10", "10 ", "1e1"]
)
def test_limit_out_of_range_or_not_an_integer(raw):
    refused(limit=raw)


@pytest.mark.parametrize("raw", ["10", "20", "50"])
def test_strict_limit_accepts_the_documented_set(raw):
    assert parse(_strict=True, limit=raw).limit == int(raw)


def test_strict_limit_keeps_the_default():
    assert parse(_strict=True).limit == 10


@pytest.mark.parametrize("raw", ["1", "5", "11", "30", "49", "0", "51", "100"])
def test_strict_limit_refuses_everything_else(raw):
    refused(_strict=True, limit=raw)


# --- offset (A1) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,expected", [("0", 0), ("1", 1), ("9", 9), ("10", 10), ("123456", 123456)])
def test_offset_is_a_record_offset(raw, expected):
    assert parse(offset=raw).offset == expected


@pytest.mark.parametrize("raw", ["-1", "-10", "x", "1.0", "2_0", "\u0663"])
def test_offset_invalid(raw):
    refused(offset=raw)


# --- name -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["a", "notebook_5ee4bf0e", "My-Notebook_01", "x" * 128, "_", "-", "中文名"])
def test_name_accepted(raw):
    q = parse(name=raw)
    assert q.name == raw
    assert q.fuzzy_filters() == {"name": raw}


@pytest.mark.parametrize("raw", ["x" * 129, "a b", "a%b", "a.b", "a/b", "a*", "nb'", "a\n", "abc\n", "<nb>"])
def test_name_invalid(raw):
    refused(name=raw)


# --- status ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(Status))
def test_every_status_is_accepted(status):
    assert parse(status=status.value).status is status
    assert parse(status=status.value.lower()).status is status


def test_status_deleted_is_a_valid_filter():
    assert parse(status="DELETED").status is Status.DELETED


@pytest.mark.parametrize("raw", ["RUN", "STOPED", "ACTIVE", "RUNNING,STOPPED", "0"])
def test_status_invalid(raw):
    refused(status=raw)


# --- pool_id / pool_name --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["pool", "pool-1a2b", "a" + "b" * 62 + "c", "a-0z"])
def test_pool_id_accepted(raw):
    assert parse(pool_id=raw).pool_id == raw


@pytest.mark.parametrize("raw", ["abc", "1pool", "-pool", "pool-", "Pool", "po_ol", "a" * 65, "pool\n"])
def test_pool_id_invalid(raw):
    refused(pool_id=raw)


@pytest.mark.parametrize("raw", ["p", "My-Pool-01", "x" * 64])
def test_pool_name_accepted(raw):
    q = parse(pool_name=raw)
    assert q.pool_name == raw and q.fuzzy_filters() == {"pool_name": raw}


@pytest.mark.parametrize("raw", ["x" * 65, "my_pool", "my pool", "pool.1"])
def test_pool_name_invalid(raw):
    refused(pool_name=raw)


# --- owner and scope (A5) ---------------------------------------------------------------------------


def test_non_admin_always_sees_own_rows_and_owner_is_ignored():
    assert parse().owner_id == CALLER
    assert parse(owner=OTHER).owner_id == CALLER
    assert parse(_all=True).owner_id == CALLER
    assert parse(_all=True, owner=OTHER).owner_id == CALLER


def test_admin_notebooks_shows_own_unless_owner_given():
    assert parse(_admin=True).owner_id == CALLER
    assert parse(_admin=True, owner=OTHER).owner_id == OTHER


def test_admin_all_shows_everyone_unless_owner_given():
    assert parse(_admin=True, _all=True).owner_id is None
    assert parse(_admin=True, _all=True, owner=OTHER).owner_id == OTHER
    assert parse(_admin=True, _all=True, owner=CALLER).owner_id == CALLER


@pytest.mark.parametrize(
    "raw",
    [
        "a" * 31,
        "a" * 33,
        "A" * 32,
        "0123456789abcdef0123456789abcde-",
        "0123456789abcdef-0123456789abcdef",
        OTHER + "\n",
    ],
)
@pytest.mark.parametrize("all_view", [False, True])
def test_admin_owner_must_be_32_lower_case_alphanumerics(raw, all_view):
    refused(_admin=True, _all=all_view, owner=raw)


# --- workspace_id / workspaceId (A4) -------------------------------------------------------------

WS = "0123456789abcdef0123456789abcdef"
WS2 = "fedcba9876543210fedcba9876543210"


def test_workspace_default_is_zero():
    assert parse().workspace_id == "0"


def test_workspace_both_spellings():
    assert parse(workspace_id=WS).workspace_id == WS
    assert parse(workspaceId=WS).workspace_id == WS
    assert parse(workspaceId="0").workspace_id == "0"


def test_workspace_id_wins_over_workspaceId():
    assert parse(workspace_id=WS, workspaceId=WS2).workspace_id == WS
    assert parse(workspace_id="0", workspaceId=WS2).workspace_id == "0"
    assert parse(workspace_id=WS2, workspaceId="0").workspace_id == WS2


@pytest.mark.parametrize("name", ["workspace_id", "workspaceId"])
@pytest.mark.parametrize("raw", ["1", "00", "abc", WS.upper(), WS + "0", WS[:-1], "default", WS + "\n"])
def test_workspace_invalid(name, raw):
    refused(**{name: raw})


# --- flavor ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["modelarts.vm.cpu.2u", "cpu", "GPU_t4-x", "x" * 256])
def test_flavor_accepted(raw):
    q = parse(flavor=raw)
    assert q.flavor == raw and q.fuzzy_filters() == {"flavor": raw}


@pytest.mark.parametrize("raw", ["x" * 257, "cpu 2u", "cpu/2u", "cpu:2u", "cpu%"])
def test_flavor_invalid(raw):
    refused(flavor=raw)


# --- image_id / id ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["image_id", "id"])
def test_uuid_parameters_accept_uuids(name):
    value = str(uuid.uuid4())
    assert getattr(parse(**{name: value}), name) == value
    assert getattr(parse(**{name: value.upper()}), name) == value  # normalised to the stored lower case


@pytest.mark.parametrize("name", ["image_id", "id"])
@pytest.mark.parametrize(
    "raw",
    [
        "not-a-uuid",
        "1234",
        "f9937afa-ca78-45b6-bc12-7ecf42553c4",
        "f9937afa-ca78-45b6-bc12-7ecf42553c48x",
        "g9937afa-ca78-45b6-bc12-7ecf42553c48",
    ],
)
def test_uuid_parameters_refuse_the_rest(name, raw):
    refused(**{name: raw})


# --- billing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,expected",
    [("COMPUTE", Billing.COMPUTE), ("STORAGE", Billing.STORAGE), ("ALL", Billing.ALL), ("storage", Billing.STORAGE)],
)
def test_billing_values(raw, expected):
    assert parse(billing=raw).billing is expected


@pytest.mark.parametrize("raw", ["NONE", "COMPUTING", "EVS", "COMPUTE,STORAGE"])
def test_billing_invalid(raw):
    refused(billing=raw)


# --- tags -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("k1|v1", (TagFilter("k1", "v1"),)),
        ("k1|v1,k2|v2", (TagFilter("k1", "v1"), TagFilter("k2", "v2"))),
        ("env", (TagFilter("env", None),)),
        ("env,team|ml", (TagFilter("env", None), TagFilter("team", "ml"))),
        ("键|值", (TagFilter("键", "值"),)),
        ("a b|c.d:e/f=g+h-i@j_k", (TagFilter("a b", "c.d:e/f=g+h-i@j_k"),)),
    ],
)
def test_tags_grammar(raw, expected):
    assert parse(tags=raw).tags == expected


@pytest.mark.parametrize(
    "raw",
    [
        ",k|v",
        "|k",
        "|",
        ",",
        "k|v,",
        "k|v,,k2|v2",
        "k||v",
        "k|v|w",
        "k|v,|v2",
        "k|v#",
        "k|<v>",
        "k;v",
        "k|v&w",
        "k|v*",
        'k|v"',
        "k|v\n",
    ],
)
def test_tags_bad_forms(raw):
    refused(tags=raw)


# --- swr_path ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["swr.example.com/atelier/notebook2.0-mul-kernel-cpu-cp36:3.3.2-release_v1", "atelier", "x" * 2048]
)
def test_swr_path_accepted(raw):
    q = parse(swr_path=raw)
    assert q.swr_path == raw and q.fuzzy_filters() == {"swr_path": raw}


@pytest.mark.parametrize("raw", ["x" * 2049, "a b", "a?b", "a@b", "a#b", "a\n"])
def test_swr_path_invalid(raw):
    refused(swr_path=raw)


# --- description ------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["api-test", "x" * 512, "with spaces & symbols!", "引用"])
def test_description_accepted(raw):
    q = parse(description=raw)
    assert q.description == raw and q.fuzzy_filters() == {"description": raw}


@pytest.mark.parametrize("raw", ["x" * 513, "<b>", "a<b", "a>b"])
def test_description_invalid(raw):
    refused(description=raw)


# --- ip ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["10.0.0.1", "192.168.1.254", "0.0.0.0", "255.255.255.255"])
def test_ip_accepted(raw):
    assert parse(ip=raw).ip == raw


@pytest.mark.parametrize(
    "raw", ["256.1.1.1", "10.0.0", "10.0.0.1.2", "::1", "fe80::1", "abc", "10.0.0.01", "10.0.0.1/24"]
)
def test_ip_invalid(raw):
    refused(ip=raw)


# --- username ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["admin", "first.last_2-x", "U" * 256])
def test_username_accepted(raw):
    q = parse(username=raw)
    assert q.username == raw and q.fuzzy_filters() == {"user_name": raw}


@pytest.mark.parametrize("raw", ["U" * 257, "a b", "a@b", "a/b", "a%"])
def test_username_invalid(raw):
    refused(username=raw)


def test_all_fuzzy_filters_together():
    q = parse(name="n", pool_name="p", flavor="f", swr_path="s", description="d", username="u")
    assert q.fuzzy_filters() == {
        "name": "n",
        "pool_name": "p",
        "flavor": "f",
        "swr_path": "s",
        "description": "d",
        "user_name": "u",
    }


# --- sort_key (A19) / sort_dir ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("create_at", ("create_at",)),
        ("update_at", ("update_at",)),
        ("name", ("name",)),
        ("status", ("status",)),
        ("flavor", ("flavor",)),
        ("id", ("id",)),
        ("feature", ("feature",)),
        ("createTime", ("create_at",)),
        ("updateTime", ("update_at",)),
        ("name,status", ("name", "status")),
        ("status,name,flavor", ("status", "name", "flavor")),
        ("feature,updateTime,id", ("feature", "update_at", "id")),
        ("create_at,createTime", ("create_at",)),
    ],
)
def test_sort_key_vocabulary(raw, expected):
    assert parse(sort_key=raw).sort == expected


@pytest.mark.parametrize(
    "raw", ["user_id", "description", "owner", "flavour", "name,bogus", "size", "tag", "vcpus", "name;id"]
)
def test_sort_key_unsupported_is_6303(raw):
    assert isinstance(refused("ModelArts.6303", sort_key=raw), UnsupportedSortKey)


def test_sort_key_length_limit_is_128():
    keys = ["create_at", "update_at", "name", "status", "flavor", "id", "feature"]
    text = ""
    i = 0
    while len(text) < 128:
        text = (text + "," if text else "") + keys[i % len(keys)]
        i += 1
    exactly = text[:128]
    while exactly.endswith(",") or exactly.split(",")[-1] not in keys:  # keep it a valid list
        exactly = exactly[:-1]
    padded = exactly + ",id" * ((128 - len(exactly)) // 3)
    assert len(padded) <= 128
    assert parse(sort_key=padded).sort
    too_long = padded + ",name" * 2
    assert len(too_long) > 128
    refused(sort_key=too_long)  # too long -> 0104, even though every key is valid
    refused(sort_key="x" * 129)  # length is checked before the vocabulary


@pytest.mark.parametrize(
    "raw,descending", [("ASC", False), ("asc", False), ("Asc", False), ("DESC", True), ("desc", True), ("dEsC", True)]
)
def test_sort_dir_any_case(raw, descending):
    assert parse(sort_dir=raw).descending is descending
    assert parse(sort_dir=raw, sort_key="name").descending is descending


@pytest.mark.parametrize("raw", ["UP", "ascending", "DESCENDING", "1", "ASC,DESC"])
def test_sort_dir_invalid(raw):
    refused(sort_dir=raw)


# --- repeated parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,values",
    [
        ("limit", ["10", "20"]),
        ("limit", ["10", "10"]),
        ("offset", ["0", "10"]),
        ("name", ["a", "b"]),
        ("status", ["RUNNING", "STOPPED"]),
        ("feature", ["NOTEBOOK", "DEFAULT"]),
        ("sort_key", ["name", "id"]),
        ("sort_dir", ["ASC", "DESC"]),
        ("workspace_id", ["0", WS]),
        ("workspaceId", ["0", WS]),
        ("tags", ["a|b", "c|d"]),
        ("id", [str(uuid.uuid4()), str(uuid.uuid4())]),
        ("billing", ["ALL", "ALL"]),
        ("description", ["a", "b"]),
        ("username", ["a", "b"]),
        ("ip", ["10.0.0.1", "10.0.0.2"]),
    ],
)
def test_repeated_parameter_is_refused(name, values):
    refused(**{name: values})


def test_repeated_owner_is_refused_for_admins():
    refused(_admin=True, owner=[OTHER, OTHER])


# --- Page.envelope (README §8, A2) ------------------------------------------------------------------


def test_envelope_of_an_empty_result():
    assert Page([], 0, 0, 10).envelope() == {"current": 0, "data": [], "pages": 0, "size": 10, "total": 0}
    assert Page([], 0, 30, 10).envelope() == {"current": 3, "data": [], "pages": 0, "size": 10, "total": 0}


def test_envelope_of_the_seed_example():
    items = [{"id": "a"}, {"id": "b"}]
    assert Page(items, 2, 0, 10).envelope() == {"current": 0, "data": items, "pages": 1, "size": 10, "total": 2}


@pytest.mark.parametrize(
    "total,size,pages",
    [
        (1, 10, 1),
        (10, 10, 1),
        (11, 10, 2),
        (20, 10, 2),
        (21, 10, 3),
        (50, 50, 1),
        (51, 50, 2),
        (7, 1, 7),
        (0, 1, 0),
        (100, 3, 34),
    ],
)
def test_envelope_pages_is_ceiling(total, size, pages):
    env = Page([], total, 0, size).envelope()
    assert env["pages"] == pages == math.ceil(total / size)
    assert env["size"] == size and env["total"] == total


@pytest.mark.parametrize(
    "offset,size,current",
    [
        (0, 10, 0),
        (9, 10, 0),
        (10, 10, 1),
        (19, 10, 1),
        (25, 10, 2),
        (5, 1, 5),
        (49, 50, 0),
        (50, 50, 1),
        (1000, 20, 50),
    ],
)
def test_envelope_current_is_zero_based_record_offset_over_size(offset, size, current):
    assert Page([], 1000, offset, size).envelope()["current"] == current
    assert Page([], 1000, offset, size).envelope(one_based=True)["current"] == current + 1


def test_envelope_for_every_small_combination():
    for total in range(60):
        for size in range(1, 51):
            for offset in (0, 1, size - 1, size, 2 * size + 1, total):
                env = Page(["x"], total, offset, size).envelope()
                assert env == {
                    "current": offset // size,
                    "data": ["x"],
                    "pages": math.ceil(total / size),
                    "size": size,
                    "total": total,
                }
