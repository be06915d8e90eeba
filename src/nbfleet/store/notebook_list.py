"""The notebook list query in SQL: scope -> filters -> count -> sort -> offset/limit.

Three things keep it fast at a million rows (see docs/benchmarks.md):
- ``total`` comes from ``notebook_counts`` (kept by triggers) whenever the filters are only scope,
  owner and status; otherwise from ``COUNT(*)`` over an index;
- case-insensitive substring filters on name and description use a trigram index (SQLite FTS5,
  PostgreSQL pg_trgm) instead of scanning; the user name filter first finds the matching users in
  their own (small) trigram index, then lists their instances like an owner filter. On SQLite the index
  is asked only for a term's rarest trigrams (their document counts are cached) and the candidates are
  rechecked with LIKE; a term so common that its candidates would cost more to look up one by one than
  reading the query's whole scope is matched by LIKE over that scope instead (``plan_fuzzy``);
- the page is found by walking an index that matches the sort order (row keys only), and only the
  rows of the page are read.
Statements are built once per query *shape* and reused with new parameters: building the SQLAlchemy
expression costs more than running it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Integer,
    LargeBinary,
    String,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from ..domain.model import HOLDS_COMPUTE, Billing
from ..domain.query import NotebookQuery
from .tables import notebook_counts, notebook_tags, notebooks, users

N = notebooks.c
C = notebook_counts.c
SORT_COLUMNS = {
    "create_at": N.create_at,
    "update_at": N.update_at,
    "name": N.name,
    "status": N.status,
    "flavor": N.flavor,
    "id": N.id,
    "feature": N.feature,
}
FUZZY_COLUMNS = {
    "name": N.name,
    "pool_name": N.pool_name,
    "flavor": N.flavor,
    "swr_path": N.swr_path,
    "description": N.description,
    "user_name": N.user_name,
}
TRIGRAM_COLUMNS = ("name", "description", "user_name")  # the columns of notebooks_fts
TRIGRAM_MIN = 3  # shorter substrings cannot use trigrams
EXACT = ("pool_id", "image_id", "id", "ip")
ALL_USERS = "*"
OWNERS_BY_NAME_MAX = 500  # more users than this match a user name: filter the instances' own column instead
_COMPUTE = sorted(s.value for s in HOLDS_COMPUTE)
_cache: dict[tuple, tuple] = {}

# SQLite: how the trigram index is used (plan_fuzzy).
RARE_TRIGRAMS = 3  # of a term's trigrams, the rarest this many are looked up; LIKE rechecks the rest
# A candidate from the index is a row looked up by its rowid; a scan reads the scope's rows in order. On the
# reference machine one lookup cost as much as ~15 rows of a scan (docs/benchmarks.md, 2026-11-30).
LOOKUP_COST_IN_SCANNED_ROWS = 15
TOTAL = "_total"  # the column of the one-pass page that carries the exact total
DOC_FREQ_TTL = 600.0  # seconds a trigram's document count is trusted: it only steers the plan
_doc_freq: dict[tuple[str, str], tuple[int, float]] = {}
_doc_freq_lock = threading.Lock()
_VOCAB = "CREATE VIRTUAL TABLE IF NOT EXISTS temp.notebooks_fts_vocab USING fts5vocab(main, notebooks_fts, col)"


def like_pattern(text_: str) -> str:
    """A LIKE pattern matching ``text_`` anywhere, with ``_``, ``%`` and ``\\`` taken literally."""
    return "%" + text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _phrase(column: str, value: str) -> str:
    """An FTS5 phrase in ``column`` (quotes doubled)."""
    return f'{column} : "{value.replace(chr(34), chr(34) * 2)}"'


def _fts_query(terms: dict[str, str]) -> str:
    """An FTS5 query: every term as a quoted phrase in its column, ANDed."""
    return " AND ".join(_phrase(column, value) for column, value in terms.items())


def trigrams(value: str) -> list[str]:
    low = value.lower()
    return sorted({low[i : i + 3] for i in range(len(low) - 2)})


def _doc_counts(conn: Connection, column: str, grams: list[str]) -> dict[str, int]:
    """How many rows contain each trigram in ``column``: cached, since counting reads a trigram's whole list."""
    now = time.monotonic()
    counts: dict[str, int] = {}
    missing = []
    for gram in grams:
        cached = _doc_freq.get((column, gram))
        if cached is not None and now - cached[1] < DOC_FREQ_TTL:
            counts[gram] = cached[0]
        else:
            missing.append(gram)
    if missing:
        conn.exec_driver_sql(_VOCAB)  # per connection, a definition only: it stores nothing
        rows = conn.execute(
            text("SELECT term, doc FROM temp.notebooks_fts_vocab WHERE col = :col AND term IN :terms").bindparams(
                bindparam("terms", expanding=True)
            ),
            {"col": column, "terms": missing},
        )
        found = {str(term): int(doc) for term, doc in rows}
        with _doc_freq_lock:
            if len(_doc_freq) > 50_000:
                _doc_freq.clear()
            for gram in missing:
                counts[gram] = int(found.get(gram, 0))
                _doc_freq[(column, gram)] = (counts[gram], now)
    return counts


