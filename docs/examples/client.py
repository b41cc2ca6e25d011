#!/usr/bin/env python3
"""Read a tensor and a value through warm serve, standard library only.

    python3 client.py SOCKET MODEL TENSOR
"""
import http.client, json, socket, sys, urllib.parse

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("modelcache")
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)

def call(conn, method, url, body=None):
    conn.request(method, url, body=body)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status >= 300:  # {"error": ..., "sentinel": "ErrNotFound"}
        raise RuntimeError(json.loads(data)["sentinel"] or json.loads(data)["error"])
    return resp, data

sock, model, name = sys.argv[1:4]
conn = UnixConnection(sock)
_, listing = call(conn, "GET", "/v1/models" + urllib.parse.quote(model))
print(len(json.loads(listing)["tensors"]), "tensors")
q = urllib.parse.urlencode({"path": model, "name": name})
resp, data = call(conn, "GET", "/v1/tensor?" + q)
print(name, resp.getheader("X-Dtype"), resp.getheader("X-Shape"), len(data), "bytes from", resp.getheader("X-Served-By"))
call(conn, "PUT", "/v1/values/py/greeting", b"hello")
print(call(conn, "GET", "/v1/values/py/greeting")[1].decode())
try:
    call(conn, "GET", "/v1/values/py/absent")
except RuntimeError as e:
    print("absent:", e)
