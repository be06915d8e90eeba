"""Talk to a Jupyter server the way JupyterLab does: REST for kernels, a websocket for code."""

from __future__ import annotations

import json
import time
import uuid

from . import notebook_http


def start_kernel(base: str, token: str) -> str:
    response = notebook_http.post(
        f"{base}/api/kernels", json={"name": "python3"}, headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _channels_url(base: str, token: str, kernel_id: str) -> str:
    return base.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels?token={token}"


def _execute_request(code: str) -> tuple[str, dict]:
    msg_id = uuid.uuid4().hex
    return msg_id, {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "buffers": [],
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
    }


def execute(base: str, token: str, kernel_id: str, code: str, timeout: float = 60) -> str:
    """Run ``code`` in the kernel over its websocket; return the text/plain result or stream output."""
    ws_url = _channels_url(base, token, kernel_id)
    msg_id, message = _execute_request(code)
    deadline = time.monotonic() + timeout
    output = []
    with notebook_http.websocket(ws_url, open_timeout=30) as ws:
        ws.send(json.dumps(message))
        while time.monotonic() < deadline:
            reply = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = reply["msg_type"]
            if kind == "execute_result":
                return reply["content"]["data"]["text/plain"]
            if kind == "stream":
                output.append(reply["content"]["text"])
            if kind == "error":
                raise AssertionError(f"kernel error: {reply['content']['ename']}: {reply['content']['evalue']}")
            if kind == "status" and reply["content"]["execution_state"] == "idle":
                return "".join(output)
    raise AssertionError("no reply from the kernel in time")


def send_without_waiting(base: str, token: str, kernel_id: str, code: str) -> None:
    """Submit code and return as soon as the kernel reports busy (for long-running cells)."""
    ws_url = _channels_url(base, token, kernel_id)
    msg_id, message = _execute_request(code)
    with notebook_http.websocket(ws_url, open_timeout=30) as ws:
        ws.send(json.dumps(message))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = json.loads(ws.recv(timeout=30))
            if (
                reply.get("parent_header", {}).get("msg_id") == msg_id
                and reply["msg_type"] == "status"
                and reply["content"]["execution_state"] == "busy"
            ):
                return
    raise AssertionError("kernel never became busy")