def plan_fuzzy(conn: Connection, q: NotebookQuery, fts: dict[str, str], like: dict[str, str], owners) -> tuple:
    """SQLite: for each trigram filter, the FTS5 expression to ask the index (an ASCII term: its rarest
    trigrams, the term itself then rechecked by LIKE, whose case folding is FTS5's for ASCII; any other
    term: the whole phrase), or, when its candidates would cost more to look up than reading the
    query's scope, LIKE alone. Returns (FTS5 expressions by column, LIKE terms by column)."""
    if not fts:
        return {}, like
    scope = _scope_rows(conn, q, owners)
    planned: dict[str, str] = {}
    like = dict(like)
    for column, value in fts.items():
        if not value.isascii():
            planned[column] = _phrase(column, value)
            continue
        grams = trigrams(value)
        counts = _doc_counts(conn, column, grams)
        rare = sorted(grams, key=lambda g: (counts[g], g))[:RARE_TRIGRAMS]
        if scope is not None and counts[rare[0]] * LOOKUP_COST_IN_SCANNED_ROWS > scope:
            like[column] = value  # cheaper to read the scope than to look the candidates up
            continue
        planned[column] = " AND ".join(_phrase(column, g) for g in rare)
        like[column] = value  # the recheck: the rare trigrams alone say only "maybe"
    return planned, like


_SCOPE_ROWS = select(func.coalesce(func.sum(C.n), 0)).where(
    C.project_id == bindparam("project_id"),
    C.workspace_id == bindparam("workspace_id"),
    C.feature == bindparam("feature"),
    C.user_id == bindparam("count_user"),
)
_SCOPE_STATUS_ROWS = _SCOPE_ROWS.where(C.status == bindparam("status"))


def _scope_rows(conn: Connection, q: NotebookQuery, owners) -> int | None:
    """How many rows the query's scope (project, workspace, feature, owner, status) holds, from the counters;
    None when the user-name filter narrowed it to a set of owners (then it is small)."""
    if owners is not None:
        return None
    params = {
        "project_id": q.project_id,
        "workspace_id": q.workspace_id,
        "feature": q.feature.value,
        "count_user": q.owner_id if q.owner_id is not None else ALL_USERS,
    }
    if q.status is None:
        return int(conn.execute(_SCOPE_ROWS, params).scalar_one())
    return int(conn.execute(_SCOPE_STATUS_ROWS, {**params, "status": q.status.value}).scalar_one())


def _split_fuzzy(q: NotebookQuery, trigram: bool, by_owner: bool) -> tuple[dict[str, str], dict[str, str]]:
    by_index, by_like = {}, {}
    for column, value in q.fuzzy_filters().items():
        if column == "user_name" and by_owner:
            continue
        if trigram and column in TRIGRAM_COLUMNS and len(value) >= TRIGRAM_MIN:
            by_index[column] = value
        else:
            by_like[column] = value
    return by_index, by_like


