"""Webhook receiver for tests: records every POST as one JSON line.

Usage: python3 hook-receiver.py PORT FILE  (listens on 127.0.0.1 only)
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server API)
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length).decode('utf-8', 'replace')
        with open(sys.argv[2], 'a', encoding='utf-8') as out:
            out.write(json.dumps({'path': self.path, 'body': body}) + '\n')
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args):
        pass


HTTPServer(('127.0.0.1', int(sys.argv[1])), Handler).serve_forever()
