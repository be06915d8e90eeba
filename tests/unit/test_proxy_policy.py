"""What the notebook proxy lets through: cookies that stay with their instance, writes only from its own pages."""

from __future__ import annotations

from nbfleet.api.proxy_policy import filter_set_cookie, foreign_origin
from nbfleet.services.addresses import NotebookAddresses

HOST = "3f1c2d4e-aaaa-bbbb-cccc-000000000001.nb.localhost:8080"
OWN = f"http://{HOST}"


def headers(**values):
    return {k.replace("_", "-"): v for k, v in values.items()}


def test_reads_and_scripts_pass_writes_and_websockets_only_from_the_instances_own_pages():
    assert foreign_origin("GET", headers(host=HOST, origin="http://evil.nb.localhost:8080")) is None
    assert foreign_origin("POST", headers(host=HOST)) is None  # curl, the SDK, scripts
    assert foreign_origin("POST", headers(host=HOST, origin=OWN, sec_fetch_site="same-origin")) is None
    assert foreign_origin(None, headers(host=HOST, origin=OWN), websocket=True) is None
    sibling = "http://0badc0de-aaaa-bbbb-cccc-000000000002.nb.localhost:8080"
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert foreign_origin(method, headers(host=HOST, origin=sibling))
    assert foreign_origin(None, headers(host=HOST, origin=sibling), websocket=True)
    assert foreign_origin("POST", headers(host=HOST, origin="null"))  # sandboxed frames, data: URLs
    assert foreign_origin("POST", headers(host=HOST, sec_fetch_site="same-site"))
    assert foreign_origin("POST", headers(host=HOST, sec_fetch_site="cross-site"))
    assert foreign_origin("POST", headers(host=HOST, origin="http://127.0.0.1:8080"))  # the console's origin


def test_cookies_stay_with_their_instance():
    assert filter_set_cookie("_xsrf=abc; Path=/", None) == "_xsrf=abc; Path=/"
    # A cookie for the whole notebook domain would reach every sibling instance: made host-only.
    assert filter_set_cookie("login=x; Domain=nb.localhost; Path=/; HttpOnly", None) == "login=x; Path=/; HttpOnly"
    assert filter_set_cookie("login=x; domain=.localhost", None) == "login=x"
    # nbfleet's own names are never set by a notebook.
    assert filter_set_cookie("nbfleet_session=stolen; Path=/console", None) is None
    assert filter_set_cookie("NBFLEET_flash=x", None) is None


def test_path_routing_keeps_cookies_below_the_instances_prefix():
    prefix = "/notebooks/abc/"
    assert filter_set_cookie("_xsrf=1; Path=/notebooks/abc/", prefix) == "_xsrf=1; Path=/notebooks/abc/"
    assert filter_set_cookie("_xsrf=1; Path=/notebooks/abc/lab", prefix) == "_xsrf=1; Path=/notebooks/abc/lab"
    assert filter_set_cookie("_xsrf=1; Path=/notebooks/abc", prefix) == "_xsrf=1; Path=/notebooks/abc"
    for outside in ("/", "/console", "/notebooks/abcd/", "/notebooks/"):
        assert filter_set_cookie(f"x=1; Path={outside}", prefix) is None, outside
    assert filter_set_cookie("x=1", prefix) == "x=1; Path=/notebooks/abc/"


def test_instance_addresses_and_the_hosts_that_name_them():
    host = NotebookAddresses("host", "http://127.0.0.1:8080", "nb.localhost")
    assert host.base("abc") == "http://abc.nb.localhost:8080"
    assert host.notebook_of_host("abc.nb.localhost:8080") == "abc"
    assert host.notebook_of_host("ABC.NB.LOCALHOST") == "abc"
    for other in ("127.0.0.1:8080", "abc.nb.localhost.evil.com", "localhost", None, ""):
        assert host.notebook_of_host(other) is None, other
    # Under the notebook domain but naming no instance: nbfleet's own pages are not served there either.
    for nameless in ("nb.localhost:8080", "a.b.nb.localhost", "NB.LOCALHOST."):
        assert host.notebook_of_host(nameless) == "", nameless
    tls = NotebookAddresses("host", "https://nbfleet.example.com", "nb.example.net")
    assert tls.base("abc") == "https://abc.nb.example.net"
    path = NotebookAddresses("path", "http://127.0.0.1:8080", "nb.localhost")
    assert path.base("abc") == "http://127.0.0.1:8080/notebooks/abc"
    assert path.notebook_of_host("abc.nb.localhost:8080") is None
