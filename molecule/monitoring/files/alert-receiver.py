"""Webhook receiver for the monitoring scenario: records every POST as one JSON
line with the time it arrived, and answers like Telegram's Bot API for /bot*
paths (Alertmanager's Telegram receiver reads the answer).

Usage: python3 alert-receiver.py PORT FILE  (listens on 127.0.0.1 only)
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TELEGRAM_ANSWER = {'ok': True, 'result': {'message_id': 1, 'date': 0, 'chat': {'id': 42, 'type': 'private'}}}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server API)
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length).decode('utf-8', 'replace')
        with open(sys.argv[2], 'a', encoding='utf-8') as out:
            out.write(json.dumps({'path': self.path, 'received': time.time(), 'body': body}) + '\n')
        answer = TELEGRAM_ANSWER if self.path.startswith('/bot') else {'ok': True}
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(json.dumps(answer).encode())

    def log_message(self, *args):
        pass


HTTPServer(('127.0.0.1', int(sys.argv[1])), Handler).serve_forever()
