# A loopback TCP proxy that records both directions of each connection.
import socket, sys, threading
lport, dport, out, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", lport)); srv.listen(4)
def pump(a, b, path):
    with open(path, "wb") as f:
        while True:
            try: d = a.recv(65536)
            except Exception: break
            if not d: break
            f.write(d); f.flush()
            try: b.sendall(d)
            except Exception: break
    try: b.shutdown(socket.SHUT_WR)
    except Exception: pass
ts = []
for k in range(n):
    c, _ = srv.accept(); u = socket.create_connection(("127.0.0.1", dport))
    for a, b, d in ((c, u, "up"), (u, c, "down")):
        t = threading.Thread(target=pump, args=(a, b, f"{out}-{k}-{d}")); t.start(); ts.append(t)
for t in ts: t.join()