def _shape(q: NotebookQuery, fts: dict, like: dict, owners: list | None) -> tuple:
    return (
        q.owner_id is not None,
        owners is not None,
        q.status is not None,
        tuple(f for f in EXACT if getattr(q, f) is not None),
        q.billing,
        bool(q.tags),
        tuple(fts),
        tuple((column, value.isascii()) for column, value in like.items()),
        q.sort,
        q.descending,
    )


def _build(q: NotebookQuery, fts: dict, like: dict, owners: list | None, sqlite: bool) -> tuple:
    cond = [
        N.project_id == bindparam("project_id"),
        N.workspace_id == bindparam("workspace_id"),
        N.feature == bindparam("feature"),
    ]
    if q.owner_id is not None:
        cond.append(N.user_id == bindparam("owner_id"))
    if owners is not None:
        cond.append(N.user_id.in_(bindparam("owner_ids", expanding=True)))
    if q.status is not None:
        cond.append(N.status == bindparam("status"))
    for name in EXACT:
        if getattr(q, name) is not None:
            cond.append(N[name] == bindparam(f"x_{name}"))
    if q.billing is Billing.COMPUTE:
        cond.append(N.status.in_(_COMPUTE))
    elif q.billing is Billing.STORAGE:
        cond.append(N.volume_category.in_(["EVS", "EFS"]))
    if q.tags:
        cond.append(N.id.in_(_tagged(sqlite)))
    if fts:
        if sqlite:
            cond.append(
                N.seq.in_(
                    select(literal_column("rowid"))
                    .select_from(text("notebooks_fts"))
                    .where(text("notebooks_fts MATCH :fts_query"))
                )
            )
        else:
            for column in fts:
                cond.append(FUZZY_COLUMNS[column].ilike(bindparam(f"like_{column}"), escape="\\"))
    for column, value in like.items():
        if sqlite and value.isascii():
            cond.append(_contains_any_case(FUZZY_COLUMNS[column], bindparam(f"like_{column}")))
        else:
            cond.append(FUZZY_COLUMNS[column].ilike(bindparam(f"like_{column}"), escape="\\"))

    plain_count = select(func.count()).select_from(notebooks).where(*cond)
    countable = not (
        fts or like or q.tags or any(getattr(q, f) is not None for f in EXACT) or q.billing is Billing.STORAGE
    )
    if countable:
        count_cond = [
            C.project_id == bindparam("project_id"),
            C.workspace_id == bindparam("workspace_id"),
            C.feature == bindparam("feature"),
            C.user_id.in_(bindparam("owner_ids", expanding=True))
            if owners is not None
            else C.user_id == bindparam("count_user"),
        ]
        # Both may be given: status=FROZEN&billing=COMPUTE matches nothing, and the count must say so.
        if q.status is not None:
            count_cond.append(C.status == bindparam("status"))
        if q.billing is Billing.COMPUTE:
            count_cond.append(C.status.in_(_COMPUTE))
        total_stmt = select(func.coalesce(func.sum(C.n), 0)).where(*count_cond)
    else:
        total_stmt = plain_count

    columns = [SORT_COLUMNS[k] for k in q.sort]
    if "id" not in q.sort:
        columns.append(N.id)
    # The key walk must stay inside the index: SQLite's indexes carry the rowid (seq) for free, while
    # PostgreSQL's carry only their columns, of which ``id`` is one (else it falls back to scan + sort).
    key = N.seq if sqlite else N.id

    def page_in(descending: bool):
        order = [c.desc() if descending else c.asc() for c in columns]
        keys = (
            select(key)
            .where(*cond)
            .order_by(*order)
            .offset(bindparam("offset", type_=None))
            .limit(bindparam("limit", type_=None))
            .subquery()
        )
        return select(notebooks).join(keys, keys.c[key.name] == key).order_by(*order)

    counted = None
    if fts and sqlite:
        # The index gave few candidates (plan_fuzzy): one pass over them yields both the page and the exact
        # total (the window count is taken before OFFSET/LIMIT), instead of matching them twice.
        order = [c.desc() if q.descending else c.asc() for c in columns]
        keys = (
            select(key, func.count().over().label(TOTAL))
            .where(*cond)
            .order_by(*order)
            .offset(bindparam("offset", type_=None))
            .limit(bindparam("limit", type_=None))
            .subquery()
        )
        counted = select(notebooks, keys.c[TOTAL]).join(keys, keys.c[key.name] == key).order_by(*order)
    # The order ends in the unique id, so walking it backwards visits exactly the same rows reversed.
    return total_stmt, page_in(q.descending), page_in(not q.descending), plain_count, counted


