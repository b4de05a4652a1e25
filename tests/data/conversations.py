# Crafted loopback conversations for the trace fixtures.
import socket, sys, time, threading, struct
kind = sys.argv[1]; fam = socket.AF_INET6 if kind == "ipv6" else socket.AF_INET
host = "::1" if fam == socket.AF_INET6 else "127.0.0.1"
port = int(sys.argv[2])
srv = socket.socket(fam, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port)); srv.listen(1)
def server():
    c, _ = srv.accept()
    if kind in ("normal", "ipv6"):
        d = c.recv(100); c.sendall(b"reply: " + d)
        # wait for client's FIN, then pause so the ACK goes out alone (four segments)
        while c.recv(100): pass
        time.sleep(0.3); c.close()
    elif kind == "three":
        d = c.recv(100); c.sendall(b"ok\n")
        while c.recv(100): pass
        c.close()
    elif kind == "rst":
        d = c.recv(100); c.sendall(b"bye\n")
        time.sleep(0.1)
        c.close()
t = threading.Thread(target=server); t.start()
cl = socket.socket(fam, socket.SOCK_STREAM)
cl.connect((host, port))
if kind in ("normal", "ipv6"):
    cl.sendall(b"hello\n"); cl.recv(100); cl.shutdown(socket.SHUT_WR)
    while cl.recv(100): pass
    cl.close()
elif kind == "three":
    cl.sendall(b"hi\n"); cl.recv(100); cl.shutdown(socket.SHUT_WR)
    while cl.recv(100): pass
    cl.close()
elif kind == "rst":
    cl.sendall(b"data\n"); time.sleep(0.05)
    # SO_LINGER 0: close() sends RST instead of FIN
    cl.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); cl.close()
t.join(); srv.close()
