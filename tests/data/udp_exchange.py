import socket, sys
port = int(sys.argv[1])
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", port))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("127.0.0.1", 0))
b.sendto(b"hello udp\n", ("127.0.0.1", port)); d, addr = a.recvfrom(100)
a.sendto(b"got it\n", addr); b.recvfrom(100)