def _contains_any_case(column, pattern):
    """SQLite, for an ASCII term: ILIKE's answer (``lower`` is nbfleet's Unicode one, store/db.py) at the cost
    of a LIKE for the ASCII rows. LIKE (built in, folding ASCII only) finding an ASCII term proves the match;
    only a value with a character beyond ASCII (more bytes than characters in UTF-8) can match without it,
    so only such values pay for ``lower``. A term beyond ASCII gets ILIKE alone: its own letters may fold
    to ASCII (KELVIN SIGN to k) or differently from LIKE's byte comparison (a final sigma)."""
    return or_(
        column.like(pattern, escape="\\"),
        and_(func.length(column) != func.length(cast(column, LargeBinary)), column.ilike(pattern, escape="\\")),
    )


def _tagged(sqlite: bool):
    """The ids of instances that carry every wanted (key, value) pair, a null value meaning any.

    One statement whatever the number of pairs: they arrive as one parameter (two arrays on PostgreSQL,
    one JSON array on SQLite) and are joined as a table. An EXISTS per pair made PostgreSQL's planning
    time grow steeply with the pairs (seconds at 100). A key has one value per instance, and the pairs are
    distinct, so an instance matches every pair exactly when it matches as many as there are."""
    t = notebook_tags.c
    pairs: Any
    key: Any
    value: Any
    if sqlite:
        pairs = func.json_each(bindparam("tag_pairs")).table_valued("value").alias("wanted")
        key, value = func.json_extract(pairs.c.value, "$[0]"), func.json_extract(pairs.c.value, "$[1]")
    else:
        pairs = (
            func.unnest(bindparam("tag_keys", type_=ARRAY(String)), bindparam("tag_values", type_=ARRAY(String)))
            .table_valued("key", "value")
            .render_derived("wanted")
        )
        key, value = pairs.c.key, pairs.c.value
    return (
        select(t.notebook_id)
        .select_from(notebook_tags)
        .join(pairs, and_(t.key == key, or_(value.is_(None), t.value == value)))
        .group_by(t.notebook_id)
        .having(func.count() == bindparam("tag_count", type_=Integer))
    )


def _params(q: NotebookQuery, fts: dict, like: dict, owners: list | None, sqlite: bool) -> dict:
    params: dict[str, Any] = {
        "project_id": q.project_id,
        "workspace_id": q.workspace_id,
        "feature": q.feature.value,
        "count_user": q.owner_id if q.owner_id is not None else ALL_USERS,
        "offset": q.offset,
        "limit": q.limit,
    }
    if q.owner_id is not None:
        params["owner_id"] = q.owner_id
    if owners is not None:
        params["owner_ids"] = owners
    if q.status is not None:
        params["status"] = q.status.value
    for name in EXACT:
        if getattr(q, name) is not None:
            params[f"x_{name}"] = getattr(q, name)
    if q.tags:
        params["tag_count"] = len(q.tags)
        if sqlite:
            params["tag_pairs"] = orjson.dumps([[t.key, t.value] for t in q.tags]).decode()
        else:
            params["tag_keys"] = [t.key for t in q.tags]
            params["tag_values"] = [t.value for t in q.tags]
    if fts and sqlite:
        params["fts_query"] = " AND ".join(fts.values())
    elif fts:
        params.update({f"like_{c}": like_pattern(v) for c, v in fts.items()})
    params.update({f"like_{c}": like_pattern(v) for c, v in like.items()})
    return params


