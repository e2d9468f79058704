#!/usr/bin/env python3
"""An independent client of tern's SSE transport, written with httpx and httpx-sse (PyPI), not
with tern's SDK: `crates/tern/tests/transports.rs` runs it to check that the transport is the
documented one (docs/PROTOCOL.md, "HTTP transports"), not merely what tern's own client expects.

usage: sse-client.py HTTP_URL TOKEN PEER_USER_ID

It opens a session with the `auth` frame, reads the event stream, sends "hello from python" to the
peer and waits for its `sent`, then for one message from the peer, which it acknowledges. Then it
drops the stream and opens it again with `Last-Event-ID` set to the event before that message:
the server must send that message again (it was never acknowledged by a downstream request) and
nothing older. It prints one JSON object per step on stdout, and ends the session."""

import json
import sys

import httpx
from httpx_sse import connect_sse


def events(client, url, headers):
    """The stream's events as (event id, frame)."""
    with connect_sse(client, "GET", url, headers=headers) as source:
        if source.response.status_code != 200:
            raise SystemExit(f"stream answered {source.response.status_code}")
        for sse in source.iter_sse():
            if sse.data:
                yield int(sse.id), json.loads(sse.data)


def main():
    base, token, peer = sys.argv[1].rstrip("/"), sys.argv[2], int(sys.argv[3])
    auth = {"Authorization": f"Bearer {token}"}
    say = lambda **kv: print(json.dumps(kv), flush=True)
    with httpx.Client(timeout=httpx.Timeout(10.0, read=20.0)) as client:
        opened = client.post(f"{base}/v1/sse", json={"op": "auth", "token": token, "resume": {}})
        opened.raise_for_status()
        session = opened.json()["session"]
        stream = upstream = f"{base}/v1/sse/{session}"

        def post(*frames):
            body = "".join(json.dumps(f) + "\n" for f in frames)
            r = client.post(upstream, content=body, headers={**auth, "Content-Type": "application/x-ndjson"})
            if r.status_code != 204:
                raise SystemExit(f"POST answered {r.status_code}: {r.text}")

        before_msg = None
        last_id = 0
        for event_id, frame in events(client, stream, auth):
            last_id = event_id
            op = frame["op"]
            if op == "auth_ok":
                say(step="auth_ok", event_id=event_id)
                send = {"op": "send", "id": 1, "to": peer, "client_msg_id": "py-1",
                        "body": {"type": "text", "text": "hello from python"}}
                post(send)
            elif op == "sent":
                say(step="sent", seq=frame["seq"], event_id=event_id)
            elif op == "msg" and frame["from"] == peer:
                say(step="msg", text=frame["body"]["text"], event_id=event_id, msg_id=str(frame["msg_id"]))
                post({"op": "ack", "msg_ids": [frame["msg_id"]]})
                before_msg = event_id - 1
                break
            elif op == "close":
                raise SystemExit(f"closed: {frame}")
        if before_msg is None:
            raise SystemExit("the stream ended before the peer's message")

        # Resume after the event before the message: it must come again, and nothing older.
        again = []
        for event_id, frame in events(client, stream, {**auth, "Last-Event-ID": str(before_msg)}):
            again.append((event_id, frame["op"]))
            if event_id >= last_id:
                break
        say(step="resumed", events=[[i, op] for i, op in again])
        r = client.delete(stream, headers=auth)
        say(step="closed", status=r.status_code)


if __name__ == "__main__":
    main()
