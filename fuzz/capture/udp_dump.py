# Records the datagrams a real client sends to 127.0.0.1:PORT (no answer).
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", int(sys.argv[1])))
for k in range(int(sys.argv[3])):
    d, _ = s.recvfrom(65535); open(f"{sys.argv[2]}-{k}", "wb").write(d)