def statements(q: NotebookQuery, conn: Connection, owners: list | None = None) -> tuple:
    """(total statement, page statement, page statement walking backwards, plain COUNT statement, page
    statement with the total in each row or None, parameters), built once per shape. ``owners``: the users
    the user name filter resolved to."""
    sqlite = conn.dialect.name == "sqlite"
    fts, like = _split_fuzzy(q, trigram=True, by_owner=owners is not None)
    if sqlite:
        fts, like = plan_fuzzy(conn, q, fts, like, owners)
    key = (sqlite, *_shape(q, fts, like, owners))
    built = _cache.get(key)
    if built is None:
        if len(_cache) > 2048:
            _cache.clear()
        built = _cache[key] = _build(q, fts, like, owners, sqlite)
    return (*built, _params(q, fts, like, owners, sqlite))


_OWNERS_BY_TRIGRAM = text("SELECT user_id FROM users_fts WHERE users_fts MATCH :q LIMIT :n")  # SQLite
_OWNERS_BY_LIKE = (
    select(users.c.id).where(users.c.name.ilike(bindparam("pattern"), escape="\\")).limit(bindparam("n", type_=None))
)


def owners_named(conn: Connection, text_: str, sqlite: bool) -> list[str] | None:
    """The ids of the users whose name contains ``text_`` (any case), or None when more than
    ``OWNERS_BY_NAME_MAX`` do. An instance's user name is its owner's, copied at creation, and users
    are never renamed: so these users' instances are exactly the instances matching the filter."""
    if sqlite and len(text_) >= TRIGRAM_MIN:
        result = conn.execute(_OWNERS_BY_TRIGRAM, {"q": _fts_query({"name": text_}), "n": OWNERS_BY_NAME_MAX + 1})
    else:
        result = conn.execute(_OWNERS_BY_LIKE, {"pattern": like_pattern(text_), "n": OWNERS_BY_NAME_MAX + 1})
    ids = list(result.scalars())
    return ids if len(ids) <= OWNERS_BY_NAME_MAX else None


def page(conn: Connection, q: NotebookQuery) -> tuple[list, int]:
    """The rows of one page and the exact total of rows matching the filters."""
    sqlite = conn.dialect.name == "sqlite"
    owners = owners_named(conn, q.username, sqlite) if q.username else None
    if owners is not None and q.owner_id is not None:
        owners = [o for o in owners if o == q.owner_id]
    if owners == []:
        return [], 0
    total_stmt, forward, backward, _plain, counted, params = statements(q, conn, owners)
    if counted is not None:
        rows = conn.execute(counted, params).mappings().all()
        if rows:
            return list(rows), int(rows[0][TOTAL])
        # An empty page: no row carried the total (nothing matches, or the offset lies past the end).
    total = int(conn.execute(total_stmt, params).scalar_one())
    if total == 0 or q.offset >= total:
        return [], total
    # An offset walks the index one entry at a time, so a page past the middle is found from the other
    # end: the exact total (same snapshot) says where that is. The last page costs what the first does.
    size = min(q.limit, total - q.offset)
    from_end = total - q.offset - size
    if from_end < q.offset:
        rows = conn.execute(backward, {**params, "offset": from_end, "limit": size}).mappings().all()
        return list(reversed(rows)), total
    return list(conn.execute(forward, params).mappings().all()), total


def count_matching(conn: Connection, q: NotebookQuery) -> int:
    """A plain ``COUNT(*)`` with the query's filters (no counters): what ``total`` must equal."""
    _total, _forward, _backward, plain_count, _counted, params = statements(q, conn)
    return int(conn.execute(plain_count, params).scalar_one())
