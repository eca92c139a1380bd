# A tiny Minecraft Java "server" on 127.0.0.1 that records every byte a
# real client sends: answers a status ping (response + pong) or a login
# (Disconnect), so the client sends all it would. One file per connection.
import json, socket, sys

def varint(b, i):
    v = s = 0
    while True:
        x = b[i]; i += 1
        v |= (x & 0x7f) << s; s += 7
        if not x & 0x80:
            return v, i

def wvarint(v):
    out = bytearray()
    v &= 0xffffffff
    while True:
        if v < 0x80:
            out.append(v); return bytes(out)
        out.append((v & 0x7f) | 0x80); v >>= 7

def frame(pid, body):
    inner = wvarint(pid) + body
    return wvarint(len(inner)) + inner

def string(s):
    b = s.encode(); return wvarint(len(b)) + b

class Conn:
    def __init__(self, c):
        self.c, self.buf, self.pos = c, bytearray(), 0
    def packet(self):
        while True:
            try:
                n, i = varint(self.buf, self.pos)
                if len(self.buf) >= i + n:
                    pid, j = varint(self.buf, i)
                    body = bytes(self.buf[j:i + n]); self.pos = i + n
                    return pid, body
            except IndexError:
                pass
            d = self.c.recv(4096)
            if not d:
                raise EOFError
            self.buf += d

port, out = int(sys.argv[1]), sys.argv[2]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(8)
print("ready", flush=True)
k = 0
while True:
    c, _ = srv.accept(); c.settimeout(5); conn = Conn(c)
    try:
        pid, body = conn.packet()
        nxt = body[-1]
        if nxt == 1:
            conn.packet()  # status request
            st = {"version": {"name": "1.16.5", "protocol": 754}, "players": {"max": 10, "online": 0}, "description": {"text": "dump"}}
            c.sendall(frame(0, string(json.dumps(st))))
            _, payload = conn.packet()  # ping
            c.sendall(frame(1, payload))
        else:
            conn.packet()  # login start
            c.sendall(frame(0, string(json.dumps({"text": "dump"}))))
        try:
            while True:
                d = c.recv(4096)
                if not d: break
                conn.buf += d
        except Exception:
            pass
    except Exception as e:
        print("conn error", e, file=sys.stderr)
    open(f"{out}-{k}", "wb").write(bytes(conn.buf)); k += 1
    c.close()
