#!/usr/bin/env python3
"""What the benchmarks put between a client and a server, so bytes on the wire are counted by a third
party, never by the tool being measured.

  wire.py proxy LISTEN_PORT UPSTREAM_HOST:PORT STATS_FILE
      TCP proxy; STATS_FILE always holds "<bytes to clients> <bytes to upstream>" (rewritten 10x a second
      and when a connection closes).
  wire.py serve LISTEN_PORT DIRECTORY
      Static files with HTTP Range support, single and multiple ranges (multipart/byteranges), as zsync
      needs; Python's http.server has none.
"""
import asyncio
import http.server
import os
import re
import socketserver
import sys


def proxy(listen_port, upstream, stats_file):
    host, port = upstream.rsplit(":", 1)
    totals = {"down": 0, "up": 0}

    def write_stats():
        tmp = stats_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{totals['down']} {totals['up']}\n")
        os.replace(tmp, stats_file)

    async def pump(reader, writer, key):
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                totals[key] += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, up_writer, "up"), pump(up_reader, client_writer, "down"))
        write_stats()

    async def ticker():
        while True:
            write_stats()
            await asyncio.sleep(0.1)

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", int(listen_port))
        asyncio.create_task(ticker())
        async with server:
            await server.serve_forever()

    write_stats()
    asyncio.run(main())


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms per request.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        header = self.headers.get("Range")
        if not header:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    self.wfile.write(chunk)
            return
        ranges = []
        for part in re.sub(r"^bytes=", "", header.strip()).split(","):
            a, _, b = part.strip().partition("-")
            start, end = (size - int(b), size - 1) if a == "" else (int(a), min(int(b), size - 1) if b else size - 1)
            if start > end or start >= size:
                self.send_error(416)
                return
            ranges.append((start, end))
        with open(path, "rb") as f:
            if len(ranges) == 1:
                start, end = ranges[0]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                f.seek(start)
                self.wfile.write(f.read(end - start + 1))
                return
            boundary = "msdfleetbench"
            parts = []
            for start, end in ranges:
                f.seek(start)
                head = f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {start}-{end}/{size}\r\n\r\n".encode()
                parts.append(head + f.read(end - start + 1))
            body = b"".join(parts) + f"\r\n--{boundary}--\r\n".encode()
            self.send_response(206)
            self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


def serve(listen_port, directory):
    os.chdir(directory)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server(("127.0.0.1", int(listen_port)), RangeHandler).serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "proxy":
        proxy(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
