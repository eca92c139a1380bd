# Records each request head a real HTTP client sends, answers 204.
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(8)
for k in range(int(sys.argv[3])):
    c, _ = srv.accept(); buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d: break
        buf += d
    open(f"{sys.argv[2]}-{k}", "wb").write(buf)
    c.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"); c.close()
