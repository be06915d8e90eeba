"""nbfleet's own files are private to its user, and a database password need not appear in ``ps``."""

from __future__ import annotations

import contextlib
import os
import stat

from ..procs import ServeProcess, SignedClient

OWN_FILES = ("secret.key", "credentials.json")
DATABASE_FILES = ("nbfleet.db", "nbfleet.db-wal", "nbfleet.db-shm")


@contextlib.contextmanager
def umask(value: int):
    """The usual umask of a login shell (022: files readable by everyone) for processes started here."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def modes(data_dir, names) -> dict[str, int]:
    return {name: stat.S_IMODE((data_dir / name).stat().st_mode) for name in names if (data_dir / name).exists()}


def test_serve_keeps_its_files_to_its_own_user(tmp_path):
    data_dir = tmp_path / "data"
    with umask(0o022):
        server = ServeProcess(data_dir, runtime="simulated").start()
    try:
        client = SignedClient(server.endpoint, server.admin_creds())
        client.create("private-files")  # a write: the WAL has content
        names = OWN_FILES + (DATABASE_FILES if server.database_url is None else ())
        found = modes(data_dir, names)
        assert set(OWN_FILES) <= set(found)
        if server.database_url is None:
            assert {"nbfleet.db", "nbfleet.db-wal"} <= set(found)
        assert found == {name: 0o600 for name in found}, {k: oct(v) for k, v in found.items()}
        client.close()
    finally:
        server.terminate()


def test_files_left_readable_by_an_older_version_are_made_private_at_start(tmp_path):
    data_dir = tmp_path / "data"
    server = ServeProcess(data_dir, runtime="simulated").start()
    server.terminate()
    present = [name for name in OWN_FILES + DATABASE_FILES if (data_dir / name).exists()]
    for name in present:
        os.chmod(data_dir / name, 0o644)
    server = ServeProcess(data_dir, runtime="simulated", port=server.port).start()
    try:
        found = modes(data_dir, present)
        assert found == {name: 0o600 for name in found}, {k: oct(v) for k, v in found.items()}
    finally:
        server.terminate()


def test_database_url_from_a_file(cli, tmp_path):
    url_file = tmp_path / "database-url"
    url_file.write_text(f"sqlite:///{tmp_path / 'elsewhere.db'}\n")
    made = cli.run(
        "admin",
        "create-project",
        "--name",
        "from-file",
        "--json",
        "--data-dir",
        str(tmp_path / "d"),
        "--database-url-file",
        str(url_file),
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "elsewhere.db").exists() and not (tmp_path / "d" / "nbfleet.db").exists()
    listed = cli.run(
        "admin", "list-users", "--data-dir", str(tmp_path / "d"), env={"NBFLEET_DATABASE_URL_FILE": str(url_file)}
    )
    assert listed.returncode == 0 and "warning" not in listed.stderr
    both = cli.run(
        "admin",
        "list-users",
        "--data-dir",
        str(tmp_path / "d"),
        "--database-url-file",
        str(url_file),
        "--database-url",
        "sqlite:///x.db",
    )
    assert both.returncode == 1 and "not both" in both.stderr
    missing = cli.run(
        "admin", "list-users", "--data-dir", str(tmp_path / "d"), "--database-url-file", str(tmp_path / "nope")
    )
    assert missing.returncode == 1 and "cannot read the database URL file" in missing.stderr


def test_a_password_on_the_command_line_is_warned_about(cli, tmp_path):
    url = "postgresql+psycopg://nbfleet:hunter2secret@127.0.0.1:1/nbfleet"  # nothing listens on port 1
    done = cli.run("admin", "list-users", "--data-dir", str(tmp_path / "d"), "--database-url", url)
    assert "warning" in done.stderr and "visible to every local user" in done.stderr
    assert "NBFLEET_DATABASE_URL" in done.stderr and "--database-url-file" in done.stderr
    quiet = cli.run("admin", "list-users", "--data-dir", str(tmp_path / "d"), env={"NBFLEET_DATABASE_URL": url})
    assert "visible to every local user" not in quiet.stderr
    no_password = cli.run(
        "admin", "list-users", "--data-dir", str(tmp_path / "d"), "--database-url", f"sqlite:///{tmp_path / 'plain.db'}"
    )
    assert no_password.returncode == 0 and "warning" not in no_password.stderr
