import socket,time
s=socket.create_connection(("127.0.0.1",28555))
v=b"m"*500000
s.sendall(b"set mid 0 0 %d\r\n%s\r\n"%(len(v),v)); s.recv(100)
for i in range(150):
    s.sendall(b"get mid\r\n"); d=b""
    while not d.endswith(b"END\r\n"): d+=s.recv(1<<20)
