#!/usr/bin/env python3
"""An independent tus client of tern's uploads: tuspy (PyPI), not tern's SDK.
`crates/tern/tests/files.rs` runs it to check that `/v1/files/` speaks tus 1.0 as existing
clients expect.

usage: tus-client.py HTTP_URL TOKEN FILE

1. tuspy creates the upload and sends its first two chunks, each with a SHA-256 Upload-Checksum.
2. The connection breaks mid-request: a PATCH whose body stops half-way (no checksum, so the
   server keeps what arrived).
3. A new tuspy uploader for the same URL asks where the upload stands (HEAD) and finishes it.
4. The file is downloaded and its SHA-256 compared with the local file's.
5. A PATCH with a wrong checksum on a second upload is refused with 460 and keeps nothing.

Prints one JSON object per step on stdout."""

import hashlib
import json
import socket
import time
import sys
from urllib.parse import urlparse

import requests
from tusclient import client
from tusclient.uploader import Uploader

url, token, path = sys.argv[1], sys.argv[2], sys.argv[3]
auth = {"Authorization": f"Bearer {token}"}
data = open(path, "rb").read()
chunk = len(data) // 8


class Sha256Uploader(Uploader):
    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


def step(name, **fields):
    print(json.dumps({"step": name, **fields}), flush=True)


tus = client.TusClient(f"{url}/v1/files/", headers=auth)
first = Sha256Uploader(file_path=path, client=tus, chunk_size=chunk, upload_checksum=True,
                       metadata={"filename": "tuspy.bin"})
first.upload_chunk()
first.upload_chunk()
step("chunks", url=first.url, offset=first.offset)

# A PATCH that breaks off: headers promise `half` more bytes, a third of them are sent, then the
# socket closes.
half = chunk * 2
sent = half // 3
target = urlparse(first.url)
sock = socket.create_connection((target.hostname, target.port))
head = (f"PATCH {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\nTus-Resumable: 1.0.0\r\n"
        f"Authorization: Bearer {token}\r\nUpload-Offset: {first.offset}\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {half}\r\n\r\n")
sock.sendall(head.encode() + data[first.offset:first.offset + sent])
sock.close()
# The server keeps what arrived once it notices the socket closed: wait for that (a real client
# retries after a delay too) — at most 10 s.
for _ in range(100):
    stands = requests.head(first.url, headers={**auth, "Tus-Resumable": "1.0.0"})
    if int(stands.headers["upload-offset"]) > first.offset:
        break
    time.sleep(0.1)

# tuspy resumes from what the server confirmed.
resumed = Sha256Uploader(file_path=path, client=tus, url=first.url, chunk_size=chunk, upload_checksum=True)
step("resumed", offset=resumed.offset)
resumed.upload()
step("done", offset=resumed.offset)

got = requests.get(first.url, headers=auth)
step("downloaded", status=got.status_code, sha256=hashlib.sha256(got.content).hexdigest(),
     local=hashlib.sha256(data).hexdigest())

second = Sha256Uploader(file_path=path, client=tus, chunk_size=chunk, upload_checksum=True)
second.set_url(second.create_url())
wrong = requests.patch(second.url, data=data[:chunk], headers={
    **auth, "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
    "Content-Type": "application/offset+octet-stream",
    "Upload-Checksum": "sha256 " + __import__("base64").b64encode(hashlib.sha256(b"not these").digest()).decode()})
after = requests.head(second.url, headers={**auth, "Tus-Resumable": "1.0.0"})
step("wrong_checksum", status=wrong.status_code, offset=int(after.headers["upload-offset"]))
